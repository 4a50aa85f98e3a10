// The agent client's unary calls (hosts/unary-call.ts: the Connect protocol's unary exchange made
// straight on the HTTP/2 session) against a real Connect server over h2c, connect-node's own
// handler as the agent runs it: answers, errors with their codes, deadlines and cancellation seen
// by the server, an agent that is not there, and a stream the server resets.
import assert from "node:assert/strict";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { HostAgentService } from "@wrenn/proto/hostagent";
import { agentError, openAgentClient } from "../src/hosts/agent-client.js";

describe("agent client: unary calls on the HTTP/2 session", () => {
  let server: http2.Http2Server;
  let address: string;
  const seen = { authorization: "", timeoutHeader: "", custom: "" };
  /** Resolves with the reason a slow call's handler saw its signal abort. */
  let cancelled: Promise<string> = Promise.resolve("");
  let onCancelled: (reason: string) => void = () => {};
  const expectCancel = () => (cancelled = new Promise((resolve) => (onCancelled = resolve)));

  /** Waits until `ctx` aborts, reporting it; answers only if it never does (it always should). */
  const slow = async (_request: unknown, ctx: HandlerContext) => {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 30_000);
      ctx.signal.addEventListener("abort", () => {
        clearTimeout(timer);
        onCancelled(String((ctx.signal.reason as Error | undefined)?.message ?? "aborted"));
        resolve();
      });
    });
    return {};
  };

  before(async () => {
    const handler = connectNodeAdapter({
      routes: (router) =>
        router.service(HostAgentService, {
          exec: (request, ctx) => {
            seen.authorization = ctx.requestHeader.get("authorization") ?? "";
            seen.timeoutHeader = ctx.requestHeader.get("connect-timeout-ms") ?? "";
            seen.custom = ctx.requestHeader.get("x-wrenn-test") ?? "";
            if (request.cmd === "missing") throw new ConnectError(`sandbox ${request.sandboxId} not found`, Code.NotFound);
            if (request.cmd === "full") throw new ConnectError("no room for 4 vCPUs", Code.ResourceExhausted);
            return { stdout: new TextEncoder().encode(`${request.cmd} ${request.args.join(" ")}\n`), exitCode: 7, error: "" };
          },
          pingSandbox: slow,
          terminate: () => {
            // The connection is torn down under the call: what a crashing agent's does.
            for (const session of sessions) session.destroy();
            return new Promise(() => {});
          },
        }),
    });
    server = http2.createServer(handler);
    server.on("session", (session) => sessions.add(session));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  const sessions = new Set<http2.ServerHttp2Session>();

  after(async () => {
    for (const session of sessions) session.destroy();
    await new Promise((resolve) => server.close(resolve));
  });

  /** `run` with a client of the test agent (the host token given), closed after. */
  async function withClient(token: string, run: (client: ReturnType<typeof openAgentClient>["client"]) => Promise<void>): Promise<void> {
    const { client, close } = openAgentClient({ address, token });
    try {
      await run(client);
    } finally {
      close();
    }
  }

  test("an answer comes back decoded, with the host's token and the deadline sent", async () => {
    await withClient("secret-token", async (client) => {
      const result = await client.exec({ sandboxId: "sb1", cmd: "echo", args: ["a", "b"] }, { timeoutMs: 4321, headers: { "x-wrenn-test": "yes" } });
      assert.equal(new TextDecoder().decode(result.stdout), "echo a b\n");
      assert.equal(result.exitCode, 7);
      assert.equal(seen.authorization, "Bearer secret-token");
      assert.equal(seen.timeoutHeader, "4321");
      assert.equal(seen.custom, "yes");
      // Many at once on the one connection.
      const many = await Promise.all(Array.from({ length: 20 }, (_, i) => client.exec({ sandboxId: "sb1", cmd: `c${i}` })));
      assert.deepEqual(many.map((r) => new TextDecoder().decode(r.stdout)), Array.from({ length: 20 }, (_, i) => `c${i} \n`));
    });
  });

  test("the agent's errors keep their Connect code and message", async () => {
    await withClient("t", async (client) => {
      const missing = await client.exec({ sandboxId: "sb9", cmd: "missing" }).then(() => assert.fail("answered"), (err: unknown) => err);
      assert.ok(missing instanceof ConnectError);
      assert.equal(missing.code, Code.NotFound);
      assert.equal(missing.rawMessage, "sandbox sb9 not found");
      assert.equal(agentError(missing, "h1").code, "not_found");
      const full = await client.exec({ sandboxId: "sb9", cmd: "full" }).then(() => assert.fail("answered"), (err: unknown) => err);
      assert.equal(agentError(full, "h1").code, "resource_exhausted");
      assert.match(agentError(full, "h1").message, /no room for 4 vCPUs/);
    });
  });

  test("a call past its deadline fails DeadlineExceeded, and the agent sees it cancelled", async () => {
    await withClient("t", async (client) => {
      expectCancel();
      const started = performance.now();
      const err = await client.pingSandbox({ sandboxId: "sb1" }, { timeoutMs: 300 }).then(() => assert.fail("answered"), (e: unknown) => e);
      assert.ok(err instanceof ConnectError);
      assert.equal(err.code, Code.DeadlineExceeded);
      assert.ok(performance.now() - started < 5_000);
      assert.ok(await Promise.race([cancelled.then(() => true), sleep(5_000, false)]), "the handler never saw its call end");
      assert.equal(agentError(err, "h1").code, "unavailable");
    });
  });

  test("an aborted signal cancels the call on the agent too; one aborted before is never sent", async () => {
    await withClient("t", async (client) => {
      expectCancel();
      const abort = new AbortController();
      const call = client.pingSandbox({ sandboxId: "sb1" }, { signal: abort.signal, timeoutMs: 30_000 });
      await sleep(100);
      abort.abort(new Error("the client disconnected"));
      const err = await call.then(() => assert.fail("answered"), (e: unknown) => e);
      assert.ok(err instanceof ConnectError);
      assert.equal(err.code, Code.Canceled);
      assert.ok(await Promise.race([cancelled.then(() => true), sleep(5_000, false)]), "the handler never saw its call cancelled");

      const before = seen.authorization;
      seen.authorization = "";
      const early = await client.exec({ sandboxId: "sb1", cmd: "echo" }, { signal: AbortSignal.abort(new Error("gone")) }).then(() => assert.fail("answered"), (e: unknown) => e);
      assert.equal((early as ConnectError).code, Code.Canceled);
      assert.equal(seen.authorization, "", "an aborted call reached the agent");
      seen.authorization = before;
    });
  });

  test("no agent listening, or its connection reset mid-call: unavailable", async () => {
    const probe = http2.createServer();
    await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
    const freePort = (probe.address() as AddressInfo).port;
    await new Promise((resolve) => probe.close(resolve));
    const nobody = openAgentClient({ address: `127.0.0.1:${freePort}`, token: "t" });
    try {
      const err = await nobody.client.exec({ sandboxId: "sb1", cmd: "echo" }, { timeoutMs: 5_000 }).then(() => assert.fail("answered"), (e: unknown) => e);
      assert.equal(agentError(err, "h1").code, "unavailable");
      assert.match(agentError(err, "h1").message, /host h1 is unavailable/);
    } finally {
      nobody.close();
    }
    await withClient("t", async (client) => {
      const err = await client.terminate({}, { timeoutMs: 5_000 }).then(() => assert.fail("answered"), (e: unknown) => e);
      assert.equal(agentError(err, "h1").code, "unavailable");
      // The next call opens a new connection and succeeds.
      const result = await client.exec({ sandboxId: "sb1", cmd: "again" });
      assert.equal(new TextDecoder().decode(result.stdout), "again \n");
    });
  });
});
