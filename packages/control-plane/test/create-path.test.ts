// What keeps the database off a create's and an exec's path without losing anything: audit entries
// written beside the work and taken back when it fails, the `running` mark sent after the caller's
// answer (asked again when refused; this control plane's reads wait for it) and committed without
// waiting for the disk, and the reconciler settling a `starting` row no create works on any more.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { sql } from "drizzle-orm";
import type { NewAuditEntry, PendingAudit } from "../src/db/audit.js";
import type { Team } from "../src/db/schema.js";
import { STALE_STARTING_MS } from "../src/orchestration/reconciler.js";
import { newSandboxId } from "../src/sandboxes/service.js";
import { transitionSandbox } from "../src/sandboxes/transitions.js";
import {
  skipAgent,
  TEST_TEMPLATE,
  text,
  waitFor,
  codeOf,
  type ControlPlaneUnderTest,
  type ManagedAgent,
  startOneHost,
  stopOneHost,
} from "./orchestration-harness.js";

const POOL = "10.253.0.0/26";
const TABLE = "wrenn_orch_cpath";

/** A request's pending entry, as the API hands it to the service; `wasWritten` tells whether the service said so. */
function pending(team: Team, action: string, status: number): PendingAudit & { wasWritten: boolean } {
  return {
    wasWritten: false,
    entryFor: (resourceId: string): NewAuditEntry => ({ teamId: team.id, actorType: "system", action, resourceType: "sandbox", resourceId, details: { status } }),
    written() {
      this.wasWritten = true;
    },
  };
}

describe("the create and exec paths", { skip: skipAgent }, () => {
  let cp: ControlPlaneUnderTest;
  let managed: ManagedAgent;
  let hostId: string;
  let team: Team;

  before(async () => ({ cp, managed, hostId, team } = await startOneHost(POOL, TABLE)));
  after(() => stopOneHost(cp, managed));

  const onHost = async () => (await managed.agent.client.listSandboxes({})).sandboxes.map((s) => s.sandboxId);
  const entries = async (action: string, resourceId: string) =>
    (await cp.repos.audit.list(team.id, { action })).filter((entry) => entry.resourceId === resourceId);

  test("a create's entry is written with its row; a create the caller left takes it back and leaves nothing", async () => {
    const { sandboxes } = cp.orchestration;
    const audit = pending(team, "sandbox.create", 201);
    const created = await sandboxes.create(team.id, { template: TEST_TEMPLATE, timeoutSec: 0 }, { audit });
    assert.equal(created.status, "running");
    assert.ok(audit.wasWritten);
    assert.equal((await entries("sandbox.create", created.id)).length, 1);
    // This control plane's reads wait for the mark, whose commit did not wait for the disk; then
    // any other reader sees it too.
    const read = await sandboxes.get(team.id, created.id);
    assert.equal(read.status, "running");
    assert.equal(read.hostIp, created.hostIp);
    assert.equal((await cp.repos.sandboxes.get(created.id))?.status, "running");
    await sandboxes.destroy(team.id, created.id);

    // The caller goes away once the row (and so the entry) is written, while the host works.
    const left = pending(team, "sandbox.create", 201);
    const controller = new AbortController();
    const marker = `left-${Date.now()}`;
    const creating = sandboxes.create(team.id, { template: TEST_TEMPLATE, timeoutSec: 0, metadata: { marker } }, { audit: left, signal: controller.signal });
    const id = await waitFor("the row of the create", async () => (await sandboxes.list(team.id, { metadata: { marker } })).sandboxes[0]?.id, 30_000);
    controller.abort(new Error("the test's caller left"));
    await assert.rejects(creating);
    assert.equal(left.wasWritten, false);
    assert.deepEqual(await entries("sandbox.create", id), [], "the entry was taken back");
    assert.ok(!(await onHost()).includes(id), "nothing left on the host");
    assert.equal((await cp.repos.sandboxes.get(id))?.status, "stopped");
  });

  test("a running mark the database refuses is asked again: the caller's sandbox runs on and is kept", async () => {
    const { sandboxes } = cp.orchestration;
    const { db } = cp.database;
    // The first two tries are refused (a sequence counts them: it is not rolled back with them).
    await db.execute(sql`create sequence wrenn_test_refusals`);
    await db.execute(
      sql`create function wrenn_test_refuse_running() returns trigger language plpgsql as $$ begin if nextval('wrenn_test_refusals') <= 2 then raise exception 'running refused by the test'; end if; return new; end $$`,
    );
    await db.execute(
      sql`create trigger wrenn_test_refuse_running before update on sandboxes for each row when (new.status = 'running' and new.metadata->>'refuse' = 'running') execute function wrenn_test_refuse_running()`,
    );
    try {
      const audit = pending(team, "sandbox.create", 201);
      const created = await sandboxes.create(team.id, { template: TEST_TEMPLATE, timeoutSec: 0, metadata: { refuse: "running" } }, { audit });
      assert.equal(created.status, "running");
      assert.ok(audit.wasWritten, "the create happened: its entry stands");
      assert.equal(text((await sandboxes.exec(team.id, created.id, { cmd: "/bin/echo", args: ["meanwhile"] })).stdout), "meanwhile\n", "usable while its mark is retried");
      // The read waits for the third try, which lands.
      const read = await sandboxes.get(team.id, created.id);
      assert.equal(read.status, "running");
      assert.equal(read.hostIp, created.hostIp);
      assert.ok((await onHost()).includes(created.id), "the sandbox stays on its host");
      assert.equal((await entries("sandbox.create", created.id)).length, 1);
      await sandboxes.destroy(team.id, created.id);
      assert.ok(!(await onHost()).includes(created.id));
    } finally {
      await db.execute(sql`drop trigger wrenn_test_refuse_running on sandboxes`);
      await db.execute(sql`drop function wrenn_test_refuse_running()`);
      await db.execute(sql`drop sequence wrenn_test_refusals`);
    }
  });

  test("a sandbox destroyed elsewhere while it starts leaves its host when its mark finds the row ended", async () => {
    const { sandboxes } = cp.orchestration;
    const marker = `gone-${Date.now()}`;
    const creating = sandboxes.create(team.id, { template: TEST_TEMPLATE, timeoutSec: 0, metadata: { marker } });
    const id = await waitFor("the row of the create", async () => (await cp.repos.sandboxes.list({ teamId: team.id, metadata: { marker } })).sandboxes[0]?.id, 30_000);
    // Another control plane's destroy of a `starting` sandbox: the row ends, the host is left to the create.
    assert.ok(await transitionSandbox(cp.database.db, id, { from: ["starting"], to: "stopped" }));
    const created = await creating; // already answered when the mark finds out
    assert.equal(created.id, id);
    await sandboxes.settled(id);
    assert.ok(!(await onHost()).includes(id), "taken off its host");
    assert.equal((await sandboxes.get(team.id, id)).status, "stopped");
    assert.equal(await codeOf(sandboxes.exec(team.id, id, { cmd: "/bin/true" })), "not_found", "its caller learns at the next call");
  });

  test("an exec's entry is written while the command runs, and taken back when the exec fails", async () => {
    const { sandboxes } = cp.orchestration;
    const sandbox = await sandboxes.create(team.id, { template: TEST_TEMPLATE, timeoutSec: 0 });
    const audit = pending(team, "sandbox.exec", 200);
    const result = await sandboxes.exec(team.id, sandbox.id, { cmd: "/bin/echo", args: ["hi"] }, { audit });
    assert.equal(text(result.stdout), "hi\n");
    assert.ok(audit.wasWritten);
    assert.equal((await entries("sandbox.exec", sandbox.id)).length, 1);

    // The host loses the sandbox behind the control plane's back: the next exec fails.
    await managed.agent.client.destroySandbox({ sandboxId: sandbox.id });
    const failing = pending(team, "sandbox.exec", 200);
    assert.equal(await codeOf(sandboxes.exec(team.id, sandbox.id, { cmd: "/bin/echo", args: ["again"] }, { audit: failing })), "not_found");
    assert.equal(failing.wasWritten, false);
    assert.equal((await entries("sandbox.exec", sandbox.id)).length, 1, "only the exec that ran is in the log");
    assert.equal((await cp.repos.sandboxes.get(sandbox.id))?.status, "stopped");
  });

  test("a heartbeat that times out while the host is slow does not cut the create it is working on", async () => {
    const { sandboxes, hosts } = cp.orchestration;
    const marker = `slow-${Date.now()}`;
    const creating = sandboxes.create(team.id, { template: TEST_TEMPLATE, timeoutSec: 0, metadata: { marker } });
    await waitFor("the row of the create", async () => (await sandboxes.list(team.id, { metadata: { marker } })).sandboxes[0]?.id, 30_000);
    // The agent stops answering for longer than a heartbeat waits (3 s), then carries on.
    const pid = managed.agent.child.pid!;
    process.kill(pid, "SIGSTOP");
    try {
      await hosts.heartbeat();
      assert.equal((await hosts.list()).find((host) => host.id === hostId)?.missedHeartbeats, 1);
    } finally {
      process.kill(pid, "SIGCONT");
    }
    const created = await creating;
    assert.equal(created.status, "running");
    assert.equal(text((await sandboxes.exec(team.id, created.id, { cmd: "/bin/echo", args: ["still"] })).stdout), "still\n");
    await hosts.heartbeat();
    await sandboxes.destroy(team.id, created.id);
  });

  test("the reconciler settles a `starting` row no create works on any more by what the host says", async () => {
    const { reconciler } = cp.orchestration;
    const row = (id: string) => ({
      id,
      teamId: team.id,
      hostId,
      template: TEST_TEMPLATE,
      vcpus: 1,
      memoryMb: 512,
      diskSizeMb: 5120,
      timeoutSec: 0,
      metadata: {},
      allowOut: [],
      denyOut: [],
    });
    const age = async (id: string, ms: number) =>
      cp.database.db.execute(sql`update sandboxes set status_changed_at = now() - make_interval(secs => ${ms / 1000}) where id = ${id}`);
    // On the host, its create long gone (a control plane that died, or a lost `running` commit).
    const lost = newSandboxId();
    await cp.repos.sandboxes.create(row(lost));
    await managed.agent.client.createSandbox({ sandboxId: lost, template: TEST_TEMPLATE });
    await age(lost, STALE_STARTING_MS + 60_000);
    // Never reached its host.
    const never = newSandboxId();
    await cp.repos.sandboxes.create(row(never));
    await age(never, STALE_STARTING_MS + 60_000);
    // On the host with a create that may still be at it: left alone, and not taken for an orphan.
    const young = newSandboxId();
    await cp.repos.sandboxes.create(row(young));
    await managed.agent.client.createSandbox({ sandboxId: young, template: TEST_TEMPLATE });
    await age(young, STALE_STARTING_MS - 60_000);
    try {
      const report = await reconciler.reconcileHost(hostId);
      assert.deepEqual(new Set(report?.settled), new Set([lost, never]));
      assert.deepEqual(report?.orphansDestroyed, []);
      const settled = await cp.repos.sandboxes.get(lost);
      assert.equal(settled?.status, "running");
      assert.ok(settled?.hostIp?.startsWith("10.253.0."), String(settled?.hostIp));
      assert.ok(settled?.runningSince, "its run time is counted from now on");
      assert.equal(settled?.runtime, "gvisor", "the runtime its host says it runs on, which the create never got to record");
      assert.equal((await cp.repos.sandboxes.get(never))?.status, "error");
      assert.equal((await cp.repos.sandboxes.get(young))?.status, "starting");
      assert.ok((await onHost()).includes(young));
      // The settled one is a sandbox like any other now.
      assert.equal(text((await cp.orchestration.sandboxes.exec(team.id, lost, { cmd: "/bin/echo", args: ["back"] })).stdout), "back\n");
    } finally {
      for (const id of [lost, young]) await managed.agent.client.destroySandbox({ sandboxId: id }).catch(() => undefined);
      await cp.database.db.execute(sql`update sandboxes set status = 'stopped' where id in (${lost}, ${young})`);
    }
  });
});
