// The edge proxy's direct route to envd (edge-proxy.ts, sandbox-locator.ts): with the host agent on
// this machine, envd calls go to the sandbox's own address, not through the host's port proxy
// (edge-proxy.test.ts tests that path, with the direct route off). What must hold on the direct
// route: it is really taken; a location gone stale, its address since given to another sandbox,
// never reaches that sandbox; direct traffic keeps the sandbox alive and idleness still pauses it;
// an exchange in flight ends when the sandbox is killed.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { loadConfig } from "../src/config.js";
import { startApi, type ApiUnderTest } from "./api-harness.js";
import { connectEnvelope, skipAgent, startProcessRequest, TEST_TEMPLATE, text, waitFor } from "./orchestration-harness.js";

const AGENT = { pool: "10.235.0.0/26", table: "wrenn_t_direct" };
const ENVD = 49983;

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

interface Reply {
  status: number;
  text: string;
}

describe("the edge proxy straight to envd", { skip: skipAgent }, () => {
  let stack: ApiUnderTest;
  let port: number;

  /** One request to the API's port for a sandbox's envd, by E2B's headers. */
  function toEnvd(sandboxId: string, options: { method?: string; path: string; headers?: Record<string, string>; body?: string | Buffer }): Promise<Reply> {
    const { method = "POST", path, headers = {}, body } = options;
    return new Promise((resolve, reject) => {
      const req = http.request(
        { host: "127.0.0.1", port, method, path, headers: { "e2b-sandbox-id": sandboxId, "e2b-sandbox-port": String(ENVD), ...headers }, agent: false },
        (res) => {
          let reply = "";
          res.setEncoding("utf8");
          res.on("data", (chunk: string) => (reply += chunk));
          res.on("end", () => resolve({ status: res.statusCode!, text: reply }));
        },
      );
      req.on("error", reject);
      req.end(body);
    });
  }

  const withKey = () => ({ "x-api-key": stack.teamA.key });
  /** A Connect JSON unary Stat: the cheapest envd call that needs the token. */
  const stat = (sandboxId: string, path = "/") =>
    toEnvd(sandboxId, {
      path: "/filesystem.Filesystem/Stat",
      headers: { ...withKey(), "content-type": "application/json" },
      body: JSON.stringify({ path }),
    });

  async function create(timeoutSec: number): Promise<{ id: string; envdAccessToken: string }> {
    const response = await stack.call(stack.teamA, "POST", "/v1/sandboxes", { template: TEST_TEMPLATE, timeoutSec });
    const created = (await response.json()) as Json;
    assert.equal(response.status, 201, JSON.stringify(created));
    return { id: created.id, envdAccessToken: created.envdAccessToken };
  }

  /** The sandbox's address and status, as its host says. */
  async function onHost(sandboxId: string): Promise<{ address: string; status: string } | undefined> {
    const listed = await stack.agents[0]!.agent.client.listSandboxes({});
    const found = listed.sandboxes.find((s) => s.sandboxId === sandboxId);
    return found && { address: found.hostIp, status: found.status };
  }

  /** Established connections this process holds to `destination`:`port` (an address or a CIDR). */
  function ourConnections(destination: string, dport: number): string[] {
    const prefix = destination.includes("/") ? destination : `${destination}/32`;
    const out = execFileSync("ss", ["-Htnp", "state", "established", "dst", prefix, "dport", "=", `:${dport}`], { encoding: "utf8" });
    return out
      .split("\n")
      .filter((line) => line.includes(`pid=${process.pid},`))
      .map((line) => line.trim().split(/\s+/)[2]!); // the local address:port
  }

  before(async () => {
    // Locations trusted for a minute and no reconciler passes: a location can be made stale on purpose.
    stack = await startApi({ database: "pglite", agents: [AGENT], config: { edgeLocationTtlMs: 60_000 }, reconcileIntervalMs: 600_000 });
    port = Number(new URL(stack.url).port);
  });

  after(async () => {
    await stack?.close();
  });

  test("WRENN_EDGE_DIRECT turns the direct route off; it is on by default", () => {
    assert.equal(loadConfig({}).edgeDirect, true);
    assert.equal(loadConfig({ WRENN_EDGE_DIRECT: "false" }).edgeDirect, false);
    assert.equal(loadConfig({ WRENN_EDGE_DIRECT: "0" }).edgeDirect, false);
    assert.throws(() => loadConfig({ WRENN_EDGE_DIRECT: "sometimes" }), /WRENN_EDGE_DIRECT/);
  });

  test("envd calls go to the sandbox's address on one kept-alive connection, none through the host's port proxy", async () => {
    const sandbox = await create(0);
    try {
      const { address } = (await onHost(sandbox.id))!;
      const proxyPort = stack.agents[0]!.agent.proxyPort;
      const [toHostBefore, toEnvdBefore] = [ourConnections("127.0.0.1", proxyPort), ourConnections(address, ENVD)];
      for (let i = 0; i < 5; i++) {
        const reply = await stat(sandbox.id);
        assert.equal(reply.status, 200, reply.text);
        assert.equal(JSON.parse(reply.text).entry.path, "/");
      }
      const toHost = ourConnections("127.0.0.1", proxyPort).filter((local) => !toHostBefore.includes(local));
      const toEnvd = ourConnections(address, ENVD).filter((local) => !toEnvdBefore.includes(local));
      assert.deepEqual(toHost, [], "an envd call went through the host's port proxy");
      assert.equal(toEnvd.length, 1, `five calls, one kept-alive connection to envd: ${JSON.stringify(toEnvd)}`);
    } finally {
      await stack.call(stack.teamA, "DELETE", `/v1/sandboxes/${sandbox.id}`);
    }
  });

  test("a stale location (its sandbox gone, its address given to another) never reaches the other sandbox", async () => {
    const agent = stack.agents[0]!.agent;
    const a = await create(0);
    assert.equal((await stat(a.id)).status, 200); // A's location is now cached, direct
    const { address } = (await onHost(a.id))!;
    // Behind the control plane's back (no reconciler pass will tell it): A goes, B takes its address.
    await agent.client.destroySandbox({ sandboxId: a.id });
    const b = `stale${randomBytes(6).toString("hex")}`.slice(0, 16);
    const created = await agent.client.createSandbox({ sandboxId: b, template: TEST_TEMPLATE, envdAccessToken: "the-other-sandbox" });
    try {
      assert.equal(created.hostIp, address, "the new sandbox got the old one's address (lowest free slot)");
      // Every kind of envd request for A: a Connect call, a small upload, one too large to replay,
      // a signed URL. Each is refused by B's envd (not its token) or answered by A's host: never served.
      const small = await toEnvd(a.id, { path: "/files?path=/tmp/planted-small", headers: { ...withKey(), "content-type": "application/octet-stream" }, body: "from A's client" });
      const large = await toEnvd(a.id, { path: "/files?path=/tmp/planted-large", headers: { ...withKey(), "content-type": "application/octet-stream" }, body: randomBytes(200 * 1024) });
      const expiration = Math.floor(Date.now() / 1000) + 600;
      const signature = "v1_" + createHash("sha256").update(`/tmp/planted-signed:write:user:${a.envdAccessToken}:${expiration}`).digest("base64").replace(/=+$/, "");
      const signed = await toEnvd(a.id, {
        path: `/files?path=/tmp/planted-signed&username=user&signature=${encodeURIComponent(signature)}&signature_expiration=${expiration}`,
        headers: { "content-type": "application/octet-stream" },
        body: "signed by A's token",
      });
      const started = await toEnvd(a.id, {
        path: "/process.Process/Start",
        headers: { ...withKey(), "content-type": "application/connect+json", "connect-protocol-version": "1" },
        body: connectEnvelope({ process: { cmd: "/bin/sh", args: ["-c", "touch /tmp/planted-start"] } }),
      });
      const statted = await stat(a.id);
      for (const [what, reply] of Object.entries({ small, large, signed, started, statted })) {
        assert.ok(reply.status === 502 || reply.status === 401, `${what}: ${reply.status} ${reply.text}`);
      }
      // The replayable ones went on through A's host, which says A is gone.
      assert.match(JSON.parse(statted.text).message, /not running/);
      assert.match(JSON.parse(small.text).message, /not running/);
      const listing = await agent.client.exec({ sandboxId: b, cmd: "/bin/sh", args: ["-c", "ls /tmp /home/user 2>/dev/null"] });
      assert.doesNotMatch(text(listing.stdout), /planted/, "a request meant for A reached B");
    } finally {
      await agent.client.destroySandbox({ sandboxId: b });
      await stack.call(stack.teamA, "DELETE", `/v1/sandboxes/${a.id}`);
    }
  });

  test("direct traffic keeps a sandbox alive past its timeout; idle, it pauses on time", async () => {
    const sandbox = await create(10);
    try {
      const { address } = (await onHost(sandbox.id))!;
      const started = Date.now();
      let lastCallAt = 0;
      while (Date.now() - started < 14_000) {
        await sleep(1000);
        lastCallAt = Date.now();
        assert.equal((await stat(sandbox.id)).status, 200);
      }
      assert.ok(ourConnections(address, ENVD).length > 0, "the calls did not go direct");
      assert.equal((await onHost(sandbox.id))?.status, "running", "paused although busy: the host never heard of the traffic");
      await waitFor("the idle sandbox to pause", async () => (await onHost(sandbox.id))?.status === "paused", 30_000);
      // The host hears of the last call when the proxy sees it or at the end of its interval, both
      // after lastCallAt (taken before the call was sent), so its 10 s run from after lastCallAt.
      const idle = Date.now() - lastCallAt;
      assert.ok(idle >= 10_000, `paused ${idle} ms after the last call was sent, before its 10 s timeout`);
    } finally {
      await stack.call(stack.teamA, "DELETE", `/v1/sandboxes/${sandbox.id}`);
    }
  });

  test("a stream in flight on the direct route ends when the sandbox is killed", async () => {
    const sandbox = await create(0);
    const res = await startProcessRequest(port, { "e2b-sandbox-id": sandbox.id, "e2b-sandbox-port": String(ENVD), ...withKey() }, "sleep 120");
    assert.equal(res.statusCode, 200);
    const ended = new Promise<number>((resolve) => {
      res.on("data", () => undefined);
      res.once("close", () => resolve(Date.now()));
    });
    await sleep(500); // the start event has come; the command sleeps
    const killedAt = Date.now();
    const killed = await stack.call(stack.teamA, "DELETE", `/v1/sandboxes/${sandbox.id}`);
    assert.ok(killed.status < 300, `kill: ${killed.status}`);
    const endedAt = await Promise.race([ended, sleep(10_000).then(() => undefined)]);
    assert.ok(endedAt !== undefined, "the stream outlived its sandbox by 10 s");
    assert.ok(endedAt - killedAt < 10_000);
  });
});
