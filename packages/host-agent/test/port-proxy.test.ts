import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { once } from "node:events";
import http, { type IncomingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import { test, type TestContext } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { WebSocket, WebSocketServer } from "ws";
import { startPortProxy, type PortProxyOptions } from "../src/proxy/port-proxy.js";

const TOKEN = "host-token-for-tests";

/** A server standing in for something a sandbox listens on. */
async function startUpstream(t: TestContext, handler: http.RequestListener): Promise<{ port: number; server: http.Server }> {
  const server = http.createServer(handler);
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  t.after(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { port: (server.address() as AddressInfo).port, server };
}

/** A proxy that knows the sandboxes `known`, all at 127.0.0.1, and wants TOKEN. */
async function startProxy(t: TestContext, known: string[], overrides: Partial<PortProxyOptions> = {}) {
  const resolved: string[] = [];
  const activity: string[] = [];
  const proxy = await startPortProxy({
    host: "127.0.0.1",
    port: 0,
    token: TOKEN,
    resolve: (sandboxId) => {
      resolved.push(sandboxId);
      return known.includes(sandboxId) ? { address: "127.0.0.1" } : undefined;
    },
    onRequest: (sandboxId) => activity.push(sandboxId),
    ...overrides,
  });
  t.after(() => proxy.close());
  return { proxy, resolved, activity };
}

/** The headers the control plane sends to reach `port` of `sandboxId`. */
const routed = (sandboxId: string, port: number | string, token = TOKEN): Record<string, string> => ({
  "x-wrenn-sandbox-id": sandboxId,
  "x-wrenn-sandbox-port": String(port),
  "x-wrenn-host-token": token,
});

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
}

function send(
  port: number,
  { method = "GET", path = "/", headers = {}, body }: { method?: string; path?: string; headers?: Record<string, string>; body?: string },
): Promise<Reply> {
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

/** Answers with what it received, as JSON. */
const echo: http.RequestListener = (req, res) => {
  let body = "";
  req.setEncoding("utf8");
  req.on("data", (chunk: string) => (body += chunk));
  req.on("end", () => {
    res.writeHead(req.method === "POST" ? 201 : 200, { "content-type": "application/json", "x-upstream": "yes" });
    res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body }));
  });
};

test("GET and POST reach the sandbox port with path, body and headers, minus the host token", async (t) => {
  const upstream = await startUpstream(t, echo);
  const { proxy, activity } = await startProxy(t, ["sbx1"]);

  const get = await send(proxy.port, { path: "/files?path=%2Fhome%2Fuser", headers: { ...routed("sbx1", upstream.port), "x-custom": "kept" } });
  assert.equal(get.status, 200);
  assert.equal(get.headers["x-upstream"], "yes");
  const seenByGet = JSON.parse(get.text);
  assert.equal(seenByGet.url, "/files?path=%2Fhome%2Fuser");
  assert.equal(seenByGet.headers["x-custom"], "kept");
  assert.equal(seenByGet.headers["x-wrenn-host-token"], undefined, "the host token stays on this host");

  const post = await send(proxy.port, {
    method: "POST",
    path: "/process.Process/Start",
    headers: { ...routed("sbx1", upstream.port), "content-type": "application/json" },
    body: JSON.stringify({ cmd: "echo hi" }),
  });
  assert.equal(post.status, 201);
  assert.deepEqual(
    { ...JSON.parse(post.text), headers: undefined },
    { method: "POST", url: "/process.Process/Start", body: '{"cmd":"echo hi"}', headers: undefined },
  );
  assert.deepEqual(activity, ["sbx1", "sbx1"], "each request counts as activity");
});

test("the Host <port>-<sandboxId>.<domain> routes a request, and the Wrenn headers win over it", async (t) => {
  const a = await startUpstream(t, (_req, res) => res.end("a"));
  const b = await startUpstream(t, (_req, res) => res.end("b"));
  const { proxy } = await startProxy(t, ["sbxa", "sbxb"]);

  const byHost = await send(proxy.port, { headers: { host: `${a.port}-sbxa.wrenn.test`, "x-wrenn-host-token": TOKEN } });
  assert.deepEqual([byHost.status, byHost.text], [200, "a"]);
  const byHostWithPort = await send(proxy.port, { headers: { host: `${a.port}-sbxa.wrenn.test:8080`, "x-wrenn-host-token": TOKEN } });
  assert.deepEqual([byHostWithPort.status, byHostWithPort.text], [200, "a"]);
  const byBoth = await send(proxy.port, { headers: { host: `${a.port}-sbxa.wrenn.test`, ...routed("sbxb", b.port) } });
  assert.deepEqual([byBoth.status, byBoth.text], [200, "b"]);
});

test("an unknown sandbox is 404 with E2B's error shape", async (t) => {
  const { proxy } = await startProxy(t, []);
  const reply = await send(proxy.port, { headers: routed("nope", 49983) });
  assert.equal(reply.status, 404);
  assert.equal(reply.headers["content-type"], "application/json");
  assert.deepEqual(JSON.parse(reply.text), { code: 404, message: "sandbox nope not found" });
});

test("a closed port is 502 with E2B's closed-port message", async (t) => {
  const closedPort = await freePort();
  const { proxy } = await startProxy(t, ["sbx1"]);
  const reply = await send(proxy.port, { path: "/health", headers: routed("sbx1", closedPort) });
  assert.equal(reply.status, 502);
  assert.deepEqual(JSON.parse(reply.text), {
    code: 502,
    message: "The sandbox is running but port is not open",
    sandboxId: "sbx1",
    port: closedPort,
  });
  // The same for a body that could not be delivered.
  const post = await send(proxy.port, { method: "POST", headers: routed("sbx1", closedPort), body: "x".repeat(100_000) });
  assert.equal(post.status, 502);
});

test("a missing or wrong host token is 401 and no sandbox is looked up", async (t) => {
  const upstream = await startUpstream(t, echo);
  const { proxy, resolved } = await startProxy(t, ["sbx1"]);
  const { "x-wrenn-host-token": _, ...withoutToken } = routed("sbx1", upstream.port);
  const missing = await send(proxy.port, { headers: withoutToken });
  const wrong = await send(proxy.port, { headers: routed("sbx1", upstream.port, "not-the-token") });
  for (const reply of [missing, wrong]) {
    assert.equal(reply.status, 401);
    assert.deepEqual(JSON.parse(reply.text), { code: 401, message: "missing or wrong x-wrenn-host-token" });
  }
  assert.equal(await upgradeStatus(proxy.port, withoutToken), 401);
  assert.deepEqual(resolved, []);
});

test("a port outside 1-65535, or no route at all, is 400", async (t) => {
  const { proxy, resolved } = await startProxy(t, ["sbx1"]);
  for (const port of ["0", "65536", "abc", "-1", "80.5"]) {
    const reply = await send(proxy.port, { headers: routed("sbx1", port) });
    assert.equal(reply.status, 400, `port ${port}`);
    assert.match(JSON.parse(reply.text).message, /invalid port/);
  }
  const noRoute = await send(proxy.port, { headers: { host: "localhost", "x-wrenn-host-token": TOKEN } });
  assert.equal(noRoute.status, 400);
  const badHostPort = await send(proxy.port, { headers: { host: "99999-sbx1.wrenn.test", "x-wrenn-host-token": TOKEN } });
  assert.equal(badHostPort.status, 400);
  assert.deepEqual(resolved, []);
});

test("a streamed response reaches the client chunk by chunk before the sandbox ends it", async (t) => {
  let releaseSecond!: () => void;
  const secondMayGo = new Promise<void>((resolve) => (releaseSecond = resolve));
  const upstream = await startUpstream(t, async (_req, res) => {
    res.writeHead(200, { "content-type": "application/connect+json" });
    res.write("first\n");
    await secondMayGo; // the client must have seen "first" while this response is still open
    res.end("second\n");
  });
  const { proxy } = await startProxy(t, ["sbx1"]);

  const res = await new Promise<http.IncomingMessage>((resolve, reject) =>
    http.get({ host: "127.0.0.1", port: proxy.port, headers: routed("sbx1", upstream.port), agent: false }, resolve).on("error", reject),
  );
  assert.equal(res.headers["content-type"], "application/connect+json");
  res.setEncoding("utf8");
  const chunks: string[] = [];
  const [first] = (await Promise.race([once(res, "data"), sleep(3000).then(() => ["(nothing within 3 s)"])])) as [string];
  assert.equal(first, "first\n");
  chunks.push(first);
  releaseSecond();
  for await (const chunk of res) chunks.push(chunk as string);
  assert.deepEqual(chunks.join(""), "first\nsecond\n");
});

test("a 100 MB upload streams through with backpressure, never held in the proxy's memory", async (t) => {
  const size = 100 * 1024 * 1024;
  let startReading!: () => void;
  const readingAllowed = new Promise<void>((resolve) => (startReading = resolve));
  const upstream = await startUpstream(t, async (req, res) => {
    await readingAllowed; // a slow sandbox: until then nothing is read and TCP pushes back
    const hash = createHash("sha256");
    let received = 0;
    for await (const chunk of req) {
      hash.update(chunk as Buffer);
      received += (chunk as Buffer).length;
    }
    res.end(JSON.stringify({ received, sha256: hash.digest("hex") }));
  });
  const { proxy } = await startProxy(t, ["sbx1"]);

  const block = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < block.length; i++) block[i] = (i * 31) & 0xff;
  const sentHash = createHash("sha256");
  let produced = 0;
  const body = Readable.from(
    (function* () {
      for (let offset = 0; offset < size; offset += block.length) {
        produced += block.length;
        sentHash.update(block);
        yield block;
      }
    })(),
  );

  const baseline = process.memoryUsage().arrayBuffers;
  let peak = baseline;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().arrayBuffers)), 10);
  t.after(() => clearInterval(sampler));

  const req = http.request({
    host: "127.0.0.1",
    port: proxy.port,
    method: "POST",
    path: "/files",
    agent: false,
    headers: { ...routed("sbx1", upstream.port), "content-type": "application/octet-stream", "content-length": String(size) },
  });
  const replied = once(req, "response");
  body.pipe(req);

  await sleep(500);
  const producedWhileStalled = produced;
  assert.ok(producedWhileStalled < 48 * 1024 * 1024, `the client could push ${producedWhileStalled} bytes into a stalled upload`);
  startReading();

  const [res] = (await replied) as [http.IncomingMessage];
  let text = "";
  for await (const chunk of res) text += chunk;
  clearInterval(sampler);
  assert.deepEqual(JSON.parse(text), { received: size, sha256: sentHash.digest("hex") });
  const grown = peak - baseline;
  assert.ok(grown < 64 * 1024 * 1024, `buffers grew by ${Math.round(grown / 1048576)} MiB during a 100 MiB upload`);
  t.diagnostic(`pushed ${Math.round(producedWhileStalled / 1048576)} MiB while stalled; buffers peaked ${Math.round(grown / 1048576)} MiB above baseline`);
});

test("a WebSocket echo round trip passes through, and the upgrade carries path and headers", async (t) => {
  const upstream = await startUpstream(t, (_req, res) => res.end("not a websocket"));
  const wss = new WebSocketServer({ server: upstream.server });
  t.after(() => wss.close());
  const upgrades: http.IncomingMessage[] = [];
  wss.on("connection", (socket, req) => {
    upgrades.push(req);
    socket.on("message", (data, isBinary) => socket.send(data, { binary: isBinary }));
  });
  const { proxy, activity } = await startProxy(t, ["sbx1"]);

  const ws = new WebSocket(`ws://127.0.0.1:${proxy.port}/terminal?cols=80`, { headers: routed("sbx1", upstream.port) });
  await once(ws, "open");
  ws.send("hello");
  const [text, textIsBinary] = (await once(ws, "message")) as [Buffer, boolean];
  assert.deepEqual([text.toString(), textIsBinary], ["hello", false]);
  const blob = Buffer.alloc(1024 * 1024, 7);
  ws.send(blob);
  const [binary] = (await once(ws, "message")) as [Buffer];
  assert.ok(blob.equals(binary));

  assert.equal(upgrades[0]!.url, "/terminal?cols=80");
  assert.equal(upgrades[0]!.headers["x-wrenn-host-token"], undefined);
  assert.deepEqual(activity, ["sbx1"]);

  // Closing the proxy ends the WebSocket it carries instead of waiting on it.
  await proxy.close();
  const [code] = (await once(ws, "close")) as [number];
  assert.equal(code, 1006);
});

test("a WebSocket to a closed port is 502, to an unknown sandbox 404, and a refused upgrade passes on the refusal", async (t) => {
  const closedPort = await freePort();
  const plain = await startUpstream(t, (_req, res) => {
    res.writeHead(426, { "content-type": "text/plain" });
    res.end("this server speaks no WebSocket");
  });
  const { proxy } = await startProxy(t, ["sbx1"]);
  assert.equal(await upgradeStatus(proxy.port, routed("sbx1", closedPort)), 502);
  assert.equal(await upgradeStatus(proxy.port, routed("nope", closedPort)), 404);
  assert.equal(await upgradeStatus(proxy.port, routed("sbx1", plain.port)), 426);
});

test("a client that aborts mid-response closes the request to the sandbox", async (t) => {
  let upstreamClosed!: () => void;
  const closed = new Promise<void>((resolve) => (upstreamClosed = resolve));
  const upstream = await startUpstream(t, (_req, res) => {
    res.writeHead(200);
    res.write("tick\n"); // and never ends, like a process output stream
    res.on("close", upstreamClosed);
  });
  const { proxy } = await startProxy(t, ["sbx1"]);

  const req = http.get({ host: "127.0.0.1", port: proxy.port, headers: routed("sbx1", upstream.port), agent: false });
  const [res] = (await once(req, "response")) as [http.IncomingMessage];
  await once(res, "data");
  req.on("error", () => {});
  req.destroy();
  await Promise.race([closed, sleep(3000).then(() => assert.fail("the sandbox's request stayed open"))]);
});

test("a client that aborts mid-upload closes the request to the sandbox before its body ends", async (t) => {
  let upstreamDone!: (how: string) => void;
  const done = new Promise<string>((resolve) => (upstreamDone = resolve));
  let firstBytes!: () => void;
  const gotFirstBytes = new Promise<void>((resolve) => (firstBytes = resolve));
  const upstream = await startUpstream(t, (req) => {
    req.once("data", firstBytes);
    req.on("end", () => upstreamDone("end"));
    req.on("close", () => upstreamDone(req.complete ? "end" : "aborted"));
  });
  const { proxy } = await startProxy(t, ["sbx1"]);

  const req = http.request({
    host: "127.0.0.1",
    port: proxy.port,
    method: "POST",
    agent: false,
    headers: { ...routed("sbx1", upstream.port), "content-length": String(10 * 1024 * 1024) },
  });
  req.on("error", () => {});
  req.write(Buffer.alloc(64 * 1024));
  await gotFirstBytes;
  req.destroy();
  const how = await Promise.race([done, sleep(3000).then(() => "still open after 3 s")]);
  assert.equal(how, "aborted");
});

/** The status a WebSocket upgrade is refused with. */
async function upgradeStatus(port: number, headers: Record<string, string>): Promise<number> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { headers });
  ws.on("error", () => {}); // aborting the refused handshake below reports one
  const [request, response] = (await once(ws, "unexpected-response")) as [http.ClientRequest, http.IncomingMessage];
  request.destroy();
  return response.statusCode!;
}

/** A port nothing listens on (bound, then released). */
async function freePort(): Promise<number> {
  const server = http.createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** An upstream that counts the connections made to it, and closes a connection on its `closeOn`-th request (a real close, before any answer). */
async function startCountingUpstream(t: TestContext, options: { closeOn?: number; closePath?: string } = {}) {
  const stats = { connections: 0, open: 0, closedBeforeAnswer: 0, answered: [] as string[] };
  const requestsOn = new WeakMap<object, number>();
  const upstream = await startUpstream(t, (req, res) => {
    const n = (requestsOn.get(req.socket) ?? 0) + 1;
    requestsOn.set(req.socket, n);
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => (body += chunk));
    req.on("end", () => {
      if (n === options.closeOn || req.url === options.closePath) {
        stats.closedBeforeAnswer++;
        req.socket.destroy();
        return;
      }
      stats.answered.push(`${req.method} ${req.url} ${body.length}`);
      res.end(`${req.method} ${req.url} ${body}`);
    });
  });
  upstream.server.on("connection", (socket) => {
    stats.connections++;
    stats.open++;
    socket.once("close", () => stats.open--);
  });
  return { ...upstream, stats };
}

test("requests to a sandbox port share one kept-alive connection; a body too large to replay gets its own", async (t) => {
  const upstream = await startCountingUpstream(t);
  const { proxy } = await startProxy(t, ["sbx1"]);
  for (let i = 0; i < 5; i++) {
    const get = await send(proxy.port, { path: `/get${i}`, headers: routed("sbx1", upstream.port) });
    assert.deepEqual([get.status, get.text], [200, `GET /get${i} `]);
    const post = await send(proxy.port, { method: "POST", path: "/post", headers: routed("sbx1", upstream.port), body: "small" });
    assert.deepEqual([post.status, post.text], [200, "POST /post small"]);
  }
  assert.equal(upstream.stats.connections, 1, "ten requests, one connection");
  assert.equal(proxy.openConnections("sbx1"), 1);

  const large = "x".repeat(100 * 1024);
  const upload = await send(proxy.port, { method: "PUT", path: "/large", headers: routed("sbx1", upstream.port), body: large });
  assert.deepEqual([upload.status, upload.text.length], [200, "PUT /large ".length + large.length]);
  assert.equal(upstream.stats.connections, 2, "the large upload went on a fresh connection");
  await waitUntil(() => upstream.stats.open === 1, "the large upload's connection to close");
});

test("a request on a kept-alive connection the server closes unanswered is sent again on a fresh one", async (t) => {
  // The server closes each connection when its second request arrives, as a server does whose
  // idle timeout ran out just as the proxy reused the connection.
  const upstream = await startCountingUpstream(t, { closeOn: 2 });
  const { proxy } = await startProxy(t, ["sbx1"]);
  assert.equal((await send(proxy.port, { path: "/first", headers: routed("sbx1", upstream.port) })).status, 200);
  const get = await send(proxy.port, { path: "/second", headers: routed("sbx1", upstream.port) });
  assert.deepEqual([get.status, get.text], [200, "GET /second "]);
  // The replay's connection is not pooled: the next request opens one, which the POST then reuses.
  assert.equal((await send(proxy.port, { path: "/third", headers: routed("sbx1", upstream.port) })).status, 200);
  const post = await send(proxy.port, {
    method: "POST",
    path: "/process.Process/Start",
    headers: { ...routed("sbx1", upstream.port), "content-type": "application/json" },
    body: '{"cmd":"echo hi"}',
  });
  assert.deepEqual([post.status, post.text], [200, 'POST /process.Process/Start {"cmd":"echo hi"}']);
  assert.equal(upstream.stats.closedBeforeAnswer, 2, "each reused connection was closed under a request");
  assert.deepEqual(upstream.stats.answered, ["GET /first 0", "GET /second 0", "GET /third 0", "POST /process.Process/Start 17"]);
});

test("a request the server drops unanswered is 502 promptly: a large upload on its fresh connection, a replay only once", async (t) => {
  const upstream = await startCountingUpstream(t, { closePath: "/drop" });
  const { proxy } = await startProxy(t, ["sbx1"]);
  const started = Date.now();
  const upload = await send(proxy.port, { method: "POST", path: "/drop", headers: routed("sbx1", upstream.port), body: "y".repeat(200 * 1024) });
  assert.equal(upload.status, 502, upload.text);
  assert.match(JSON.parse(upload.text).message, /cannot reach port/);
  assert.equal(upstream.stats.closedBeforeAnswer, 1, "a body that cannot be replayed is sent once");

  assert.equal((await send(proxy.port, { path: "/ok", headers: routed("sbx1", upstream.port) })).status, 200);
  const small = await send(proxy.port, { method: "POST", path: "/drop", headers: routed("sbx1", upstream.port), body: "tiny" });
  assert.equal(small.status, 502, small.text);
  assert.equal(upstream.stats.closedBeforeAnswer, 3, "on the reused connection, then once more on a fresh one, no further");
  assert.ok(Date.now() - started < 3000, "answered at once, not after a timeout");
});

test("dropping a sandbox closes its kept-alive connections; a sandbox later at the same address opens its own", async (t) => {
  const upstream = await startCountingUpstream(t);
  const { proxy } = await startProxy(t, ["old", "new"]);
  assert.equal((await send(proxy.port, { headers: routed("old", upstream.port) })).status, 200);
  assert.equal(upstream.stats.open, 1);
  proxy.dropSandbox("old", true);
  assert.equal(proxy.openConnections("old"), 0);
  await waitUntil(() => upstream.stats.open === 0, "the dropped sandbox's connection to close");

  assert.equal((await send(proxy.port, { headers: routed("new", upstream.port) })).status, 200);
  assert.equal(upstream.stats.connections, 2, "the new sandbox did not inherit the old one's connection");
  // A pause keeps exchanges in flight but closes the idle connections too.
  proxy.dropSandbox("new", false);
  await waitUntil(() => upstream.stats.open === 0, "the paused sandbox's connection to close");
});

async function waitUntil(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 100 && !check(); i++) await sleep(20);
  assert.ok(check(), `timed out waiting for ${what}`);
}

test("a response silent for longer than the idle-connection timeout is not cut", async (t) => {
  const upstream = await startUpstream(t, (_req, res) => {
    res.write("first,");
    setTimeout(() => res.end("second"), 2500); // a user port's idle connections close after 1 s
  });
  const { proxy } = await startProxy(t, ["sbx1"]);
  const reply = await send(proxy.port, { headers: routed("sbx1", upstream.port) });
  assert.deepEqual([reply.status, reply.text], [200, "first,second"]);
});
