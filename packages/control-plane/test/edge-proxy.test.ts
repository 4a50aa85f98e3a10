// The edge proxy on the API's own port, end to end: real HTTP to the control plane, a real host
// agent and gVisor sandboxes. envd through host-name and header routing, Connect unary and server
// streams, an HTTP and WebSocket server started inside the sandbox, and every refusal (none of
// which reaches the sandbox).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import http, { type IncomingHttpHeaders } from "node:http";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { WebSocket } from "ws";
import { portTicket } from "../src/proxy/port-links.js";
import { startApi, type ApiTeam, type ApiUnderTest } from "./api-harness.js";
import { connectEnvelope, skipAgent, startProcessRequest, TEST_TEMPLATE, waitFor } from "./orchestration-harness.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const AGENT = { pool: "10.250.8.0/24", table: "wrenn_hka_edge" };
const ENVD = 49983;
/** The port of the test server started inside the sandbox (HTTP echo + WebSocket echo). */
const ECHO_PORT = 9000;

// Answers HTTP with what it received (/seen with every path it was asked for, /stats with the
// connections made to it and its own address), and echoes WebSocket text frames as `echo:<text>`.
// /close-reused closes a connection it arrives on unanswered unless it is the connection's first
// request (an idle timeout running out just as the proxy reuses it); /drop always does, after
// reading the body. Runs on the Node that ships in /opt/wrenn.
const ECHO_SERVER = String.raw`
const http = require("http"), crypto = require("crypto");
const seen = [];
const stats = { connections: 0, closedUnanswered: 0, address: "" };
const requestsOn = new WeakMap();
const server = http.createServer((req, res) => {
  const n = (requestsOn.get(req.socket) || 0) + 1;
  requestsOn.set(req.socket, n);
  if (req.url !== "/seen" && req.url !== "/stats") seen.push(req.url);
  req.resume();
  req.on("end", () => {
    if (req.url === "/half") {
      res.write("the first half;"); // chunked: only the final chunk says the answer is whole
      setTimeout(() => req.socket.destroy(), 50);
      return;
    }
    if (req.url === "/drop" || (req.url === "/close-reused" && n > 1)) {
      stats.closedUnanswered++;
      req.socket.destroy();
      return;
    }
    stats.address = req.socket.localAddress;
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify(req.url === "/seen" ? seen : req.url === "/stats" ? stats : { url: req.url, headers: req.headers }));
  });
});
server.on("connection", () => stats.connections++);
server.on("upgrade", (req, socket) => {
  seen.push("ws " + req.url);
  const accept = crypto.createHash("sha1").update(req.headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
  socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + "\r\n\r\n");
  let buf = Buffer.alloc(0);
  socket.on("data", (data) => {
    buf = Buffer.concat([buf, data]);
    for (;;) {
      if (buf.length < 2) return;
      const op = buf[0] & 15;
      let len = buf[1] & 127, off = 2;
      if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
      const masked = (buf[1] & 128) !== 0;
      if (buf.length < off + (masked ? 4 : 0) + len) return;
      const mask = masked ? buf.subarray(off, off + 4) : null;
      if (masked) off += 4;
      const payload = Buffer.from(buf.subarray(off, off + len));
      if (mask) for (let i = 0; i < len; i++) payload[i] ^= mask[i & 3];
      buf = buf.subarray(off + len);
      if (op === 8) { socket.end(Buffer.from([0x88, 0])); return; }
      const reply = Buffer.from("echo:" + payload.toString());
      const head = reply.length < 126 ? Buffer.from([0x81, reply.length]) : Buffer.from([0x81, 126, reply.length >> 8, reply.length & 255]);
      socket.write(Buffer.concat([head, reply]));
    }
  });
  socket.on("error", () => {});
});
server.listen(${ECHO_PORT});
`;
const NODE_IN_SANDBOX = "/opt/wrenn/lib/ld-linux-x86-64.so.2 --library-path /opt/wrenn/lib /opt/wrenn/lib/node";

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
}

describe("the edge proxy on the API's port", { skip: skipAgent }, () => {
  let stack: ApiUnderTest;
  let port: number;
  /** A running sandbox of team A, its envd access token and its traffic access token. */
  let sandboxId: string;
  let accessToken: string;
  let trafficToken: string;

  /** One request to the API's port, with a Host of our choosing (fetch will not set one). */
  function send(options: { method?: string; path?: string; headers?: Record<string, string>; body?: string | Buffer }): Promise<Reply> {
    const { method = "GET", path = "/", headers = {}, body } = options;
    return new Promise((resolve, reject) => {
      const req = http.request({ host: "127.0.0.1", port, method, path, headers, agent: false }, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => (text += chunk));
        res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, text }));
      });
      req.on("error", reject);
      req.end(body);
    });
  }

  const byHost = (id: string, sandboxPort: number | string) => ({ host: `${sandboxPort}-${id}.localhost:${port}` });
  const byHeaders = (id: string, sandboxPort: number | string) => ({ "e2b-sandbox-id": id, "e2b-sandbox-port": String(sandboxPort) });
  const keyOf = (team: ApiTeam) => ({ "x-api-key": team.key });

  async function createSandbox(team: ApiTeam): Promise<{ id: string; envdAccessToken: string; trafficAccessToken: string }> {
    const response = await stack.call(team, "POST", "/v1/sandboxes", { template: TEST_TEMPLATE, timeoutSec: 0 });
    const created = (await response.json()) as Json;
    assert.equal(response.status, 201, JSON.stringify(created));
    return { id: created.id, envdAccessToken: created.envdAccessToken, trafficAccessToken: created.trafficAccessToken };
  }

  /** Process.Start through the proxy; yields each stream message as it arrives, with its arrival time. */
  async function* startProcess(command: string, headers: Record<string, string>): AsyncGenerator<{ message: Json; at: number }> {
    const res = await startProcessRequest(port, headers, command);
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers["content-type"], "application/connect+json");
    let buffered = Buffer.alloc(0);
    try {
      for await (const chunk of res) {
        buffered = Buffer.concat([buffered, chunk as Buffer]);
        while (buffered.length >= 5 && buffered.length >= 5 + buffered.readUInt32BE(1)) {
          const length = buffered.readUInt32BE(1);
          const flags = buffered[0]!;
          const message = JSON.parse(buffered.subarray(5, 5 + length).toString()) as Json;
          buffered = buffered.subarray(5 + length);
          if (flags & 2) {
            assert.equal(message.error, undefined, JSON.stringify(message)); // end-of-stream: no error
            return;
          }
          yield { message, at: Date.now() };
        }
      }
    } finally {
      res.destroy();
    }
  }

  /** Runs a shell command in the sandbox through the proxy; its stdout. */
  async function sh(command: string): Promise<string> {
    let stdout = "";
    for await (const { message } of startProcess(command, { ...byHeaders(sandboxId, ENVD), "x-access-token": accessToken })) {
      const event = message.event ?? {};
      if (event.data?.stdout) stdout += Buffer.from(event.data.stdout, "base64").toString();
      if (event.end) assert.equal(event.end.exitCode ?? 0, 0, `${command}: ${JSON.stringify(event.end)}`);
    }
    return stdout;
  }

  /** The paths the in-sandbox echo server has been asked for. */
  async function seenBySandbox(): Promise<string[]> {
    const reply = await send({ path: "/seen", headers: { ...byHeaders(sandboxId, ECHO_PORT), ...keyOf(stack.teamA) } });
    assert.equal(reply.status, 200, reply.text);
    return JSON.parse(reply.text) as string[];
  }

  /** The in-sandbox echo server's counters. */
  async function echoStats(): Promise<{ connections: number; closedUnanswered: number; address: string }> {
    const reply = await send({ path: "/stats", headers: { ...byHeaders(sandboxId, ECHO_PORT), ...keyOf(stack.teamA) } });
    assert.equal(reply.status, 200, reply.text);
    const stats = JSON.parse(reply.text);
    return { ...stats, address: stats.address.replace(/^::ffff:/, "") }; // it listens on ::
  }

  /** This host's established TCP connections to `port` at `destination` (an address or a prefix): local and peer address:port. */
  function connectionsTo(destination: string, port: number): Array<{ local: string; peer: string }> {
    const prefix = destination.includes("/") ? destination : `${destination}/32`; // ss reads a bare address as host:port
    const out = execFileSync("ss", ["-Htn", "state", "established", "dst", prefix, "dport", "=", `:${port}`], { encoding: "utf8" });
    return out
      .split("\n")
      .filter((line) => line.trim() !== "")
      .map((line) => {
        const [, , local, peer] = line.trim().split(/\s+/);
        return { local: local!, peer: peer! };
      });
  }

  before(async () => {
    // Everything through the host's port proxy: this file tests that path (edge-direct.test.ts the direct one).
    stack = await startApi({ database: "pglite", agents: [AGENT], config: { edgeDirect: false } });
    port = Number(new URL(stack.url).port);
    ({ id: sandboxId, envdAccessToken: accessToken, trafficAccessToken: trafficToken } = await createSandbox(stack.teamA));
    // The echo server, uploaded through the proxy, started in the background inside the sandbox.
    const upload = await send({
      method: "POST",
      path: "/files?path=/tmp/echo.js",
      headers: { ...byHeaders(sandboxId, ENVD), "x-access-token": accessToken, "content-type": "application/octet-stream" },
      body: ECHO_SERVER,
    });
    assert.equal(upload.status, 200, upload.text);
    await sh(`(${NODE_IN_SANDBOX} /tmp/echo.js > /tmp/echo.log 2>&1 &)`);
    await waitFor("the echo server in the sandbox", async () => {
      const reply = await send({ path: "/ready", headers: { ...byHeaders(sandboxId, ECHO_PORT), ...keyOf(stack.teamA) } });
      return reply.status === 200;
    });
  });

  after(async () => {
    await stack?.close();
  });

  test("envd's /health answers through host-name routing and through E2B's headers", async () => {
    const viaHost = await send({ path: "/health", headers: { ...byHost(sandboxId, ENVD), "x-access-token": accessToken } });
    assert.equal(viaHost.status, 204, viaHost.text);
    const viaHeaders = await send({ path: "/health", headers: { ...byHeaders(sandboxId, ENVD), ...keyOf(stack.teamA) } });
    assert.equal(viaHeaders.status, 204, viaHeaders.text);
    // Everything else is still the API.
    const api = await send({ path: `/v1/sandboxes/${sandboxId}`, headers: { ...keyOf(stack.teamA), host: `localhost:${port}` } });
    assert.equal(api.status, 200, api.text);
    assert.equal(JSON.parse(api.text).id, sandboxId);
  });

  test("a Connect JSON unary call reaches envd, which checks the access token itself", async () => {
    const stat = (headers: Record<string, string>) =>
      send({
        method: "POST",
        path: "/filesystem.Filesystem/Stat",
        headers: { ...byHeaders(sandboxId, ENVD), ...headers, "content-type": "application/json", "connect-protocol-version": "1" },
        body: JSON.stringify({ path: "/home/user" }),
      });
    const withToken = await stat({ "x-access-token": accessToken });
    assert.equal(withToken.status, 200, withToken.text);
    const entry = JSON.parse(withToken.text).entry as Json;
    assert.deepEqual([entry.name, entry.type, entry.path], ["user", "FILE_TYPE_DIRECTORY", "/home/user"]);
    // The team's key stands for the token when none is sent...
    assert.equal((await stat(keyOf(stack.teamA))).status, 200);
    // ...but a token sent beside it travels on untouched, and envd refuses a wrong one.
    const wrongTokenWithKey = await stat({ ...keyOf(stack.teamA), "x-access-token": "not-the-token" });
    assert.equal(wrongTokenWithKey.status, 401, wrongTokenWithKey.text);
  });

  test("a /files URL signed with the access token needs no header; a wrong or expired one is refused", async () => {
    const sign = (path: string, operation: string, expiration?: number) =>
      "v1_" +
      createHash("sha256")
        .update(`${path}:${operation}::${accessToken}${expiration === undefined ? "" : `:${expiration}`}`)
        .digest("base64")
        .replace(/=+$/, "");
    const download = (query: string) => send({ path: `/files?path=%2Ftmp%2Fecho.js&${query}`, headers: byHost(sandboxId, ENVD) });
    const signed = await download(`signature=${encodeURIComponent(sign("/tmp/echo.js", "read"))}`);
    assert.equal(signed.status, 200, signed.text);
    assert.equal(signed.text, ECHO_SERVER);
    const later = Math.floor(Date.now() / 1000) + 60;
    const expiring = await download(`signature=${encodeURIComponent(sign("/tmp/echo.js", "read", later))}&signature_expiration=${later}`);
    assert.equal(expiring.status, 200, expiring.text);

    const earlier = Math.floor(Date.now() / 1000) - 60;
    const expired = await download(`signature=${encodeURIComponent(sign("/tmp/echo.js", "read", earlier))}&signature_expiration=${earlier}`);
    assert.equal(expired.status, 401, expired.text);
    for (const signature of [sign("/tmp/echo.js", "write"), sign("/etc/passwd", "read"), "v1_forged"]) {
      const refused = await download(`signature=${encodeURIComponent(signature)}`);
      assert.equal(refused.status, 404, refused.text);
    }
  });

  test("a large upload and download stream through the proxy intact", async () => {
    const data = randomBytes(16 * 1024 * 1024);
    const headers = { ...byHost(sandboxId, ENVD), "x-access-token": accessToken };
    const upload = await send({
      method: "POST",
      path: "/files?path=/tmp/big.bin",
      headers: { ...headers, "content-type": "application/octet-stream" },
      body: data,
    });
    assert.equal(upload.status, 200, upload.text);
    const downloaded = await new Promise<Buffer>((resolve, reject) => {
      http
        .get({ host: "127.0.0.1", port, path: "/files?path=/tmp/big.bin", headers, agent: false }, (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (chunk: Buffer) => chunks.push(chunk));
          res.on("end", () => (res.statusCode === 200 ? resolve(Buffer.concat(chunks)) : reject(new Error(`download: ${res.statusCode}`))));
        })
        .on("error", reject);
    });
    assert.equal(downloaded.length, data.length);
    assert.ok(downloaded.equals(data), "the downloaded bytes differ from the uploaded ones");
    await sh("rm /tmp/big.bin");
  });

  test("a server-streamed Process.Start arrives in order, each event as it happens", async () => {
    const events: Array<{ message: Json; at: number }> = [];
    const command = "for i in 1 2 3 4 5; do echo line$i; sleep 0.3; done";
    for await (const event of startProcess(command, { ...byHost(sandboxId, ENVD), "x-access-token": accessToken })) events.push(event);
    assert.ok(events[0]!.message.event.start.pid > 0, JSON.stringify(events[0]));
    const data = events.filter((e) => e.message.event.data);
    const stdout = data.map((e) => Buffer.from(e.message.event.data.stdout, "base64").toString()).join("");
    assert.equal(stdout, "line1\nline2\nline3\nline4\nline5\n");
    assert.ok("end" in events.at(-1)!.message.event, JSON.stringify(events.at(-1)));
    // Streamed, not buffered: the first line arrived well before the last.
    assert.ok(data.at(-1)!.at - data[0]!.at >= 800, `lines arrived within ${data.at(-1)!.at - data[0]!.at} ms`);
  });

  test("an HTTP server started in the sandbox is reached on its port, without the caller's credentials", async () => {
    await sh("mkdir -p /tmp/www && echo served > /tmp/www/index.html && (httpd -p 8080 -h /tmp/www &)");
    const index = await waitFor("busybox httpd in the sandbox", async () => {
      const reply = await send({ path: "/index.html", headers: { ...byHost(sandboxId, 8080), ...keyOf(stack.teamA) } });
      return reply.status === 502 ? undefined : reply;
    });
    assert.deepEqual([index.status, index.text], [200, "served\n"]);

    const echoed = await send({
      method: "POST",
      path: "/echo?x=1",
      headers: { ...byHost(sandboxId, ECHO_PORT), ...keyOf(stack.teamA), "x-access-token": accessToken, "x-custom": "kept" },
      body: "payload",
    });
    assert.equal(echoed.status, 200, echoed.text);
    const seen = JSON.parse(echoed.text) as Json;
    assert.equal(seen.url, "/echo?x=1");
    assert.equal(seen.headers["x-custom"], "kept");
    assert.equal(seen.headers.host, `${ECHO_PORT}-${sandboxId}.localhost:${port}`);
    for (const secret of ["x-api-key", "x-access-token", "x-wrenn-host-token"]) assert.equal(seen.headers[secret], undefined, `${secret} reached the sandbox`);
  });

  test("a WebSocket to a server in the sandbox is piped both ways", async () => {
    const socket = new WebSocket(`ws://127.0.0.1:${port}/chat`, { headers: { ...byHeaders(sandboxId, ECHO_PORT), ...keyOf(stack.teamA) } });
    await once(socket, "open");
    const replies: string[] = [];
    const allReplies = new Promise<void>((resolve) =>
      socket.on("message", (data) => {
        replies.push(String(data));
        if (replies.length === 3) resolve();
      }),
    );
    for (const text of ["one", "two", "x".repeat(1000)]) socket.send(text);
    await allReplies;
    assert.deepEqual(replies, ["echo:one", "echo:two", `echo:${"x".repeat(1000)}`]);
    socket.close();
    await once(socket, "close");
  });

  test("requests without the sandbox's team's credentials are refused and never reach the sandbox", async () => {
    const { teamA, teamB } = stack;
    const unknownId = "nosuchsandbox0000000";
    const notFound = (id: string) => ({ code: 404, message: `sandbox ${id} not found`, sandboxId: id });
    const cases: Array<[string, Record<string, string>, number, Json | undefined]> = [
      ["no credentials", byHeaders(sandboxId, ECHO_PORT), 401, undefined],
      ["no credentials, by host", byHost(sandboxId, ECHO_PORT), 401, undefined],
      ["an invalid API key", { ...byHeaders(sandboxId, ECHO_PORT), "x-api-key": "wrn_not-a-key" }, 401, undefined],
      ["another team's key", { ...byHeaders(sandboxId, ECHO_PORT), ...keyOf(teamB) }, 404, notFound(sandboxId)],
      ["a wrong access token", { ...byHeaders(sandboxId, ECHO_PORT), "x-access-token": "not-the-token" }, 404, notFound(sandboxId)],
      ["a wrong traffic token", { ...byHeaders(sandboxId, ECHO_PORT), "e2b-traffic-access-token": "not-the-token" }, 404, notFound(sandboxId)],
      ["a wrong traffic token, by host", { ...byHost(sandboxId, ECHO_PORT), "e2b-traffic-access-token": "not-the-token" }, 404, notFound(sandboxId)],
      ["an unknown sandbox, by traffic token", { ...byHost(unknownId, ECHO_PORT), "e2b-traffic-access-token": trafficToken }, 404, notFound(unknownId)],
      ["an unknown sandbox", { ...byHeaders(unknownId, ECHO_PORT), ...keyOf(teamA) }, 404, notFound(unknownId)],
      ["an unknown sandbox, by token", { ...byHost(unknownId, ECHO_PORT), "x-access-token": accessToken }, 404, notFound(unknownId)],
      ["a port out of range", { host: `99999-${sandboxId}.localhost`, ...keyOf(teamA) }, 400, undefined],
      ["a host name without a port", { host: `echo-${sandboxId}.localhost`, ...keyOf(teamA) }, 400, undefined],
      ["the sandbox id header alone", { "e2b-sandbox-id": sandboxId, ...keyOf(teamA) }, 400, undefined],
    ];
    for (const [index, [what, headers, status, body]] of cases.entries()) {
      const reply = await send({ method: "POST", path: `/probe-${index}`, headers, body: "x" });
      assert.equal(reply.status, status, `${what}: ${reply.text}`);
      assert.equal(reply.headers["content-type"], "application/json", what);
      const json = JSON.parse(reply.text) as Json;
      if (body) assert.deepEqual(json, body, what);
      else assert.deepEqual([json.code, typeof json.message], [status, "string"], what);
    }
    // WebSocket upgrades are refused the same way.
    for (const [what, headers, status] of [
      ["no credentials", byHeaders(sandboxId, ECHO_PORT), 401],
      ["another team's key", { ...byHeaders(sandboxId, ECHO_PORT), ...keyOf(teamB) }, 404],
    ] as const) {
      const socket = new WebSocket(`ws://127.0.0.1:${port}/probe-ws`, { headers });
      socket.on("error", () => {}); // terminate() below reports the refused handshake as an error
      const [, response] = (await once(socket, "unexpected-response")) as [unknown, http.IncomingMessage];
      assert.equal(response.statusCode, status, what);
      response.resume();
      socket.terminate();
    }
    const seen = await seenBySandbox();
    assert.deepEqual(seen.filter((path) => path.includes("probe")), [], "a refused request reached the sandbox");
  });

  test("the traffic access token alone reaches a server in the sandbox, over HTTP and WebSocket, and never reaches the sandbox itself", async () => {
    assert.match(trafficToken, /^[0-9a-f]{48}$/);
    assert.notEqual(trafficToken, accessToken);
    for (const route of [byHost(sandboxId, ECHO_PORT), byHeaders(sandboxId, ECHO_PORT)]) {
      const reply = await send({ method: "POST", path: "/by-traffic-token", headers: { ...route, "e2b-traffic-access-token": trafficToken }, body: "x" });
      assert.equal(reply.status, 200, reply.text);
      const seen = JSON.parse(reply.text) as Json;
      assert.equal(seen.url, "/by-traffic-token");
      for (const secret of ["e2b-traffic-access-token", "x-api-key", "x-access-token", "x-wrenn-host-token"]) {
        assert.equal(seen.headers[secret], undefined, `${secret} reached the sandbox`);
      }
    }
    const socket = new WebSocket(`ws://127.0.0.1:${port}/traffic`, { headers: { ...byHeaders(sandboxId, ECHO_PORT), "e2b-traffic-access-token": trafficToken } });
    await once(socket, "open");
    const reply = once(socket, "message");
    socket.send("hello");
    assert.equal(String((await reply)[0]), "echo:hello");
    socket.close();
    await once(socket, "close");
  });

  test("a port link opens a sandbox's port to a browser: a one-minute ticket, then a cookie for that host only, never envd", async () => {
    const linked = await stack.call(stack.teamA, "POST", `/v1/sandboxes/${sandboxId}/ports/${ECHO_PORT}/link`);
    const link = (await linked.json()) as Json;
    assert.equal(linked.status, 200, JSON.stringify(link));
    const url = new URL(link.url);
    assert.equal(url.host, `${ECHO_PORT}-${sandboxId}.localhost:${port}`);
    assert.ok(Date.parse(link.expiresAt) - Date.now() <= 60_000);
    // Following it: a redirect without the ticket, and the cookie; nothing reaches the sandbox.
    const seenBefore = (await seenBySandbox()).length;
    const followed = await send({ path: `/app${url.search}&tab=2`, headers: byHost(sandboxId, ECHO_PORT) });
    assert.equal(followed.status, 302, followed.text);
    assert.equal(followed.headers.location, "/app?tab=2");
    const setCookie = ([] as string[]).concat(followed.headers["set-cookie"] ?? []);
    assert.equal(setCookie.length, 1);
    assert.match(setCookie[0]!, /^wrenn_port_access=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; SameSite=Lax; Max-Age=43200$/);
    assert.equal((await seenBySandbox()).length, seenBefore, "the ticket's request reached the sandbox");
    // The cookie opens that port; the sandbox sees its own cookies, never ours.
    const cookie = setCookie[0]!.split(";")[0]!;
    const page = await send({ path: "/app?tab=2", headers: { ...byHost(sandboxId, ECHO_PORT), cookie: `theirs=1; ${cookie}` } });
    assert.equal(page.status, 200, page.text);
    assert.deepEqual([JSON.parse(page.text).url, JSON.parse(page.text).headers.cookie], ["/app?tab=2", "theirs=1"]);
    // Only that port of that sandbox, and never envd.
    assert.equal((await send({ path: "/", headers: { ...byHost(sandboxId, ECHO_PORT + 1), cookie } })).status, 404);
    assert.equal((await send({ path: "/health", headers: { ...byHost(sandboxId, ENVD), cookie } })).status, 401);
    // A forged, an expired, another port's ticket.
    const ticket = url.searchParams.get("wrenn_port_ticket")!;
    const forged = ticket.slice(0, -1) + (ticket.endsWith("A") ? "B" : "A");
    assert.equal((await send({ path: `/?wrenn_port_ticket=${forged}`, headers: byHost(sandboxId, ECHO_PORT) })).status, 404);
    const expired = portTicket(trafficToken, sandboxId, ECHO_PORT, Math.floor(Date.now() / 1000) - 120).ticket;
    const late = await send({ path: `/?wrenn_port_ticket=${expired}`, headers: byHost(sandboxId, ECHO_PORT) });
    assert.equal(late.status, 401, late.text);
    assert.match(JSON.parse(late.text).message, /expired/);
    assert.equal((await send({ path: `/?wrenn_port_ticket=${ticket}`, headers: byHost(sandboxId, ECHO_PORT + 1) })).status, 404);
    // No link to envd's port; none to another team's sandbox.
    assert.equal((await stack.call(stack.teamA, "POST", `/v1/sandboxes/${sandboxId}/ports/${ENVD}/link`)).status, 400);
    assert.equal((await stack.call(stack.teamB, "POST", `/v1/sandboxes/${sandboxId}/ports/${ECHO_PORT}/link`)).status, 404);
  });

  test("the traffic access token never opens envd's port", async () => {
    const traffic = { "e2b-traffic-access-token": trafficToken };
    for (const route of [byHost(sandboxId, ENVD), byHeaders(sandboxId, ENVD)]) {
      const health = await send({ path: "/health", headers: { ...route, ...traffic } });
      assert.equal(health.status, 401, health.text);
      assert.match(JSON.parse(health.text).message, /never envd's/);
      const start = await send({
        method: "POST",
        path: "/process.Process/Start",
        headers: { ...route, ...traffic, "content-type": "application/connect+json", "connect-protocol-version": "1" },
        body: connectEnvelope({ process: { cmd: "/bin/sh", args: ["-c", "touch /tmp/by-traffic-token"] }, stdin: false }),
      });
      assert.equal(start.status, 401, start.text);
      const files = await send({ path: "/files?path=/tmp/echo.js", headers: { ...route, ...traffic } });
      assert.equal(files.status, 401, files.text);
    }
    // Beside a wrong envd token it is no help either: the refusal is a wrong credential's.
    const withWrongToken = await send({ path: "/health", headers: { ...byHeaders(sandboxId, ENVD), ...traffic, "x-access-token": "not-the-token" } });
    assert.equal(withWrongToken.status, 404, withWrongToken.text);
    assert.equal(await sh("test -e /tmp/by-traffic-token && echo made || echo absent"), "absent\n");
  });

  test("another sandbox's traffic access token does not open this one, and this one's does not open the other", async () => {
    const other = await createSandbox(stack.teamB);
    try {
      assert.notEqual(other.trafficAccessToken, trafficToken);
      const mixed = await send({ path: "/crossed-traffic", headers: { ...byHost(sandboxId, ECHO_PORT), "e2b-traffic-access-token": other.trafficAccessToken } });
      assert.deepEqual([mixed.status, JSON.parse(mixed.text)], [404, { code: 404, message: `sandbox ${sandboxId} not found`, sandboxId }]);
      const reverse = await send({ path: "/crossed-traffic", headers: { ...byHost(other.id, ECHO_PORT), "e2b-traffic-access-token": trafficToken } });
      assert.deepEqual([reverse.status, JSON.parse(reverse.text)], [404, { code: 404, message: `sandbox ${other.id} not found`, sandboxId: other.id }]);
      // Its own token is let through to it (nothing listens there: the host's proxy says so).
      const own = await send({ path: "/", headers: { ...byHost(other.id, ECHO_PORT), "e2b-traffic-access-token": other.trafficAccessToken } });
      assert.equal(own.status, 502, own.text);
      assert.match(JSON.parse(own.text).message, /port is not open/);
      assert.deepEqual((await seenBySandbox()).filter((path) => path.includes("crossed")), [], "a refused request reached the sandbox");
    } finally {
      await stack.call(stack.teamB, "DELETE", `/v1/sandboxes/${other.id}`);
    }
  });

  test("a sandbox that stopped answers 502 on envd paths, even while its location is cached", async () => {
    const other = await createSandbox(stack.teamA);
    const health = () => send({ path: "/health", headers: { ...byHeaders(other.id, ENVD), "x-access-token": other.envdAccessToken } });
    assert.equal((await health()).status, 204); // its location is now cached as running
    const killed = await stack.call(stack.teamA, "DELETE", `/v1/sandboxes/${other.id}`);
    assert.ok(killed.status < 300, `kill: ${killed.status}`);
    const gone = await health(); // the host no longer has it
    assert.equal(gone.status, 502, gone.text);
    assert.equal(JSON.parse(gone.text).sandboxId, other.id);
    await sleep(50);
    const afterwards = await health(); // read afresh: stopped
    assert.equal(afterwards.status, 502, afterwards.text);
    assert.match(JSON.parse(afterwards.text).message, /is not running/);
  });

  test("a pause through the API reaches the proxy at once: 502 'is paused', then envd again after resume", async () => {
    const other = await createSandbox(stack.teamA);
    const health = () => send({ path: "/health", headers: { ...byHeaders(other.id, ENVD), "x-access-token": other.envdAccessToken } });
    try {
      assert.equal((await health()).status, 204); // cached as running
      const pause = await stack.call(stack.teamA, "POST", `/v1/sandboxes/${other.id}/pause`);
      assert.equal(pause.status, 200, await pause.text());
      const paused = await health(); // not the cached location: the pause dropped it
      assert.equal(paused.status, 502, paused.text);
      assert.match(JSON.parse(paused.text).message, /it is paused/);
      assert.equal((await stack.call(stack.teamA, "POST", `/v1/sandboxes/${other.id}/resume`, {})).status, 200);
      assert.equal((await health()).status, 204);
    } finally {
      await stack.call(stack.teamA, "DELETE", `/v1/sandboxes/${other.id}`);
    }
  });

  test("calls reuse kept-alive connections on both hops: to the host's proxy, to envd and to a server in the sandbox", async () => {
    const { address } = await echoStats();
    const proxyPort = stack.agents[0]!.agent.proxyPort;
    const toHost = () => new Set(connectionsTo("127.0.0.1", proxyPort).map((c) => c.local));
    const toEnvd = () => new Set(connectionsTo(address, ENVD).map((c) => c.local));
    const [hostBefore, envdBefore, echoBefore] = [toHost(), toEnvd(), (await echoStats()).connections];
    for (let i = 0; i < 10; i++) {
      const health = await send({ path: "/health", headers: { ...byHeaders(sandboxId, ENVD), "x-access-token": accessToken } });
      assert.equal(health.status, 204);
      const echoed = await send({ method: "POST", path: `/call${i}`, headers: { ...byHeaders(sandboxId, ECHO_PORT), ...keyOf(stack.teamA) }, body: "small" });
      assert.equal(echoed.status, 200, echoed.text);
    }
    const opened = (after: Set<string>, before: Set<string>) => [...after].filter((local) => !before.has(local)).length;
    assert.ok(opened(toHost(), hostBefore) <= 1, "twenty calls opened more than one connection to the host's proxy");
    assert.ok(opened(toEnvd(), envdBefore) <= 1, "ten calls opened more than one connection to envd");
    assert.ok(toEnvd().size >= 1, "no kept-alive connection to envd");
    const echoOpened = (await echoStats()).connections - echoBefore;
    assert.ok(echoOpened <= 1, `ten calls opened ${echoOpened} connections to the server in the sandbox`);
  });

  test("a call on a kept-alive connection the sandbox's server closes unanswered is sent again and succeeds", async () => {
    const headers = { ...byHeaders(sandboxId, ECHO_PORT), ...keyOf(stack.teamA), "content-type": "application/json" };
    const before = await echoStats(); // leaves a kept-alive connection for the next call to reuse
    const reply = await send({ method: "POST", path: "/close-reused", headers, body: '{"small":true}' });
    assert.equal(reply.status, 200, reply.text);
    assert.equal(JSON.parse(reply.text).url, "/close-reused");
    const after = await echoStats();
    assert.equal(after.closedUnanswered - before.closedUnanswered, 1, "the reused connection was closed under the call");
  });

  test("an upload too large to replay that the sandbox's server drops is a prompt 502", async () => {
    const started = Date.now();
    const reply = await send({
      method: "POST",
      path: "/drop",
      headers: { ...byHeaders(sandboxId, ECHO_PORT), ...keyOf(stack.teamA), "content-type": "application/octet-stream" },
      body: randomBytes(200 * 1024),
    });
    assert.equal(reply.status, 502, reply.text);
    assert.match(JSON.parse(reply.text).message, /cannot reach port 9000/);
    assert.ok(Date.now() - started < 5000, "answered at once, not after a timeout");
  });

  test("an answer the sandbox's server breaks off mid-body reaches the client broken, never as a short whole one", async () => {
    const outcome = await new Promise<string>((resolve) => {
      const req = http.request({ host: "127.0.0.1", port, path: "/half", headers: { ...byHeaders(sandboxId, ECHO_PORT), ...keyOf(stack.teamA) }, agent: false }, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => (text += chunk));
        res.on("end", () => resolve(`ended whole after ${JSON.stringify(text)}`));
        res.on("error", (err) => resolve(`broken (${err.message}) after ${JSON.stringify(text)}`));
      });
      req.on("error", (err) => resolve(`request failed: ${err.message}`));
      req.end();
      setTimeout(() => {
        req.destroy();
        resolve("neither ended nor broken 10 s after the server cut it (the client would hang)");
      }, 10_000).unref();
    });
    assert.match(outcome, /^broken \(.*\) after "the first half;"$/);
  });

  test("a paused or destroyed sandbox's kept-alive connections are closed at once", async () => {
    const { address: echoAddress } = await echoStats();
    const other = await createSandbox(stack.teamA);
    const health = () => send({ path: "/health", headers: { ...byHeaders(other.id, ENVD), "x-access-token": other.envdAccessToken } });
    /** The proxy's connections to the sandbox's envd, opened from now on (the agent's own envd client may hold one too). */
    async function proxyConnections(): Promise<{ address: string; locals: Set<string> }> {
      const known = new Set(connectionsTo(AGENT.pool, ENVD).map((c) => c.local));
      for (let i = 0; i < 3; i++) assert.equal((await health()).status, 204);
      const opened = connectionsTo(AGENT.pool, ENVD).filter((c) => !known.has(c.local) && !c.peer.startsWith(`${echoAddress}:`));
      assert.equal(opened.length, 1, `one kept-alive connection to the sandbox's envd: ${JSON.stringify(opened)}`);
      return { address: opened[0]!.peer.slice(0, opened[0]!.peer.lastIndexOf(":")), locals: new Set(opened.map((c) => c.local)) };
    }
    const stillOpen = ({ address, locals }: { address: string; locals: Set<string> }) =>
      connectionsTo(address, ENVD).filter((c) => locals.has(c.local)).length;
    try {
      // A paused sandbox is frozen: it would never close its side, so the connection would stay until the idle timeout.
      const beforePause = await proxyConnections();
      const pause = await stack.call(stack.teamA, "POST", `/v1/sandboxes/${other.id}/pause`);
      assert.equal(pause.status, 200, await pause.text());
      await waitFor("the paused sandbox's connections to close", async () => stillOpen(beforePause) === 0 || undefined, 3000);
      assert.equal((await stack.call(stack.teamA, "POST", `/v1/sandboxes/${other.id}/resume`, {})).status, 200);

      const beforeKill = await proxyConnections();
      const killed = await stack.call(stack.teamA, "DELETE", `/v1/sandboxes/${other.id}`);
      assert.ok(killed.status < 300, `kill: ${killed.status}`);
      await waitFor("the destroyed sandbox's connections to close", async () => stillOpen(beforeKill) === 0 || undefined, 3000);
    } finally {
      await stack.call(stack.teamA, "DELETE", `/v1/sandboxes/${other.id}`);
    }
  });
});
