// What happens when a sandbox's timeout runs out, end to end (API → host agent's reaper →
// reconciler): /v1's `onTimeout` ("pause" by default, or "kill"), and E2B's semantics through the
// real e2b SDK — killed unless auto-pause was asked for.
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import { Sandbox, SandboxNotFoundError, type SandboxOpts } from "e2b";
import { startApi, type ApiUnderTest } from "./api-harness.js";
import { skipAgent, TEST_TEMPLATE, waitFor } from "./orchestration-harness.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const POOL = "10.247.1.0/24";
const TABLE = "wrenn_hc2_cp";
/** Idle seconds before the timeout runs out: short, yet longer than a create's own round trips. */
const TIMEOUT_SEC = 2;
/** The agent's reaper and the reconciler each run about every second; slow machines need more. */
const SETTLE_MS = 30_000;

describe("a sandbox's timeout: pause or kill", { skip: skipAgent }, () => {
  let stack: ApiUnderTest;
  let sdk: Pick<SandboxOpts, "apiUrl" | "apiKey" | "requestTimeoutMs">;
  const json = async (response: Response): Promise<Json> => (await response.json()) as Json;
  const state = async (id: string): Promise<string> => (await json(await stack.call(stack.teamA, "GET", `/v1/sandboxes/${id}`))).state as string;
  const becomes = (id: string, wanted: string) => waitFor(`sandbox ${id} to be ${wanted}`, async () => (await state(id)) === wanted, SETTLE_MS);

  before(async () => {
    stack = await startApi({ database: "pglite", agents: [{ pool: POOL, table: TABLE }] });
    sdk = { apiUrl: stack.url, apiKey: stack.teamA.key, requestTimeoutMs: 60_000 };
  });

  after(async () => {
    await stack?.close();
  });

  test("/v1: onTimeout kill ends the sandbox stopped; the default still pauses it; anything else is 400", async () => {
    const create = async (body: Json) => {
      const response = await stack.call(stack.teamA, "POST", "/v1/sandboxes", { template: TEST_TEMPLATE, timeoutSec: TIMEOUT_SEC, ...body });
      const created = await json(response);
      assert.equal(response.status, 201, JSON.stringify(created));
      return created.id as string;
    };
    const [killed, paused] = await Promise.all([create({ onTimeout: "kill" }), create({})]);
    await becomes(killed, "stopped");
    await becomes(paused, "paused");
    const row = await stack.repos.sandboxes.get(killed);
    assert.equal(row?.onTimeout, "kill");
    assert.ok(row?.endedAt, "a stopped sandbox has ended");
    assert.equal((await stack.repos.sandboxes.get(paused))?.onTimeout, "pause");
    const exec = await stack.call(stack.teamA, "POST", `/v1/sandboxes/${killed}/exec`, { cmd: "true" });
    assert.equal(exec.status, 404, "a stopped sandbox runs nothing");

    const bad = await stack.call(stack.teamA, "POST", "/v1/sandboxes", { template: TEST_TEMPLATE, onTimeout: "hibernate" });
    assert.equal(bad.status, 400);
    assert.match((await json(bad)).message, /onTimeout/);
    assert.equal((await stack.call(stack.teamA, "DELETE", `/v1/sandboxes/${paused}`)).status, 200);
  });

  test("the e2b SDK: a sandbox is gone after its timeout, one with autoPause ends paused and connect resumes it", async () => {
    const [killed, paused] = await Promise.all([
      Sandbox.create(TEST_TEMPLATE, { ...sdk, timeoutMs: TIMEOUT_SEC * 1000 }),
      Sandbox.create(TEST_TEMPLATE, { ...sdk, timeoutMs: TIMEOUT_SEC * 1000, lifecycle: { onTimeout: "pause" } }),
    ]);
    assert.equal((await killed.getInfo()).lifecycle?.onTimeout, "kill", "E2B's default");
    assert.equal((await paused.getInfo()).lifecycle?.onTimeout, "pause");

    await becomes(killed.sandboxId, "stopped");
    await assert.rejects(killed.getInfo(), SandboxNotFoundError);
    assert.equal(await killed.kill(), false, "nothing left to kill");
    await becomes(paused.sandboxId, "paused");
    assert.equal((await paused.getInfo()).state, "paused");
    const resumed = await Sandbox.connect(paused.sandboxId, { ...sdk, timeoutMs: 600_000 });
    const info = await resumed.getInfo();
    assert.equal(info.state, "running");
    assert.equal(info.lifecycle?.onTimeout, "pause", "connect keeps the choice");
    assert.equal(await resumed.kill(), true);
  });

  test("the e2b SDK: setTimeout pushes a kill further away", async () => {
    const sandbox = await Sandbox.create(TEST_TEMPLATE, { ...sdk, timeoutMs: 2 * TIMEOUT_SEC * 1000 });
    await sandbox.setTimeout(600_000);
    await sleep((2 * TIMEOUT_SEC + 3) * 1000);
    assert.equal((await sandbox.getInfo()).state, "running", "not killed at the first timeout");
    assert.equal((await sandbox.getInfo()).lifecycle?.onTimeout, "kill");
    assert.equal(await sandbox.kill(), true);
  });
});
