// What the TTL reaper does when a sandbox's timeout runs out: pause it (the default, see also the
// TTL test in agent.test.ts) or, for a sandbox created with on_timeout KILL, destroy it and report
// it in ListSandboxes.exited — through the warm pool and across an agent restart too.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import { OnTimeout, type ListSandboxesResponse } from "@wrenn/proto/hostagent";
import { runCommand } from "../src/exec/command.js";
import { readRecord } from "../src/sandbox/record.js";
import { TEST_TEMPLATE, removeDataDir, skipAgent, startAgentProcess, waitForWarmPool, type AgentUnderTest } from "./agent-harness.js";

const POOL = "10.247.2.0/26";
const TABLE = "wrenn_hc2_ttl";

async function netnsNamed(fragment: string): Promise<string[]> {
  const out = await runCommand("ip", ["-json", "netns", "list"], { timeoutMs: 5000 });
  return (out.trim() ? (JSON.parse(out) as { name: string }[]) : []).map((n) => n.name).filter((n) => n.includes(fragment));
}

/** Sandbox directories whose record names this sandbox id. */
async function recordsWithId(agent: AgentUnderTest, sandboxId: string): Promise<string[]> {
  const sandboxesDir = path.join(agent.dataDir, "sandboxes");
  const found: string[] = [];
  for (const dir of existsSync(sandboxesDir) ? await readdir(sandboxesDir) : []) {
    const record = await readRecord(path.join(sandboxesDir, dir));
    if (record?.id === sandboxId) found.push(dir);
  }
  return found;
}

/** Lists until `done` holds for what the drained lists added up to; returns that sum. */
async function listUntil(agent: AgentUnderTest, what: string, done: (seen: { exited: Map<string, string>; autoPaused: Set<string>; last: ListSandboxesResponse }) => boolean, timeoutMs = 60_000) {
  const exited = new Map<string, string>();
  const autoPaused = new Set<string>();
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const last = await agent.client.listSandboxes({});
    for (const exit of last.exited) exited.set(exit.sandboxId, exit.reason);
    for (const id of last.autoPausedSandboxIds) autoPaused.add(id);
    const seen = { exited, autoPaused, last };
    if (done(seen)) return seen;
    if (Date.now() > deadline) throw new Error(`${what} within ${timeoutMs / 1000} s: ${JSON.stringify({ exited: [...exited], autoPaused: [...autoPaused] })}\n${agent.log().slice(-3000)}`);
    await sleep(200);
  }
}

describe("a sandbox's timeout action", { skip: skipAgent }, () => {
  let agent: AgentUnderTest;

  before(async () => {
    agent = await startAgentProcess({ pool: POOL, table: TABLE, args: ["--warm-pool", `${TEST_TEMPLATE}=1`] });
  });

  after(async () => {
    if (!agent) return;
    await agent.client.terminate({}).catch(() => undefined);
    await new Promise<void>((resolve) => (agent.child.exitCode !== null || agent.child.signalCode !== null ? resolve() : agent.child.once("exit", () => resolve())));
    await removeDataDir(agent.dataDir, agent.table);
  });

  test("on_timeout KILL destroys an idle sandbox and reports it exited, while the default pauses one", async () => {
    await waitForWarmPool(agent, TEST_TEMPLATE, 1);
    // The first create takes the warm sandbox: the action must follow it out of the pool.
    const killed = await agent.client.createSandbox({ sandboxId: "tokill", template: TEST_TEMPLATE, onTimeout: OnTimeout.KILL });
    assert.equal(killed.fromWarmPool, true);
    await agent.client.createSandbox({ sandboxId: "topause", template: TEST_TEMPLATE, memoryMb: 256 });
    const listed = await agent.client.listSandboxes({});
    assert.equal(listed.sandboxes.find((s) => s.sandboxId === "tokill")?.onTimeout, OnTimeout.KILL);
    assert.equal(listed.sandboxes.find((s) => s.sandboxId === "topause")?.onTimeout, OnTimeout.PAUSE, "unspecified means pause");

    // Timeouts start together only now (creates take their own time under load).
    await agent.client.setSandboxTimeout({ sandboxId: "tokill", timeoutSec: 2 });
    await agent.client.setSandboxTimeout({ sandboxId: "topause", timeoutSec: 2 });
    const seen = await listUntil(agent, "tokill exited and topause auto-paused", ({ exited, autoPaused }) => exited.has("tokill") && autoPaused.has("topause"));
    assert.match(seen.exited.get("tokill")!, /killed after its timeout \(2 s without activity\)/);
    assert.ok(!seen.autoPaused.has("tokill"), "killed, not paused");
    assert.ok(!seen.exited.has("topause"));
    const after = await agent.client.listSandboxes({});
    assert.equal(after.sandboxes.find((s) => s.sandboxId === "tokill"), undefined, "no longer listed");
    assert.equal(after.sandboxes.find((s) => s.sandboxId === "topause")?.status, "paused");
    // Nothing of it left on the host: its parts carry the warm sandbox's runtime name, so look for its record.
    assert.deepEqual(await recordsWithId(agent, "tokill"), [], "its sandbox directory is gone");
    await agent.client.destroySandbox({ sandboxId: "topause" });
  });

  test("the action is kept in the sandbox's record: an agent restarted meanwhile still kills it", async () => {
    await agent.client.createSandbox({ sandboxId: "survivor", template: TEST_TEMPLATE, memoryMb: 256, onTimeout: OnTimeout.KILL, timeoutSec: 0 });
    await agent.stop(); // SIGTERM: sandboxes keep running
    agent = await startAgentProcess({ pool: POOL, table: TABLE, dataDir: agent.dataDir });
    const listed = await agent.client.listSandboxes({});
    assert.equal(listed.sandboxes.find((s) => s.sandboxId === "survivor")?.onTimeout, OnTimeout.KILL);
    await agent.client.setSandboxTimeout({ sandboxId: "survivor", timeoutSec: 1 });
    const seen = await listUntil(agent, "survivor exited", ({ exited }) => exited.has("survivor"));
    assert.match(seen.exited.get("survivor")!, /killed after its timeout/);
    assert.deepEqual(await netnsNamed("survivor"), []);
    assert.ok(!existsSync(path.join(agent.dataDir, "sandboxes", "survivor")), "its directory is gone");
  });
});
