// The SDK when things go wrong, against the real stack: retries of real transient failures (a
// port where the control plane is not listening yet, the create rate limit's 429), time limits,
// cancellation that ends the command in the sandbox, and errors that say what to do.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import { pino } from "pino";
import { buildApi } from "../../control-plane/src/api/server.js";
import { loadConfig } from "../../control-plane/src/config.js";
import {
  AuthenticationError,
  CommandTimeoutError,
  ConnectionError,
  NotFoundError,
  RateLimitError,
  Sandbox,
  TimeoutError,
  type ConnectionOptions,
  type SandboxInfo,
} from "../src/index.js";
import { skipAgent, startStack, TEST_TEMPLATE, waitFor, type ApiUnderTest } from "./sdk-harness.js";

const RATE_LIMIT = { max: 1, windowMs: 6000 };

/** A loopback port nobody listens on (for now). */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function firstPage(options: Parameters<typeof Sandbox.list>[0], connection: ConnectionOptions): Promise<SandboxInfo[]> {
  for await (const page of Sandbox.list(options, connection)) return page;
  return [];
}

describe("the SDK's retries, time limits, cancellation and errors", { skip: skipAgent }, () => {
  let stack: ApiUnderTest;
  let connection: ConnectionOptions;
  const created: Sandbox[] = [];

  /** A connection with a key of its own, so its creates have the whole rate budget. */
  async function freshKey(): Promise<ConnectionOptions> {
    const { secret } = await stack.repos.apiKeys.create({ teamId: stack.teamA.teamId, name: `sdk ${randomBytes(3).toString("hex")}` });
    return { apiUrl: stack.url, apiKey: secret };
  }

  async function newSandbox(using: ConnectionOptions = connection): Promise<Sandbox> {
    const sandbox = await Sandbox.create({ template: TEST_TEMPLATE, timeoutSec: 0 }, using);
    created.push(sandbox);
    return sandbox;
  }

  before(async () => {
    stack = await startStack(2, "sdkr", { sandboxCreateRateLimit: RATE_LIMIT });
    connection = { apiUrl: stack.url, apiKey: stack.teamA.key };
  });

  after(async () => {
    for (const sandbox of created) await sandbox.kill().catch(() => undefined);
    await stack?.close();
  });

  test("without an API key the error says to pass apiKey or set WRENN_API_KEY; WRENN_API_URL and WRENN_API_KEY are the defaults", async () => {
    const saved = { url: process.env.WRENN_API_URL, key: process.env.WRENN_API_KEY };
    try {
      delete process.env.WRENN_API_KEY;
      await assert.rejects(Sandbox.create({ template: TEST_TEMPLATE }), (err: unknown) => {
        assert.ok(err instanceof AuthenticationError);
        assert.equal(err.message, "no API key: pass apiKey or set WRENN_API_KEY");
        return true;
      });
      process.env.WRENN_API_URL = stack.url;
      process.env.WRENN_API_KEY = stack.teamA.key;
      assert.ok(Array.isArray(await firstPage({}, {})), "the environment's URL and key are used");
    } finally {
      for (const [name, value] of [["WRENN_API_URL", saved.url], ["WRENN_API_KEY", saved.key]] as const) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
  });

  test("a wrong key is AuthenticationError and says to check it; an unknown sandbox is NotFoundError", async () => {
    await assert.rejects(Sandbox.connect("abc123", {}, { apiUrl: stack.url, apiKey: "wrn_not_a_key" }), (err: unknown) => {
      assert.ok(err instanceof AuthenticationError, String(err));
      assert.equal(err.status, 401);
      assert.match(err.message, /check apiKey or WRENN_API_KEY$/);
      return true;
    });
    await assert.rejects(Sandbox.connect("nosuchsandbox0", {}, connection), (err: unknown) => {
      assert.ok(err instanceof NotFoundError, String(err));
      assert.equal(err.code, "not_found");
      assert.match(err.message, /nosuchsandbox0 not found/);
      return true;
    });
  });

  test("a create past the rate limit: 429 is RateLimitError without retries, and is retried after Retry-After by default", async () => {
    const own = await freshKey();
    await newSandbox(own); // the whole budget of this window
    await assert.rejects(Sandbox.create({ template: TEST_TEMPLATE }, { ...own, maxRetries: 0 }), (err: unknown) => {
      assert.ok(err instanceof RateLimitError, String(err));
      assert.equal(err.status, 429);
      assert.match(err.message, /Too many sandbox creates for this API key/);
      assert.ok(err.retryAfterMs !== undefined && err.retryAfterMs > 0, "the server's Retry-After is kept");
      return true;
    });
    // A deadline shorter than the wait: no pointless sleep, the 429 at once.
    const started = Date.now();
    await assert.rejects(Sandbox.create({ template: TEST_TEMPLATE, timeoutMs: 2000 }, own), RateLimitError);
    assert.ok(Date.now() - started < 2000);
    const waited = Date.now();
    const sandbox = await newSandbox(own);
    assert.equal((await sandbox.getInfo()).state, "running");
    assert.ok(Date.now() - waited >= 1000, "it waited for the window to pass");
  });

  test("calls to a port where the control plane is not listening yet are retried until it is", async () => {
    const port = await freePort();
    const apiUrl = `http://127.0.0.1:${port}`;
    // A second control plane API on the same database and hosts, as behind a load balancer.
    const second = await buildApi({
      repos: stack.repos,
      database: stack.database,
      logger: pino({ level: "silent" }),
      config: { ...loadConfig({}), sandboxCreateRateLimit: { max: 100, windowMs: 1000 } },
      services: { sandboxes: stack.orchestration.sandboxes, templates: stack.orchestration.templates, hosts: stack.orchestration.hosts },
    });
    try {
      const listing = firstPage({}, { apiUrl, apiKey: stack.teamA.key, maxRetries: 6 });
      // Creating is retried too: a refused connection never reached the server.
      const creating = Sandbox.create({ template: TEST_TEMPLATE, timeoutSec: 0 }, { apiUrl, apiKey: stack.teamA.key, maxRetries: 6 });
      await new Promise((resolve) => setTimeout(resolve, 400));
      await second.listen({ host: "127.0.0.1", port });
      assert.ok(Array.isArray(await listing));
      const sandbox = await creating;
      created.push(sandbox);
      assert.equal((await sandbox.getInfo()).state, "running");
    } finally {
      await second.close();
    }
    // Nobody listening at all: ConnectionError after the retries, naming the URL and what to check.
    await assert.rejects(firstPage({}, { apiUrl, apiKey: stack.teamA.key, maxRetries: 1 }), (err: unknown) => {
      assert.ok(err instanceof ConnectionError, String(err));
      assert.equal(
        err.message,
        `GET /v1/sandboxes: could not reach the Wrenn API at ${apiUrl} (ECONNREFUSED) after 2 attempts: is the control plane running? Check apiUrl or WRENN_API_URL`,
      );
      return true;
    });
  });

  test("an AbortSignal cancels a long commands.run, and the command ends in the sandbox", async () => {
    const sandbox = await newSandbox(await freshKey());
    const controller = new AbortController();
    const started = Date.now();
    await assert.rejects(
      sandbox.commands.run("echo started; exec sleep 3023", { signal: controller.signal, timeoutMs: 0, onStdout: () => controller.abort() }),
      (err: unknown) => (err as Error).name === "AbortError",
    );
    assert.ok(Date.now() - started < 10_000);
    await waitFor("the cancelled command to end in the sandbox", async () => !(await sandbox.commands.run("ps")).stdout.includes("sleep 3023"));

    // A signal aborted already, and one aborted while the SDK waits between retries.
    await assert.rejects(sandbox.getInfo({ signal: AbortSignal.abort() }), (err: unknown) => (err as Error).name === "AbortError");
    const dead = `http://127.0.0.1:${await freePort()}`;
    const waiting = Date.now();
    await assert.rejects(
      firstPage({ signal: AbortSignal.timeout(300) }, { apiUrl: dead, apiKey: stack.teamA.key, maxRetries: 50 }),
      (err: unknown) => (err as Error).name === "TimeoutError" && !(err instanceof TimeoutError),
      "the signal's own reason, not the SDK's",
    );
    assert.ok(Date.now() - waiting < 3000);
  });

  test("time limits: a command killed after timeoutMs keeps its output; a call past timeoutMs is TimeoutError (and a cut-short create leaves no sandbox)", async () => {
    const own = await freshKey();
    const sandbox = await newSandbox(own);
    const started = Date.now();
    await assert.rejects(sandbox.commands.run("echo partial; sleep 30", { timeoutMs: 1000 }), (err: unknown) => {
      assert.ok(err instanceof CommandTimeoutError, String(err));
      assert.equal(err.stdout, "partial\n");
      assert.match(err.message, /killed after its timeout .*: pass a larger timeoutMs/);
      return true;
    });
    assert.ok(Date.now() - started < 10_000);

    const purpose = `cut-${randomBytes(3).toString("hex")}`;
    await new Promise((resolve) => setTimeout(resolve, RATE_LIMIT.windowMs)); // a fresh window: no 429 in the way
    await assert.rejects(Sandbox.create({ template: TEST_TEMPLATE, metadata: { purpose }, timeoutMs: 100 }, own), (err: unknown) => {
      assert.ok(err instanceof TimeoutError, String(err));
      assert.equal(err.message, "POST /v1/sandboxes took longer than 100 ms: pass a larger timeoutMs (or requestTimeoutMs)");
      return true;
    });
    // The create was under way when the client left; give it the time it takes, then none is left.
    await new Promise((resolve) => setTimeout(resolve, 2000));
    await waitFor("the abandoned create to be rolled back", async () => (await firstPage({ metadata: { purpose } }, connection)).length === 0);
  });
});
