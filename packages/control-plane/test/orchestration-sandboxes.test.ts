// The sandbox and template services and the reconciler against one real host agent.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { sql } from "drizzle-orm";
import { PLATFORM_TEAM_ID, type Team } from "../src/db/schema.js";
import { WrennError } from "../src/errors.js";
import type { ExecEvent } from "../src/sandboxes/service.js";
import { transitionSandbox } from "../src/sandboxes/transitions.js";
import {
  restartAgent,
  skipAgent,
  TEST_TEMPLATE,
  text,
  waitFor,
  type ControlPlaneUnderTest,
  type ManagedAgent,
  codeOf,
  startOneHost,
  stopOneHost,
} from "./orchestration-harness.js";

const POOL = "10.240.1.0/26";
const TABLE = "wrenn_orch_sbx";

describe("sandbox orchestration on one host", { skip: skipAgent }, () => {
  let cp: ControlPlaneUnderTest;
  let managed: ManagedAgent;
  let hostId: string;
  let team: Team;

  before(async () => ({ cp, managed, hostId, team } = await startOneHost(POOL, TABLE)));
  after(() => stopOneHost(cp, managed));

  const onHost = async () => (await managed.agent.client.listSandboxes({})).sandboxes.map((s) => [s.sandboxId, s.status]);

  test("a sandbox lives through create → exec → pause → resume → destroy, and its run time is billed", async () => {
    const { sandboxes } = cp.orchestration;
    const created = await sandboxes.create(team.id, { template: TEST_TEMPLATE, timeoutSec: 0, metadata: { purpose: "lifecycle" } });
    assert.match(created.id, /^[a-z0-9]{20}$/);
    assert.equal(created.status, "running");
    assert.equal(created.hostId, hostId);
    assert.ok(created.hostIp?.startsWith("10.240.1."));
    assert.ok(created.envdVersion);
    assert.ok(created.envdAccessToken);
    assert.ok(created.runningSince);

    const echoed = await sandboxes.exec(team.id, created.id, { cmd: "/bin/sh", args: ["-c", "echo out; echo err >&2; exit 3"] });
    assert.deepEqual([text(echoed.stdout), text(echoed.stderr), echoed.exitCode], ["out\n", "err\n", 3]);

    const events: ExecEvent[] = [];
    for await (const event of sandboxes.execStream(team.id, created.id, { cmd: "/bin/sh", args: ["-c", "echo one; sleep 0.2; echo two >&2; exit 0"] })) {
      events.push(event);
    }
    assert.equal(events[0]?.type, "start");
    assert.deepEqual(
      events.slice(1).map((event) => (event.type === "stdout" || event.type === "stderr" ? [event.type, text(event.data)] : [event.type])),
      [["stdout", "one\n"], ["stderr", "two\n"], ["exit"]],
    );

    assert.equal(await sandboxes.writeFile(team.id, created.id, "/tmp/note.txt", new TextEncoder().encode("kept")), 4);
    const chunks: Uint8Array[] = [];
    for await (const chunk of sandboxes.readFile(team.id, created.id, "/tmp/note.txt")) chunks.push(chunk);
    assert.equal(text(Buffer.concat(chunks)), "kept");

    // Wait for the agent's sampler (500 ms in tests) so there is something to flush at pause.
    await waitFor("live metrics", async () => (await sandboxes.metrics(team.id, created.id, "10m")).length > 0);
    const paused = await sandboxes.pause(team.id, created.id);
    assert.equal(paused.status, "paused");
    assert.equal(paused.runningSince, null);
    assert.deepEqual(await onHost(), [[created.id, "paused"]]);
    assert.equal(await codeOf(sandboxes.pause(team.id, created.id)), "conflict");
    assert.equal(await codeOf(sandboxes.exec(team.id, created.id, { cmd: "true" })), "failed_precondition");
    assert.ok((await cp.repos.metrics.list(created.id, "10m")).length > 0, "metrics flushed into the database at pause");
    assert.ok((await sandboxes.metrics(team.id, created.id, "10m")).length > 0, "a paused sandbox's metrics come from the database");

    const resumed = await sandboxes.resume(team.id, created.id, { timeoutSec: 600 });
    assert.equal(resumed.status, "running");
    assert.equal(resumed.timeoutSec, 600);
    assert.equal(text((await sandboxes.exec(team.id, created.id, { cmd: "cat", args: ["/tmp/note.txt"] })).stdout), "kept");
    await sandboxes.ping(team.id, created.id);
    assert.equal((await sandboxes.setTimeout(team.id, created.id, 0)).timeoutSec, 0);

    const listed = await sandboxes.list(team.id, { states: ["running"], metadata: { purpose: "lifecycle" } });
    assert.deepEqual(listed.sandboxes.map((s) => s.id), [created.id]);

    const destroyed = await sandboxes.destroy(team.id, created.id);
    assert.equal(destroyed.status, "stopped");
    assert.ok(destroyed.endedAt);
    assert.deepEqual(await onHost(), []);
    assert.equal((await sandboxes.destroy(team.id, created.id)).status, "stopped", "destroying twice is a no-op");
    assert.equal(await codeOf(sandboxes.exec(team.id, created.id, { cmd: "true" })), "not_found");

    const today = new Date().toISOString().slice(0, 10);
    const [usage] = await cp.repos.usage.list(team.id, today, today);
    assert.ok(usage && usage.sandboxSeconds > 0, "two run segments counted");
    assert.equal(usage.vcpuSeconds, usage.sandboxSeconds);
    assert.ok(Math.abs(usage.memoryGibSeconds - usage.sandboxSeconds * 0.5) < 1e-9);
    assert.ok(Math.abs(usage.diskGibSeconds - usage.sandboxSeconds * 5) < 1e-9);
  });

  test("another team's sandboxes and templates are not found, whatever the operation", async () => {
    const { sandboxes, templates } = cp.orchestration;
    const other = await cp.newTeam();
    const sandbox = await sandboxes.create(team.id, { template: TEST_TEMPLATE });
    try {
      const calls: Array<[string, () => Promise<unknown>]> = [
        ["get", () => sandboxes.get(other.id, sandbox.id)],
        ["exec", () => sandboxes.exec(other.id, sandbox.id, { cmd: "true" })],
        ["execStream", async () => {
          for await (const _ of sandboxes.execStream(other.id, sandbox.id, { cmd: "true" }));
        }],
        ["pause", () => sandboxes.pause(other.id, sandbox.id)],
        ["resume", () => sandboxes.resume(other.id, sandbox.id)],
        ["setTimeout", () => sandboxes.setTimeout(other.id, sandbox.id, 10)],
        ["ping", () => sandboxes.ping(other.id, sandbox.id)],
        ["metrics", () => sandboxes.metrics(other.id, sandbox.id, "10m")],
        ["writeFile", () => sandboxes.writeFile(other.id, sandbox.id, "/tmp/x", new Uint8Array(1))],
        ["snapshot", () => templates.snapshot(other.id, sandbox.id, "stolen")],
        ["destroy", () => sandboxes.destroy(other.id, sandbox.id)],
      ];
      for (const [name, call] of calls) assert.equal(await codeOf(call()), "not_found", name);
      assert.deepEqual((await sandboxes.list(other.id)).sandboxes, []);
      assert.equal((await sandboxes.get(team.id, sandbox.id)).status, "running", "untouched by the other team's calls");
      assert.equal(await templates.get(other.id, "stolen").catch((err: WrennError) => err.code), "not_found");
    } finally {
      await sandboxes.destroy(team.id, sandbox.id);
    }
  });

  test("a caller that goes away during create leaves nothing running", async () => {
    const controller = new AbortController();
    const creating = cp.orchestration.sandboxes.create(team.id, { template: TEST_TEMPLATE, metadata: { case: "abort" } }, { signal: controller.signal });
    setTimeout(() => controller.abort(), 50);
    assert.equal(await codeOf(creating), "unavailable");
    const [row] = (await cp.orchestration.sandboxes.list(team.id, { metadata: { case: "abort" } })).sandboxes;
    assert.equal(row?.status, "stopped");
    assert.deepEqual(await onHost(), []);
  });

  test("a create the host refuses ends in error and leaves nothing", async () => {
    const { sandboxes } = cp.orchestration;
    assert.equal(await codeOf(sandboxes.create(team.id, { template: TEST_TEMPLATE, memoryMb: 1, metadata: { case: "refused" } })), "invalid_argument");
    assert.equal((await sandboxes.list(team.id, { metadata: { case: "refused" } })).sandboxes[0]?.status, "error");
    assert.equal(await codeOf(sandboxes.create(team.id, { template: "no-such-template" })), "not_found");
    assert.deepEqual(await onHost(), []);
  });

  test("the reconciler reflects an auto-pause and a sandbox destroyed behind the control plane's back", async () => {
    const { sandboxes, reconciler } = cp.orchestration;
    const idle = await sandboxes.create(team.id, { template: TEST_TEMPLATE, timeoutSec: 1 });
    const doomed = await sandboxes.create(team.id, { template: TEST_TEMPLATE, timeoutSec: 0 });
    try {
      await managed.agent.client.destroySandbox({ sandboxId: doomed.id });
      reconciler.start();
      await waitFor("auto-pause reflected", async () => (await sandboxes.get(team.id, idle.id)).status === "paused");
      const stopped = await waitFor("vanished sandbox stopped", async () => {
        const row = await sandboxes.get(team.id, doomed.id);
        return row.status === "stopped" && row;
      });
      assert.ok(stopped.endedAt);
      assert.equal(stopped.runningSince, null);
    } finally {
      await reconciler.stop();
      await sandboxes.destroy(team.id, idle.id);
    }
  });

  test("a sandbox the database has stopped but its host still runs is destroyed there by the reconciler", async () => {
    const { sandboxes, reconciler } = cp.orchestration;
    const sandbox = await sandboxes.create(team.id, { template: TEST_TEMPLATE, timeoutSec: 0 });
    // As after a destroy whose RPC never reached the host (a destroy waits for the create's
    // `running` mark, which lands after the create's answer; this write goes around the service).
    await sandboxes.settled(sandbox.id);
    assert.ok(await transitionSandbox(cp.database.db, sandbox.id, { from: ["running"], to: "stopped" }));
    const report = await reconciler.reconcileHost(hostId);
    assert.deepEqual(report?.orphansDestroyed, [sandbox.id]);
    assert.deepEqual(await onHost(), []);
    assert.equal((await sandboxes.get(team.id, sandbox.id)).status, "stopped");
  });

  test("a sandbox on its host with no row yet is spared by one reconcile pass and destroyed by the next", async () => {
    // A create writes its row while the host makes the sandbox: one pass may see the sandbox first.
    const { reconciler } = cp.orchestration;
    const ids = async () => (await onHost()).map(([id]) => id);
    await managed.agent.client.createSandbox({ sandboxId: "norowyet", template: TEST_TEMPLATE });
    assert.deepEqual((await reconciler.reconcileHost(hostId))?.orphansDestroyed, []);
    assert.ok((await ids()).includes("norowyet"));
    assert.deepEqual((await reconciler.reconcileHost(hostId))?.orphansDestroyed, ["norowyet"]);
    assert.ok(!(await ids()).includes("norowyet"));
  });

  test("a create whose row cannot be written leaves nothing on the host", async () => {
    // The row is written while the host creates the sandbox; a real PostgreSQL error (a trigger)
    // refuses it, so the sandbox the host made must be destroyed again.
    const { sandboxes } = cp.orchestration;
    const { db } = cp.database;
    const before = await onHost();
    await db.execute(sql`create function wrenn_test_refuse_row() returns trigger language plpgsql as $$ begin raise exception 'row refused by the test'; end $$`);
    await db.execute(sql`create trigger wrenn_test_refuse_row before insert on sandboxes for each row when (new.metadata->>'refuse' = 'yes') execute function wrenn_test_refuse_row()`);
    try {
      await assert.rejects(sandboxes.create(team.id, { template: TEST_TEMPLATE, timeoutSec: 0, metadata: { refuse: "yes" } }), (err: Error) => String((err.cause as Error | undefined)?.message).includes("row refused by the test"));
      assert.deepEqual(await onHost(), before);
      assert.equal((await sandboxes.list(team.id, { metadata: { refuse: "yes" } })).sandboxes.length, 0);
    } finally {
      await db.execute(sql`drop trigger wrenn_test_refuse_row on sandboxes`);
      await db.execute(sql`drop function wrenn_test_refuse_row()`);
    }
  });

  test("a pause in flight is not undone by a reconcile pass that runs between the mark and the RPC", async () => {
    const { sandboxes, reconciler } = cp.orchestration;
    const sandbox = await sandboxes.create(team.id, { template: TEST_TEMPLATE, timeoutSec: 0 });
    const seen: Array<{ db: string; host: string | undefined; report: unknown }> = [];
    cp.hooks.afterMarkPaused = async (_operation, marked) => {
      // The database says paused, the host still runs it: exactly the window of seed 003's race.
      const report = await reconciler.reconcileHost(hostId);
      const host = (await managed.agent.client.listSandboxes({})).sandboxes.find((s) => s.sandboxId === marked.id)?.status;
      seen.push({ db: (await sandboxes.get(team.id, marked.id)).status, host, report });
    };
    try {
      const paused = await sandboxes.pause(team.id, sandbox.id);
      assert.equal(seen.length, 1);
      assert.equal(seen[0]!.host, "running");
      assert.equal(seen[0]!.db, "paused", "the reconciler left the in-flight pause alone");
      assert.deepEqual(seen[0]!.report, { hostId, settled: [], paused: [], stopped: [], restored: [], orphansDestroyed: [] });
      assert.equal(paused.status, "paused");
      assert.deepEqual(await onHost(), [[sandbox.id, "paused"]]);
      // And a pass after it changes nothing either.
      assert.deepEqual((await reconciler.reconcileHost(hostId))?.stopped, []);
      assert.equal((await sandboxes.get(team.id, sandbox.id)).status, "paused");
    } finally {
      delete cp.hooks.afterMarkPaused;
      await sandboxes.destroy(team.id, sandbox.id);
    }
  });

  test("a pause whose sandbox vanished from its host before the RPC ends stopped, not running", async () => {
    const { sandboxes } = cp.orchestration;
    const sandbox = await sandboxes.create(team.id, { template: TEST_TEMPLATE, timeoutSec: 0 });
    cp.hooks.afterMarkPaused = async () => {
      // The host loses the sandbox between the mark and the RPC.
      await managed.agent.client.destroySandbox({ sandboxId: sandbox.id });
    };
    try {
      assert.equal(await codeOf(sandboxes.pause(team.id, sandbox.id)), "not_found");
      assert.equal((await sandboxes.get(team.id, sandbox.id)).status, "stopped", "a sandbox its host lost is stopped, not running");
    } finally {
      delete cp.hooks.afterMarkPaused;
    }
  });

  test("a pause whose RPC fails puts the sandbox back to running", async () => {
    const { sandboxes } = cp.orchestration;
    const sandbox = await sandboxes.create(team.id, { template: TEST_TEMPLATE, timeoutSec: 0 });
    // The agent stops serving between the mark and the RPC (its sandboxes keep running).
    cp.hooks.afterMarkPaused = () => managed.agent.stop();
    try {
      assert.equal(await codeOf(sandboxes.pause(team.id, sandbox.id)), "unavailable");
      assert.equal((await sandboxes.get(team.id, sandbox.id)).status, "running");
    } finally {
      delete cp.hooks.afterMarkPaused;
      managed = await restartAgent(managed);
    }
    assert.equal(text((await sandboxes.exec(team.id, sandbox.id, { cmd: "echo", args: ["alive"] })).stdout), "alive\n");
    await sandboxes.destroy(team.id, sandbox.id);
  });

  test("a snapshot becomes the team's template, and a sandbox created from it has the files", async () => {
    const { sandboxes, templates, reconciler } = cp.orchestration;
    const source = await sandboxes.create(team.id, { template: TEST_TEMPLATE, timeoutSec: 0 });
    const wrote = await sandboxes.exec(team.id, source.id, { cmd: "/bin/sh", args: ["-c", "echo from-snapshot > /home/user/marker"] });
    assert.equal(wrote.exitCode, 0, text(wrote.stderr));
    const during: string[] = [];
    cp.hooks.afterMarkPaused = async (operation, marked) => {
      assert.equal(operation, "snapshot");
      await reconciler.reconcileHost(hostId);
      during.push((await sandboxes.get(team.id, marked.id)).status);
    };
    let template;
    try {
      template = await templates.snapshot(team.id, source.id, "with-marker");
    } finally {
      delete cp.hooks.afterMarkPaused;
    }
    assert.deepEqual(during, ["paused"]);
    assert.equal(template.teamId, team.id);
    assert.equal(template.kind, "snapshot");
    assert.equal(template.hostId, hostId);
    assert.ok(template.sizeBytes > 0);
    assert.equal((await sandboxes.get(team.id, source.id)).status, "stopped", "a snapshot without keepRunning consumes the sandbox");
    assert.ok((await templates.list(team.id)).some((t) => t.name === "with-marker"));
    assert.equal(await codeOf(templates.snapshot(team.id, source.id, "again")), "not_found");

    const clone = await sandboxes.create(team.id, { template: "with-marker" });
    try {
      assert.equal(clone.template, "with-marker");
      assert.equal(text((await sandboxes.exec(team.id, clone.id, { cmd: "cat", args: ["/home/user/marker"] })).stdout), "from-snapshot\n");
      assert.equal(await codeOf(templates.delete(team.id, "with-marker")), "failed_precondition", "a template a sandbox runs on stays");
    } finally {
      await sandboxes.destroy(team.id, clone.id);
    }

    const other = await cp.newTeam();
    assert.equal(await codeOf(templates.delete(other.id, "with-marker")), "not_found");
    await templates.delete(team.id, "with-marker");
    assert.ok(!(await managed.agent.client.listTemplates({})).templates.some((t) => t.name === template.hostTemplateName));
    assert.equal(await codeOf(templates.get(team.id, "with-marker")), "not_found");
  });

  test("a snapshot with keepRunning leaves the sandbox running, and a failed one leaves no template", async () => {
    const { sandboxes, templates } = cp.orchestration;
    const sandbox = await sandboxes.create(team.id, { template: TEST_TEMPLATE, timeoutSec: 0 });
    try {
      const kept = await templates.snapshot(team.id, sandbox.id, "kept-running", { keepRunning: true });
      assert.equal((await sandboxes.get(team.id, sandbox.id)).status, "running");
      assert.deepEqual(await onHost(), [[sandbox.id, "running"]]);
      assert.equal(await codeOf(templates.snapshot(team.id, sandbox.id, "kept-running", { keepRunning: true })), "conflict");
      assert.equal(await codeOf(templates.snapshot(team.id, sandbox.id, TEST_TEMPLATE)), "conflict", "a platform template's name");
      await templates.delete(team.id, kept.name);

      // The host loses the sandbox between the mark and the RPC: the snapshot fails, its name is free again.
      cp.hooks.afterMarkPaused = async () => {
        await managed.agent.client.destroySandbox({ sandboxId: sandbox.id });
      };
      assert.equal(await codeOf(templates.snapshot(team.id, sandbox.id, "lost")), "not_found");
      assert.equal(await codeOf(templates.get(team.id, "lost")), "not_found");
      assert.equal((await sandboxes.get(team.id, sandbox.id)).status, "stopped");
    } finally {
      delete cp.hooks.afterMarkPaused;
      await sandboxes.destroy(team.id, sandbox.id);
    }
  });

  test("a build runs its steps in a build sandbox and flattens them into a template", async () => {
    const { sandboxes, templates } = cp.orchestration;
    const build = await templates.build(team.id, {
      baseTemplate: TEST_TEMPLATE,
      name: "built",
      steps: ["echo built-by-steps > /root/built.txt", "echo to-out; echo to-err >&2"],
    });
    const template = await build.done;
    assert.equal(build.status, "ready");
    assert.equal(template.kind, "build");
    assert.equal(template.hostId, hostId);
    const events = [];
    for await (const event of templates.buildLogs(team.id, build.id)) events.push(event);
    const output = events.flatMap((event) => (event.type === "stdout" || event.type === "stderr" ? [`${event.type}:${event.data.trim()}`] : []));
    assert.deepEqual(output, ["stdout:to-out", "stderr:to-err"]);
    assert.deepEqual(events.filter((e) => e.type === "exit").map((e) => (e.type === "exit" ? e.exitCode : -1)), [0, 0]);
    assert.equal(events.at(-1)?.type, "done");
    assert.equal((await sandboxes.get(team.id, build.sandboxId!)).status, "stopped");
    const stranger = await cp.newTeam();
    assert.equal(await codeOf(Promise.resolve().then(() => templates.getBuild(stranger.id, build.id))), "not_found");

    const fromBuild = await sandboxes.create(team.id, { template: "built" });
    try {
      assert.equal(text((await sandboxes.exec(team.id, fromBuild.id, { cmd: "cat", args: ["/root/built.txt"], user: "root" })).stdout), "built-by-steps\n");
    } finally {
      await sandboxes.destroy(team.id, fromBuild.id);
    }
    await templates.delete(team.id, "built");

    const failing = await templates.build(team.id, { baseTemplate: TEST_TEMPLATE, name: "broken", steps: ["exit 7", "echo never"] });
    await assert.rejects(failing.done, /exited with 7/);
    assert.equal(failing.status, "failed");
    assert.equal((await sandboxes.get(team.id, failing.sandboxId!)).status, "stopped");
    assert.equal(await codeOf(templates.get(team.id, "broken")), "not_found");
    assert.deepEqual(await onHost(), []);
  });

  test("a team cannot delete a platform template, and nothing is touched when it tries", async () => {
    const { templates } = cp.orchestration;
    const platform = await templates.get(team.id, TEST_TEMPLATE);
    assert.equal(platform.teamId, PLATFORM_TEAM_ID, "the agent's platform template is in the catalogue");
    const before = (await managed.agent.client.listTemplates({})).templates.map((t) => t.name);
    assert.equal(await codeOf(templates.delete(team.id, TEST_TEMPLATE)), "forbidden");
    assert.deepEqual((await managed.agent.client.listTemplates({})).templates.map((t) => t.name), before);
    assert.equal((await templates.get(team.id, TEST_TEMPLATE)).id, platform.id);
    assert.deepEqual(await cp.repos.hostTemplates.hostsHolding(TEST_TEMPLATE), [hostId]);
  });
});
