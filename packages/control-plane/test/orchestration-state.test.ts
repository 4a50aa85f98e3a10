// The pieces of orchestration that need no host agent: transitions and the usage they count,
// sealed agent tokens, and the Connect → WrennError code table.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { openDatabase, type Database } from "../src/db/database.js";
import { createRepositories, type Repositories } from "../src/db/repositories.js";
import { agentError, isHostFailure } from "../src/hosts/agent-client.js";
import { openSecret, sealSecret } from "../src/hosts/secrets.js";
import { transitionSandbox, usageOfSegment } from "../src/sandboxes/transitions.js";

describe("sandbox transitions", () => {
  let database: Database;
  let repos: Repositories;

  before(async () => {
    database = await openDatabase({});
    repos = createRepositories(database.db);
  });

  after(async () => {
    await database?.close();
  });

  const newSandbox = async () => {
    const team = await repos.teams.create({ name: "T", slug: `t-${randomBytes(4).toString("hex")}` });
    const sandbox = await repos.sandboxes.create({ id: randomBytes(10).toString("hex"), teamId: team.id, template: "base", vcpus: 2, memoryMb: 1024, diskSizeMb: 2048, timeoutSec: 0 });
    return { team, sandbox };
  };

  test("a run segment is counted once, by whichever of many concurrent stops wins", async () => {
    const { team, sandbox } = await newSandbox();
    const start = new Date(Date.now() - 10_000);
    await transitionSandbox(database.db, sandbox.id, { from: ["starting"], to: "running" }, start);
    const results = await Promise.all(
      Array.from({ length: 8 }, () => transitionSandbox(database.db, sandbox.id, { from: ["running"], to: "stopped" })),
    );
    const winners = results.filter((row) => row !== undefined);
    assert.equal(winners.length, 1);
    assert.equal(winners[0]!.runningSince, null);
    assert.ok(winners[0]!.endedAt);
    const day = new Date().toISOString().slice(0, 10);
    const rows = await repos.usage.list(team.id, "2000-01-01", day);
    const seconds = rows.reduce((sum, row) => sum + row.sandboxSeconds, 0);
    assert.ok(seconds >= 10 && seconds < 12, `about 10 s counted, got ${seconds}`);
    const vcpuSeconds = rows.reduce((sum, row) => sum + row.vcpuSeconds, 0);
    assert.ok(Math.abs(vcpuSeconds - 2 * seconds) < 1e-6);
  });

  test("unknown keeps the segment open: restored it goes on, given up it ends when the host went silent", async () => {
    const { team, sandbox } = await newSandbox();
    const start = new Date(Date.now() - 60_000);
    await transitionSandbox(database.db, sandbox.id, { from: ["starting"], to: "running" }, start);
    const unknown = await transitionSandbox(database.db, sandbox.id, { from: ["running"], to: "unknown" });
    assert.equal(unknown?.runningSince?.getTime(), start.getTime());
    const restored = await transitionSandbox(database.db, sandbox.id, { from: ["unknown"], to: "running" });
    assert.equal(restored?.runningSince?.getTime(), start.getTime(), "the same segment");
    await transitionSandbox(database.db, sandbox.id, { from: ["running"], to: "unknown" });
    const wentSilent = (await repos.sandboxes.get(sandbox.id))!.statusChangedAt;
    await transitionSandbox(database.db, sandbox.id, { from: ["unknown"], to: "stopped" }, new Date(Date.now() + 3_600_000));
    const rows = await repos.usage.list(team.id, "2000-01-01", "2999-01-01");
    const seconds = rows.reduce((sum, row) => sum + row.sandboxSeconds, 0);
    assert.ok(Math.abs(seconds - (wentSilent.getTime() - start.getTime()) / 1000) < 1, `counted until it went unknown: ${seconds}`);
  });

  test("a writer with a stale view loses: unchangedSince", async () => {
    const { sandbox } = await newSandbox();
    await transitionSandbox(database.db, sandbox.id, { from: ["starting"], to: "running" });
    const seenAt = await repos.sandboxes.clock();
    await transitionSandbox(database.db, sandbox.id, { from: ["running"], to: "paused" });
    await transitionSandbox(database.db, sandbox.id, { from: ["paused"], to: "running" });
    assert.equal(await transitionSandbox(database.db, sandbox.id, { from: ["running"], to: "stopped", unchangedSince: seenAt }), undefined);
    assert.equal((await transitionSandbox(database.db, sandbox.id, { from: ["running"], to: "stopped", unchangedSince: await repos.sandboxes.clock() }))?.status, "stopped");
  });

  test("a segment across midnight is split between the two days", () => {
    const days = usageOfSegment({ vcpus: 1, memoryMb: 2048, diskSizeMb: 1024 }, new Date("2026-03-01T23:59:00Z"), new Date("2026-03-02T00:01:30Z"));
    assert.deepEqual(
      days.map(([day, usage]) => [day, usage.sandboxSeconds, usage.memoryGibSeconds, usage.diskGibSeconds]),
      [
        ["2026-03-01", 60, 120, 60],
        ["2026-03-02", 90, 180, 90],
      ],
    );
  });
});

describe("sealed agent tokens", () => {
  test("open with the key and host they were sealed for, and with nothing else", () => {
    const key = randomBytes(32);
    const sealed = sealSecret(key, "agent-token", "host-1");
    assert.equal(openSecret(key, sealed, "host-1"), "agent-token");
    assert.notEqual(sealSecret(key, "agent-token", "host-1"), sealed, "a fresh nonce each time");
    assert.throws(() => openSecret(key, sealed, "host-2"), { code: "internal" });
    assert.throws(() => openSecret(randomBytes(32), sealed, "host-1"), { code: "internal" });
    assert.throws(() => sealSecret(randomBytes(16), "x", "host-1"), { code: "invalid_argument" });
  });
});

describe("agent errors", () => {
  test("Connect codes become the control plane's codes in one table", () => {
    const cases: Array<[Code, string]> = [
      [Code.NotFound, "not_found"],
      [Code.InvalidArgument, "invalid_argument"],
      [Code.ResourceExhausted, "resource_exhausted"],
      [Code.FailedPrecondition, "failed_precondition"],
      [Code.Unavailable, "unavailable"],
      [Code.DeadlineExceeded, "unavailable"],
      [Code.Internal, "internal"],
    ];
    for (const [code, expected] of cases) assert.equal(agentError(new ConnectError("boom", code)).code, expected, Code[code]);
    const refused = agentError(Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), { code: "ECONNREFUSED" }));
    assert.equal(refused.code, "unavailable");
    assert.ok(isHostFailure(refused));
    assert.ok(!isHostFailure(agentError(new ConnectError("bad", Code.InvalidArgument))));
  });
});
