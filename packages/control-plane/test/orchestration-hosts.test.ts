// Hosts: registration, placement over two real agents, retry when one dies, heartbeats that mark a
// silent host unhealthy and its sandboxes unknown (and restore them when it answers), drain, delete.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { repoRoot } from "../../host-agent/test/agent-harness.js";
import type { Team } from "../src/db/schema.js";
import {
  addAgent,
  removeAgent,
  restartAgent,
  skipAgent,
  startControlPlane,
  startManagedAgent,
  TEST_TEMPLATE,
  text,
  type ControlPlaneUnderTest,
  type ManagedAgent,
  codeOf,
} from "./orchestration-harness.js";

const POOL_A = "10.240.2.0/26";
const POOL_B = "10.240.3.0/26";
const TABLE_A = "wrenn_orch_host_a";
const TABLE_B = "wrenn_orch_host_b";

describe("hosts and placement over two agents", { skip: skipAgent }, () => {
  let cp: ControlPlaneUnderTest;
  let agentA: ManagedAgent;
  let agentB: ManagedAgent;
  let team: Team;
  const hostOf = new Map<string, () => ManagedAgent>();

  before(async () => {
    // Heartbeats are driven by hand (registry.heartbeat()) so each case decides when they happen.
    cp = await startControlPlane({ unhealthyAfterMisses: 2 });
    [agentA, agentB] = await Promise.all([startManagedAgent(POOL_A, TABLE_A), startManagedAgent(POOL_B, TABLE_B)]);
    team = await cp.newTeam();
  });

  after(async () => {
    await cp?.close();
    await Promise.all([agentA && removeAgent(agentA), agentB && removeAgent(agentB)]);
  });

  test("an agent registers with a one-time token and its agent token, which is stored sealed", async () => {
    const { hosts } = cp.orchestration;
    const { host: pending, registrationToken } = await hosts.createHost();
    assert.equal(pending.status, "pending");
    assert.equal(
      await codeOf(hosts.register(registrationToken, { address: agentA.address, agentToken: "wrong-token" })),
      "invalid_argument",
      "the agent must accept the token it is registered with",
    );
    const { host, hostToken } = await hosts.register(registrationToken, { address: agentA.address, agentToken: agentA.agent.token });
    assert.equal(host.id, pending.id);
    assert.equal(host.status, "ready");
    // What the agent's probe found: gvisor always here; qemu where build/vm is built (make test builds it).
    assert.deepEqual(host.runtimes, existsSync(path.join(repoRoot, "build", "vm", "guest.json")) ? ["gvisor", "qemu"] : ["gvisor"]);
    assert.ok(host.cpu > 0 && host.memoryMb > 0 && host.slots === 16, `capacity recorded: ${JSON.stringify(host)}`);
    assert.match(hostToken, /^wrn_host_/);
    assert.equal(await codeOf(hosts.register(registrationToken, { address: agentA.address, agentToken: agentA.agent.token })), "unauthenticated");
    const row = await cp.repos.hosts.get(host.id);
    const sealed = row?.agentTokenEncrypted ?? "";
    assert.match(sealed, /^v1:/);
    assert.ok(!sealed.includes(agentA.agent.token));
    assert.equal("agentTokenEncrypted" in host, false, "never shown");

    // The same agent added as a local host is the same host.
    assert.equal((await addAgent(cp, agentA)).id, host.id);
    const second = await addAgent(cp, agentB);
    assert.equal((await addAgent(cp, agentB)).id, second.id);
    hostOf.set(host.id, () => agentA);
    hostOf.set(second.id, () => agentB);
    const listed = await hosts.list();
    assert.deepEqual(listed.map((h) => h.status), ["ready", "ready"]);
    assert.ok(listed.every((h) => h.live && h.live.slotsTotal === 16));
    assert.deepEqual((await cp.repos.hostTemplates.hostsHolding(TEST_TEMPLATE)).sort(), [...hostOf.keys()].sort());
  });

  test("placement spreads sandboxes over the hosts", async () => {
    const { sandboxes } = cp.orchestration;
    const first = await sandboxes.create(team.id, { template: TEST_TEMPLATE, timeoutSec: 0 });
    const second = await sandboxes.create(team.id, { template: TEST_TEMPLATE, timeoutSec: 0 });
    try {
      assert.notEqual(first.hostId, second.hostId);
      for (const sandbox of [first, second]) {
        const onHost = await hostOf.get(sandbox.hostId!)!().agent.client.listSandboxes({});
        assert.deepEqual(onHost.sandboxes.map((s) => s.sandboxId), [sandbox.id]);
      }
    } finally {
      await Promise.all([first, second].map((sandbox) => sandboxes.destroy(team.id, sandbox.id)));
    }
  });

  test("a drained host gets no new sandboxes", async () => {
    const { sandboxes, hosts } = cp.orchestration;
    const [drainedId, otherId] = [...hostOf.keys()];
    assert.equal((await hosts.drain(drainedId!)).status, "draining");
    const placed = [];
    try {
      for (let i = 0; i < 2; i++) placed.push(await sandboxes.create(team.id, { template: TEST_TEMPLATE, timeoutSec: 0 }));
      assert.deepEqual(placed.map((s) => s.hostId), [otherId, otherId]);
    } finally {
      await Promise.all(placed.map((sandbox) => sandboxes.destroy(team.id, sandbox.id)));
      assert.equal((await hosts.undrain(drainedId!)).status, "ready");
    }
  });

  test("a create retries on another host when the chosen one is dead", async () => {
    const { sandboxes, placement } = cp.orchestration;
    const [best] = await placement.rank({ template: TEST_TEMPLATE, hostTemplateName: TEST_TEMPLATE, vcpus: 1, memoryMb: 512, diskSizeMb: 5120 });
    const victim = hostOf.get(best!.host.id)!();
    await victim.agent.kill(); // no heartbeat yet: the database still thinks it is ready
    const sandbox = await sandboxes.create(team.id, { template: TEST_TEMPLATE, timeoutSec: 0 });
    try {
      assert.notEqual(sandbox.hostId, best!.host.id);
      assert.equal(sandbox.status, "running");
      assert.equal(text((await sandboxes.exec(team.id, sandbox.id, { cmd: "echo", args: ["placed"] })).stdout), "placed\n");
    } finally {
      await sandboxes.destroy(team.id, sandbox.id);
      const restarted = await restartAgent(victim);
      if (victim === agentA) agentA = restarted;
      else agentB = restarted;
    }
    await cp.orchestration.hosts.heartbeat();
  });

  test("a silent host turns unhealthy and its sandboxes unknown, and both come back with a new agent on its data dir", async () => {
    const { sandboxes, hosts } = cp.orchestration;
    // Both sandboxes on host A: B is drained meanwhile.
    const [idA, idB] = [...hostOf.keys()];
    const onA = () => hostOf.get(idA!)!();
    await hosts.drain(idB!);
    const running = await sandboxes.create(team.id, { template: TEST_TEMPLATE, timeoutSec: 0 });
    const paused = await sandboxes.create(team.id, { template: TEST_TEMPLATE, timeoutSec: 0 });
    await hosts.undrain(idB!);
    try {
      assert.deepEqual([running.hostId, paused.hostId], [idA, idA]);
      await sandboxes.pause(team.id, paused.id);

      const crashed = onA();
      await crashed.agent.kill();
      await hosts.heartbeat();
      assert.equal((await hosts.get(idA!)).status, "ready", "one miss is not enough");
      await hosts.heartbeat();
      assert.equal((await hosts.get(idA!)).status, "unhealthy");
      assert.deepEqual(
        [(await sandboxes.get(team.id, running.id)).status, (await sandboxes.get(team.id, paused.id)).status],
        ["unknown", "unknown"],
      );
      assert.equal(await codeOf(sandboxes.exec(team.id, running.id, { cmd: "true" })), "unavailable");
      // New sandboxes go elsewhere while A is unhealthy.
      const elsewhere = await sandboxes.create(team.id, { template: TEST_TEMPLATE, timeoutSec: 0 });
      assert.equal(elsewhere.hostId, idB);
      await sandboxes.destroy(team.id, elsewhere.id);

      const revived = await restartAgent(crashed);
      if (crashed === agentA) agentA = revived;
      else agentB = revived;
      await hosts.heartbeat(); // ready again; the reconciler restores the sandboxes at once
      assert.equal((await hosts.get(idA!)).status, "ready");
      assert.equal((await sandboxes.get(team.id, running.id)).status, "running");
      assert.equal((await sandboxes.get(team.id, paused.id)).status, "paused");
      assert.equal(text((await sandboxes.exec(team.id, running.id, { cmd: "echo", args: ["survived"] })).stdout), "survived\n");
      await sandboxes.resume(team.id, paused.id);
    } finally {
      await sandboxes.destroy(team.id, running.id);
      await sandboxes.destroy(team.id, paused.id);
    }
  });

  test("deleting a host terminates its agent and stops its sandboxes", async () => {
    const { sandboxes, hosts } = cp.orchestration;
    const [idA, idB] = [...hostOf.keys()];
    await hosts.drain(idA!);
    const sandbox = await sandboxes.create(team.id, { template: TEST_TEMPLATE, timeoutSec: 0 });
    assert.equal(sandbox.hostId, idB);
    const doomed = hostOf.get(idB!)!();
    const exited = new Promise<void>((resolve) => doomed.agent.child.once("exit", () => resolve()));
    await hosts.delete(idB!);
    await exited;
    const stopped = await sandboxes.get(team.id, sandbox.id);
    assert.equal(stopped.status, "stopped");
    assert.equal(stopped.hostId, null);
    assert.equal(await codeOf(hosts.get(idB!)), "not_found");
    assert.deepEqual((await hosts.list()).map((h) => h.id), [idA]);
    await hosts.undrain(idA!);
  });
});
