// The warm pool end to end, with real gVisor sandboxes: a matching create takes a pre-booted
// sandbox and makes it the one asked for; other shapes boot their own; a full host gives pooled
// sandboxes back before refusing; a restart or a template delete leaves nothing of them behind.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readFile, readdir } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { runCommand } from "../src/exec/command.js";
import { SlotAllocator } from "../src/sandbox/network/slots.js";
import type { SandboxRecord } from "../src/sandbox/record.js";
import { TEST_TEMPLATE, codeOf, removeDataDir, skipAgent, startAgentProcess, text, waitForWarmPool, type AgentUnderTest } from "./agent-harness.js";

const POOL = "10.220.3.0/28"; // four slots
const ARGS = ["--warm-pool", `${TEST_TEMPLATE}=2`];

const waitForWarm = (agent: AgentUnderTest, ready: number) => waitForWarmPool(agent, TEST_TEMPLATE, ready);

/** Every sandbox record on disk, warm ones included. */
async function records(agent: AgentUnderTest): Promise<SandboxRecord[]> {
  const dir = path.join(agent.dataDir, "sandboxes");
  const found: SandboxRecord[] = [];
  for (const name of await readdir(dir).catch(() => [])) {
    const raw = await readFile(path.join(dir, name, "sandbox.json"), "utf8").catch(() => undefined);
    if (raw) found.push(JSON.parse(raw) as SandboxRecord);
  }
  return found;
}

async function namespaces(): Promise<string[]> {
  const out = await runCommand("ip", ["-json", "netns", "list"], { timeoutMs: 5000 });
  return (out.trim() ? (JSON.parse(out) as { name: string }[]) : []).map((n) => n.name);
}

describe("a host agent with a warm pool", { skip: skipAgent }, () => {
  let agent: AgentUnderTest;
  /** Every runtime name a sandbox of this agent had: none may be left at the end. */
  const seen = new Set<string>();
  const remember = async () => {
    for (const record of await records(agent)) seen.add(record.runtimeId);
  };

  before(async () => {
    agent = await startAgentProcess({ pool: POOL, args: ARGS });
  });

  after(async () => {
    if (!agent) return;
    await remember().catch(() => undefined);
    await agent.client.terminate({}).catch(() => undefined);
    await new Promise<void>((resolve) => (agent.child.exitCode !== null ? resolve() : agent.child.once("exit", () => resolve())));
    const left = await namespaces();
    for (const runtimeId of seen) assert.ok(!left.includes(`wrenn-${runtimeId}`), `netns of ${runtimeId} left behind`);
    assert.deepEqual(await readdir(path.join(agent.dataDir, "sandboxes")), []);
    await removeDataDir(agent.dataDir, agent.table);
  });

  test("a matching create takes a pooled sandbox, named and configured as asked, and the pool refills", async () => {
    await waitForWarm(agent, 2);
    const pooled = (await records(agent)).filter((r) => r.warm).map((r) => r.runtimeId);
    assert.equal(pooled.length, 2);
    pooled.forEach((id) => seen.add(id));
    assert.deepEqual((await agent.client.listSandboxes({})).sandboxes, [], "pooled sandboxes are not listed");

    const created = await agent.client.createSandbox({
      sandboxId: "warm1",
      template: TEST_TEMPLATE,
      envVars: { GREETING: "hello from the pool" },
      metadata: { owner: "test" },
      envdAccessToken: "warm-token-1",
      denyOut: ["203.0.113.0/24"],
      timeoutSec: 600,
    });
    assert.equal(created.fromWarmPool, true);
    assert.match(created.envdVersion, /^\d+\.\d+\.\d+$/);
    const result = await agent.client.exec({ sandboxId: "warm1", cmd: "/bin/sh", args: ["-c", "echo $GREETING"] });
    assert.equal(text(result.stdout), "hello from the pool\n");
    const [listed] = (await agent.client.listSandboxes({})).sandboxes;
    assert.equal(listed?.sandboxId, "warm1");
    assert.deepEqual(listed?.metadata, { owner: "test" });
    assert.equal(listed?.timeoutSec, 600);

    const record = (await records(agent)).find((r) => r.id === "warm1")!;
    assert.ok(pooled.includes(record.runtimeId), "the sandbox is one of the pooled ones");
    assert.equal(record.warm, undefined);
    // envd now wants the token it was given on claim.
    const envs = await fetch(`http://${created.hostIp}:49983/envs`);
    assert.equal(envs.status, 401);
    // The egress rules asked for replaced the pooled sandbox's defaults.
    assert.match(await runCommand("nft", ["list", "table", "inet", agent.table], { timeoutMs: 5000 }), /203\.0\.113\.0\/24/);

    await waitForWarm(agent, 2);
    await remember();
    await agent.client.destroySandbox({ sandboxId: "warm1" });
    assert.ok(!existsSync(path.join(agent.dataDir, "sandboxes", record.runtimeId)));
    assert.ok(!(await namespaces()).includes(`wrenn-${record.runtimeId}`));
  });

  test("a pooled sandbox's envd answers only to its boot token; claimed without a token it is open, as asked", async () => {
    await waitForWarm(agent, 2);
    const pooled = (await records(agent)).filter((r) => r.warm);
    assert.equal(pooled.length, 2);
    for (const record of pooled) {
      seen.add(record.runtimeId);
      const address = new SlotAllocator(POOL).addresses(record.slot).sandboxAddress;
      // Anyone reaching the address of a sandbox nobody has claimed yet (a request meant for the
      // sandbox that had it before, say) is refused.
      assert.equal((await fetch(`http://${address}:49983/health`)).status, 204);
      assert.equal((await fetch(`http://${address}:49983/envs`)).status, 401, `pooled ${record.runtimeId} is open`);
      assert.ok(record.envdAccessToken.length >= 32, "the record keeps the boot token for a restarted agent");
    }
    const created = await agent.client.createSandbox({ sandboxId: "open1", template: TEST_TEMPLATE, envdAccessToken: "" });
    assert.equal(created.fromWarmPool, true);
    assert.equal((await fetch(`http://${created.hostIp}:49983/envs`)).status, 200, "claimed with no token: open");
    const result = await agent.client.exec({ sandboxId: "open1", cmd: "/bin/sh", args: ["-c", "echo ok"] });
    assert.equal(text(result.stdout), "ok\n");
    await remember();
    await agent.client.destroySandbox({ sandboxId: "open1" });
  });

  test("another shape boots its own, and a full host gives pooled sandboxes back before refusing", async () => {
    await waitForWarm(agent, 2);
    const ids = ["shape1", "shape2", "shape3", "shape4"];
    try {
      for (const sandboxId of ids) {
        const created = await agent.client.createSandbox({ sandboxId, template: TEST_TEMPLATE, memoryMb: 256 });
        assert.equal(created.fromWarmPool, false);
        await remember();
      }
      // Four slots: the two pooled sandboxes went back to make room; now the host is full.
      assert.equal((await agent.client.getHostInfo({})).warmPools[0]?.ready, 0);
      assert.equal(await codeOf(agent.client.createSandbox({ sandboxId: "shape5", template: TEST_TEMPLATE })), "ResourceExhausted");
      assert.ok(!existsSync(path.join(agent.dataDir, "sandboxes", "shape5")));
    } finally {
      for (const sandboxId of ids) await agent.client.destroySandbox({ sandboxId }).catch(() => undefined);
    }
    await waitForWarm(agent, 2); // refilled once there is room again
  });

  test("a restarted agent replaces the pooled sandboxes its predecessor left", async () => {
    await waitForWarm(agent, 2);
    const before = (await records(agent)).map((r) => r.runtimeId);
    before.forEach((id) => seen.add(id));
    await agent.kill();
    agent = await startAgentProcess({ pool: POOL, args: ARGS, dataDir: agent.dataDir });
    await waitForWarm(agent, 2);
    const after = (await records(agent)).map((r) => r.runtimeId);
    after.forEach((id) => seen.add(id));
    assert.equal(after.filter((id) => before.includes(id)).length, 0, "the old pooled sandboxes were removed, not reused");
    const left = await namespaces();
    for (const id of before) assert.ok(!left.includes(`wrenn-${id}`), `netns of ${id} left behind`);
  });

  test("deleting the pooled template gives its pooled sandboxes back first", async () => {
    await waitForWarm(agent, 2);
    await remember();
    await agent.client.deleteSnapshot({ name: TEST_TEMPLATE });
    assert.deepEqual(await records(agent), []);
    assert.equal((await agent.client.getHostInfo({})).warmPools[0]?.ready, 0);
    assert.equal(await codeOf(agent.client.createSandbox({ sandboxId: "gone1", template: TEST_TEMPLATE })), "NotFound");
  });
});
