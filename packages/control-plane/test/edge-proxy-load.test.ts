// The edge proxy and the host agent's port proxy under concurrent load, end to end: real HTTP to
// the control plane, a real host agent, two gVisor sandboxes, each running a WebSocket / SSE / echo
// server (fixtures/load-echo-server.cjs on the `ws` package, on the Node in /opt/wrenn), and the
// official e2b SDK for envd. Many WebSockets, server streams and small calls at once: nothing is
// lost, mixed up between clients or sandboxes, or leaked; a client that cuts its sockets mid-stream
// disturbs no one else. No assertion on speed: every wait is generous.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { Sandbox, type SandboxOpts } from "e2b";
import { WebSocket } from "ws";
import { repoRoot } from "../../host-agent/test/agent-harness.js";
import { startApi, type ApiUnderTest } from "./api-harness.js";
import { BASH_TEMPLATE, skipBash, waitFor, type ManagedAgent } from "./orchestration-harness.js";

const POOL = "10.250.128.0/24";
const TABLE = "wrenn_hkd_load";
/** The SDK runs commands as `/bin/bash -l -c`: the busybox template with bash-static. */
const ENVD = 49983;
/** The port of the load server inside each sandbox. */
const SERVER_PORT = 9000;
const NODE_IN_SANDBOX = "/opt/wrenn/lib/ld-linux-x86-64.so.2 --library-path /opt/wrenn/lib /opt/wrenn/lib/node";
const SERVER_DIR = "/tmp/load";
const FIXTURE = path.join(path.dirname(fileURLToPath(import.meta.url)), "fixtures", "load-echo-server.cjs");
const WS_PACKAGE = path.join(repoRoot, "node_modules", "ws");

const skip = skipBash;

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

interface LoadServerStats {
  name: string;
  webSocketsOpen: number;
  webSocketsOpened: number;
  webSocketsClosed: number;
  streamsFinished: number;
  streamsCutShort: number;
}

interface Target {
  sandbox: Sandbox;
  /** The load server's name for itself, in every answer: a reply from the other sandbox shows. */
  name: string;
  /** Sizes of /tmp/info/<i> are `infoBase + i`. */
  infoBase: number;
}

/** `count` calls of `call`, at most `inFlight` at a time. */
async function inPool(count: number, inFlight: number, call: (index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < count) await call(next++);
  };
  await Promise.all(Array.from({ length: Math.min(inFlight, count) }, worker));
}

/**
 * Runs every labelled operation to its end, all at once; fails with every failure and with what is
 * still pending after `deadlineMs` (a hang shows as such, not as one client library's timeout).
 */
async function allOf(operations: ReadonlyArray<readonly [string, () => Promise<void>]>, deadlineMs: number): Promise<void> {
  const pending = new Set(operations.map(([label]) => label));
  const failures: string[] = [];
  const all = Promise.all(
    operations.map(async ([label, operation]) => {
      try {
        await operation();
      } catch (err) {
        failures.push(`${label}: ${(err as Error).message}`);
      } finally {
        pending.delete(label);
      }
    }),
  );
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<"late">((resolve) => (timer = setTimeout(() => resolve("late"), deadlineMs)));
  const outcome = await Promise.race([all, deadline]);
  clearTimeout(timer);
  if (outcome === "late") failures.push(`still pending after ${deadlineMs} ms: ${[...pending].join(", ")}`);
  assert.deepEqual(failures, [], `${failures.length} of ${operations.length} operations failed`);
}

/** This host's established TCP connections to `port` at `destination` (an address or a prefix). */
function connectionsTo(destination: string, port: number): number {
  const prefix = destination.includes("/") ? destination : `${destination}/32`; // ss reads a bare address as host:port
  const out = execFileSync("ss", ["-Htn", "state", "established", "dst", prefix, "dport", "=", `:${port}`], { encoding: "utf8" });
  return out.split("\n").filter((line) => line.trim() !== "").length;
}

/** The messages one WebSocket sends: text and binary alternately, mostly small, every 40th over 64 KiB. */
function messagesFor(count: number): Array<{ data: Buffer; binary: boolean }> {
  return Array.from({ length: count }, (_, i) => {
    const size = i % 40 === 39 ? 64 * 1024 + randomInt(1, 160 * 1024) : randomInt(1, 4096);
    const binary = i % 2 === 0;
    const data = binary ? randomBytes(size) : Buffer.from(randomBytes(Math.ceil(size / 2)).toString("hex").slice(0, size));
    return { data, binary };
  });
}

describe("the edge proxy under WebSocket and streaming load", { skip }, () => {
  let stack: ApiUnderTest;
  let port: number;
  let agent: ManagedAgent | undefined;
  let sdk: Pick<SandboxOpts, "apiUrl" | "sandboxUrl" | "apiKey" | "requestTimeoutMs">;
  let targets: Target[];

  const routeOf = (target: Target, sandboxPort: number, byHostName: boolean): Record<string, string> => ({
    ...(byHostName
      ? { host: `${sandboxPort}-${target.sandbox.sandboxId}.localhost:${port}` }
      : { "e2b-sandbox-id": target.sandbox.sandboxId, "e2b-sandbox-port": String(sandboxPort) }),
    "x-api-key": stack.teamA.key,
  });

  /** One HTTP exchange through the edge proxy; the whole body. */
  function send(options: { method?: string; path: string; headers: Record<string, string>; body?: Buffer; agent?: http.Agent }): Promise<{ status: number; text: string }> {
    const { method = "GET", path: requestPath, headers, body, agent: clientAgent } = options;
    return new Promise((resolve, reject) => {
      const req = http.request({ host: "127.0.0.1", port, method, path: requestPath, headers, agent: clientAgent ?? false }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("end", () => resolve({ status: res.statusCode!, text: Buffer.concat(chunks).toString() }));
        res.on("error", reject);
      });
      req.on("error", reject);
      req.end(body);
    });
  }

  async function statsOf(target: Target): Promise<LoadServerStats> {
    const reply = await send({ path: "/stats", headers: routeOf(target, SERVER_PORT, false) });
    assert.equal(reply.status, 200, reply.text);
    return JSON.parse(reply.text) as LoadServerStats;
  }

  /** A WebSocket to the load server that sends `count` messages (at most 32 unanswered) and checks each echo in order. */
  async function echoSession(target: Target, count: number, byHostName: boolean): Promise<void> {
    const messages = messagesFor(count);
    const socket = new WebSocket(`ws://127.0.0.1:${port}/ws`, { headers: routeOf(target, SERVER_PORT, byHostName), maxPayload: 1024 * 1024 });
    let received = 0;
    let sent = 0;
    await new Promise<void>((resolve, reject) => {
      const sendMore = () => {
        while (sent < messages.length && sent - received < 32) {
          const { data, binary } = messages[sent++]!;
          socket.send(data, { binary });
        }
      };
      socket.on("open", sendMore);
      socket.on("message", (data: Buffer, isBinary: boolean) => {
        const expected = messages[received]!;
        if (isBinary !== expected.binary || !data.equals(expected.data)) {
          reject(new Error(`${target.name}: echo ${received} differs (${data.length} bytes, binary ${isBinary}; sent ${expected.data.length}, binary ${expected.binary})`));
          socket.terminate();
          return;
        }
        if (++received === messages.length) return resolve();
        sendMore();
      });
      socket.on("error", reject);
      socket.on("close", (code) => reject(new Error(`${target.name}: closed (${code}) after ${received} of ${messages.length} echoes`)));
    });
    const closed = new Promise((resolve) => socket.once("close", resolve));
    socket.close();
    await closed;
  }

  /** A server-sent event stream from the load server; checks its whole body arrives, every event in order. */
  async function eventStream(target: Target, index: number, count: number): Promise<void> {
    const size = 20 + (index % 7) * 30;
    const reply = await send({ path: `/events/${index}?count=${count}&size=${size}`, headers: routeOf(target, SERVER_PORT, index % 2 === 0) });
    assert.equal(reply.status, 200, reply.text.slice(0, 200));
    const expected = Array.from({ length: count }, (_, i) => `id: ${i}\ndata: ${String(i).padStart(size, "x")}\n\n`).join("");
    assert.ok(reply.text === expected, `${target.name}: event stream ${index} arrived altered (${reply.text.length} of ${expected.length} chars)`);
  }

  /** A command whose output streams over a few seconds through the SDK; checks every line, in order. */
  async function commandStream(target: Target, index: number, lines: number): Promise<void> {
    const chunks: string[] = [];
    const result = await target.sandbox.commands.run(
      `for i in $(seq 1 ${lines}); do echo "${target.name}-${index}-$i"; if [ $((i % 40)) = 0 ]; then sleep 0.2; fi; done`,
      { onStdout: (data) => void chunks.push(data), timeoutMs: 120_000 },
    );
    const expected = Array.from({ length: lines }, (_, i) => `${target.name}-${index}-${i + 1}\n`).join("");
    assert.equal(result.exitCode, 0);
    assert.ok(result.stdout === expected, `${target.name}: command ${index}'s stdout arrived altered`);
    assert.ok(chunks.join("") === expected, `${target.name}: command ${index}'s onStdout chunks arrived altered`);
  }

  /** Small calls: SDK files.getInfo to envd and GET/POST to the load server, `inFlight` at a time, each answer checked against its call. */
  async function unaryBurst(infoCalls: number, serverCalls: number, inFlight: number): Promise<void> {
    const infos = inPool(infoCalls, inFlight, async (i) => {
      const target = targets[i % targets.length]!;
      const file = i % 20;
      const info = await target.sandbox.files.getInfo(`/tmp/info/${file}`);
      assert.deepEqual([info.name, info.size], [String(file), target.infoBase + file], `${target.name}: getInfo ${i}`);
    });
    const clientAgent = new http.Agent({ keepAlive: true, maxSockets: inFlight });
    const calls = inPool(serverCalls, inFlight, async (i) => {
      const target = targets[i % targets.length]!;
      const body = i % 2 === 0 ? undefined : randomBytes(randomInt(1, 2048));
      const reply = await send({
        method: body ? "POST" : "GET",
        path: `/call/${i}`,
        headers: { ...routeOf(target, SERVER_PORT, i % 3 === 0), ...(body ? { "content-type": "application/octet-stream" } : {}) },
        body,
        agent: clientAgent,
      });
      assert.equal(reply.status, 200, `${target.name}: call ${i}: ${reply.text}`);
      const answer = JSON.parse(reply.text) as Json;
      assert.deepEqual([answer.name, answer.path, answer.body], [target.name, `/call/${i}`, body?.toString("base64") ?? ""], `call ${i}`);
    });
    try {
      await Promise.all([infos, calls]);
    } finally {
      clientAgent.destroy();
    }
  }

  /** Connections the proxies hold: control plane → host's port proxy, port proxy → envd and → the load servers. */
  const proxyConnections = () => ({
    toHostProxy: connectionsTo("127.0.0.1", agent!.agent.proxyPort),
    toEnvd: connectionsTo(POOL, ENVD),
    toServers: connectionsTo(POOL, SERVER_PORT),
  });

  before(async () => {
    stack = await startApi({ database: "pglite", agents: [{ pool: POOL, table: TABLE, bashTemplate: true }] });
    port = Number(new URL(stack.url).port);
    agent = stack.agents[0]!;
    sdk = { apiUrl: stack.url, sandboxUrl: stack.url, apiKey: stack.teamA.key, requestTimeoutMs: 180_000 };

    const sandboxes = await Promise.all([0, 1].map(() => Sandbox.create(BASH_TEMPLATE, { ...sdk, timeoutMs: 900_000 })));
    targets = sandboxes.map((sandbox, index) => ({ sandbox, name: `sandbox${index}`, infoBase: index * 100 }));
    const wsFiles = ["package.json", "index.js", ...readdirSync(path.join(WS_PACKAGE, "lib")).map((file) => `lib/${file}`)];
    await Promise.all(
      targets.map(async (target) => {
        await target.sandbox.files.write([
          { path: `${SERVER_DIR}/server.cjs`, data: readFileSync(FIXTURE, "utf8") },
          ...wsFiles.map((file) => ({ path: `${SERVER_DIR}/node_modules/ws/${file}`, data: readFileSync(path.join(WS_PACKAGE, file), "utf8") })),
        ]);
        await target.sandbox.commands.run(
          `mkdir -p /tmp/info && for i in $(seq 0 19); do head -c $((i + ${target.infoBase})) /dev/zero > /tmp/info/$i; done; ` +
            `(cd ${SERVER_DIR} && ${NODE_IN_SANDBOX} server.cjs ${SERVER_PORT} ${target.name} > server.log 2>&1 &)`,
        );
        await waitFor(`the load server in ${target.name}`, async () => {
          const reply = await send({ path: "/stats", headers: routeOf(target, SERVER_PORT, false) });
          return reply.status === 200;
        });
      }),
    );
  });

  after(async () => {
    // Connections the test's HTTP clients opened and never sent a request on held the server's
    // close for its headers timeout (60 s) before the API closed them after a grace (server.ts).
    const closing = Date.now();
    await stack?.close();
    assert.ok(Date.now() - closing < 30_000, `the API took ${Date.now() - closing} ms to close`);
  });

  test(
    "40 WebSockets, 30 server streams and 800 small calls at once: every message arrives, in order, intact, and every connection closes after",
    { timeout: 240_000 },
    async (t) => {
      const before = proxyConnections();
      const statsBefore = await Promise.all(targets.map(statsOf));
      const peak = { toHostProxy: 0, toEnvd: 0, toServers: 0 };
      const started = Date.now();
      const sampler = setInterval(() => {
        const now = proxyConnections();
        for (const key of Object.keys(peak) as Array<keyof typeof peak>) peak[key] = Math.max(peak[key], now[key]);
      }, 250);
      try {
        await allOf(
          [
            ...Array.from({ length: 40 }, (_, i) => [`WebSocket ${i}`, () => echoSession(targets[i % 2]!, 200, i % 4 < 2)] as const),
            ...Array.from({ length: 20 }, (_, i) => [`command ${i}`, () => commandStream(targets[i % 2]!, i, 160)] as const),
            ...Array.from({ length: 10 }, (_, i) => [`event stream ${i}`, () => eventStream(targets[i % 2]!, i, 300)] as const),
            ["the small calls", () => unaryBurst(500, 300, 50)] as const,
          ],
          150_000,
        );
        t.diagnostic(`the load took ${Date.now() - started} ms`);
      } finally {
        clearInterval(sampler);
      }
      t.diagnostic(`connections before ${JSON.stringify(before)}, at the peak ${JSON.stringify(peak)}`);

      // Every WebSocket closed by its client was closed upstream too: the servers saw them all go.
      await waitFor("the load servers to see every WebSocket closed", async () => {
        const stats = await Promise.all(targets.map(statsOf));
        return stats.every((s) => s.webSocketsOpen === 0) || undefined;
      }, 30_000);
      const statsAfter = await Promise.all(targets.map(statsOf));
      for (const [index, stats] of statsAfter.entries()) {
        assert.equal(stats.webSocketsOpened - statsBefore[index]!.webSocketsOpened, 20, `${stats.name}: WebSockets opened`);
        assert.equal(stats.webSocketsClosed - statsBefore[index]!.webSocketsClosed, 20, `${stats.name}: WebSockets closed`);
        assert.equal(stats.streamsFinished - statsBefore[index]!.streamsFinished, 5, `${stats.name}: event streams finished`);
        assert.equal(stats.streamsCutShort - statsBefore[index]!.streamsCutShort, 0, `${stats.name}: event streams cut short`);
      }
      // Kept-alive connections idle out (1 s to a user's server, 30 s to envd and to the host's
      // proxy): none opened under the load outlives it.
      await waitFor(
        "the proxies' connections to fall back",
        async () => {
          const now = proxyConnections();
          return (now.toHostProxy === 0 && now.toServers === 0 && now.toEnvd <= before.toEnvd) || undefined;
        },
        90_000,
      ).catch((err: Error) => {
        throw new Error(`${err.message}: still open ${JSON.stringify(proxyConnections())}, before the load ${JSON.stringify(before)}`);
      });
    },
  );

  test("a client that cuts its WebSockets and streams mid-way disturbs no one else, and the sandbox sees them closed", { timeout: 180_000 }, async () => {
    const statsBefore = await Promise.all(targets.map(statsOf));
    const serversBefore = connectionsTo(POOL, SERVER_PORT);

    /** A WebSocket that sends, reads a few echoes, then starts a 1 MiB message and drops the TCP connection under it. */
    async function cutWebSocket(target: Target, index: number): Promise<void> {
      const socket = new WebSocket(`ws://127.0.0.1:${port}/ws`, { headers: routeOf(target, SERVER_PORT, index % 2 === 0) });
      socket.on("error", () => {});
      await new Promise<void>((resolve, reject) => {
        let echoes = 0;
        socket.on("open", () => {
          for (let i = 0; i < 100; i++) socket.send(randomBytes(randomInt(1, 8192)));
        });
        socket.on("message", () => {
          if (++echoes !== 10) return;
          socket.send(randomBytes(1024 * 1024));
          setImmediate(() => {
            socket.terminate();
            resolve();
          });
        });
        socket.on("close", () => (echoes < 10 ? reject(new Error(`${target.name}: closed after ${echoes} echoes`)) : undefined));
      });
    }

    /** An event stream dropped after its first few kilobytes. */
    function cutEventStream(target: Target, index: number): Promise<void> {
      return new Promise((resolve, reject) => {
        const req = http.get(
          { host: "127.0.0.1", port, path: `/events/cut${index}?count=2000&size=100`, headers: routeOf(target, SERVER_PORT, false), agent: false },
          (res) => {
            let bytes = 0;
            res.on("data", (chunk: Buffer) => {
              bytes += chunk.length;
              if (bytes >= 4096 && !res.destroyed) {
                res.destroy();
                resolve();
              }
            });
            res.on("end", () => reject(new Error("the stream to be cut ended first")));
          },
        );
        req.on("error", () => {});
      });
    }

    /** A command whose output stream the client disconnects from after its first lines, then kills. */
    async function cutCommandStream(target: Target): Promise<void> {
      let lines = 0;
      const handle = await target.sandbox.commands.run("for i in $(seq 1 200); do echo $i; sleep 0.05; done", {
        background: true,
        onStdout: (data) => void (lines += data.split("\n").length - 1),
      });
      await waitFor("the first lines of the command", async () => lines >= 3 || undefined, 60_000);
      await handle.disconnect();
      await handle.kill();
    }

    await allOf(
      [
        // The well-behaved clients...
        ...Array.from({ length: 10 }, (_, i) => [`WebSocket ${i}`, () => echoSession(targets[i % 2]!, 150, i % 4 < 2)] as const),
        ...Array.from({ length: 4 }, (_, i) => [`command ${i}`, () => commandStream(targets[i % 2]!, 100 + i, 120)] as const),
        ...Array.from({ length: 4 }, (_, i) => [`event stream ${i}`, () => eventStream(targets[i % 2]!, 100 + i, 300)] as const),
        // ...and the one cutting its connections at the same time.
        ...Array.from({ length: 10 }, (_, i) => [`cut WebSocket ${i}`, () => cutWebSocket(targets[i % 2]!, i)] as const),
        ...Array.from({ length: 4 }, (_, i) => [`cut event stream ${i}`, () => cutEventStream(targets[i % 2]!, i)] as const),
        ...targets.map((target) => [`cut command in ${target.name}`, () => cutCommandStream(target)] as const),
      ],
      120_000,
    );

    await waitFor("the load servers to see every WebSocket and every cut stream closed", async () => {
      const stats = await Promise.all(targets.map(statsOf));
      return stats.every((s, i) => s.webSocketsOpen === 0 && s.streamsCutShort - statsBefore[i]!.streamsCutShort === 2) || undefined;
    }, 30_000).catch(async (err: Error) => {
      throw new Error(`${err.message}: ${JSON.stringify(await Promise.all(targets.map(statsOf)))}`);
    });
    const statsAfter = await Promise.all(targets.map(statsOf));
    for (const [index, stats] of statsAfter.entries()) {
      assert.equal(stats.webSocketsOpened - statsBefore[index]!.webSocketsOpened, 10, `${stats.name}: WebSockets opened`);
      assert.equal(stats.streamsFinished - statsBefore[index]!.streamsFinished, 2, `${stats.name}: event streams finished`);
    }
    await waitFor(
      "the port proxy's connections to the load servers to fall back",
      async () => connectionsTo(POOL, SERVER_PORT) <= serversBefore || undefined,
      30_000,
    );
  });
});
