// The persistence layer, the same cases on embedded PGlite and on a real PostgreSQL.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { count, eq } from "drizzle-orm";
import { pgSchema, serial, text } from "drizzle-orm/pg-core";
import { openDatabase, type Database } from "../src/db/database.js";
import { migrationsFolder } from "../src/db/migrate.js";
import { createRepositories, type Repositories } from "../src/db/repositories.js";
import { apiKeys, PLATFORM_TEAM_ID, type NewSandbox, type Sandbox } from "../src/db/schema.js";
import { hashSecret } from "../src/db/tokens.js";
import { addHostRow } from "./host-rows.js";
import { createDatabase, skipPostgres, startPostgres, type PostgresCluster } from "./postgres-harness.js";

const appliedMigrations = pgSchema("drizzle").table("__drizzle_migrations", { id: serial("id"), hash: text("hash") });
const journal = JSON.parse(readFileSync(path.join(migrationsFolder, "meta", "_journal.json"), "utf8")) as {
  entries: unknown[];
};

/** How a suite gets databases: the shared one, and fresh ones it can open more than once. */
interface Backend {
  open(): Promise<Database>;
  /** A new empty database; `open` may be called on it repeatedly. */
  fresh(): Promise<{ open(): Promise<Database>; remove(): Promise<void> }>;
  stop(): Promise<void>;
}

const backends: Array<{ name: "pglite" | "postgres"; skip: string | false; start(): Promise<Backend> }> = [
  {
    name: "pglite",
    skip: false,
    async start() {
      return {
        open: () => openDatabase({}),
        async fresh() {
          const dataDir = await mkdtemp(path.join(tmpdir(), "wrenn-pglite-test-"));
          return { open: () => openDatabase({ dataDir }), remove: () => rm(dataDir, { recursive: true, force: true }) };
        },
        async stop() {},
      };
    },
  },
  {
    name: "postgres",
    skip: skipPostgres,
    async start() {
      const cluster: PostgresCluster = await startPostgres();
      let databases = 0;
      return {
        open: () => openDatabase({ url: cluster.url }),
        async fresh() {
          const url = await createDatabase(cluster, `fresh_${++databases}`);
          return { open: () => openDatabase({ url }), remove: async () => {} };
        },
        stop: () => cluster.stop(),
      };
    },
  },
];

const newId = () => randomBytes(8).toString("hex");

for (const backend of backends) {
  describe(`database on ${backend.name}`, { skip: backend.skip }, () => {
    let server: Backend;
    let database: Database;
    let repos: Repositories;

    before(async () => {
      server = await backend.start();
      database = await server.open();
      repos = createRepositories(database.db);
    });

    after(async () => {
      await database?.close();
      await server?.stop();
    });

    const newTeam = () => repos.teams.create({ name: "Test team", slug: `team-${newId()}` });
    const newSandbox = (teamId: string, fields: Partial<NewSandbox> = {}): Promise<Sandbox> =>
      repos.sandboxes.create({ id: `sbx-${newId()}`, teamId, template: "base", vcpus: 1, memoryMb: 512, timeoutSec: 300, ...fields });

    test("opening the database again applies no migration twice and keeps the data", async () => {
      const fresh = await server.fresh();
      try {
        const first = await fresh.open();
        assert.equal(first.driver, backend.name);
        const team = await createRepositories(first.db).teams.create({ name: "Kept", slug: "kept" });
        await first.close();

        const second = await fresh.open();
        try {
          assert.deepEqual(await createRepositories(second.db).teams.get(team.id), team);
          const [applied] = await second.db.select({ count: count() }).from(appliedMigrations);
          assert.equal(applied?.count, journal.entries.length);
        } finally {
          await second.close();
        }
      } finally {
        await fresh.remove();
      }
    });

    test(
      "control planes opening one fresh database at once all migrate it",
      { skip: backend.name === "pglite" && "PGlite is one process's database" },
      async () => {
        const fresh = await server.fresh();
        const opened = await Promise.allSettled([fresh.open(), fresh.open(), fresh.open()]);
        const handles = opened.flatMap((result) => (result.status === "fulfilled" ? [result.value] : []));
        try {
          for (const result of opened) if (result.status === "rejected") throw result.reason;
          const [applied] = await handles[0]!.db.select({ count: count() }).from(appliedMigrations);
          assert.equal(applied?.count, journal.entries.length);
        } finally {
          await Promise.all(handles.map((handle) => handle.close()));
          await fresh.remove();
        }
      },
    );

    test("the platform team exists and cannot be deleted", async () => {
      const platform = await repos.teams.getPlatformTeam();
      assert.equal(platform.id, PLATFORM_TEAM_ID);
      assert.equal(platform.slug, "platform");
      assert.equal(await repos.teams.delete(PLATFORM_TEAM_ID), false);
    });

    test("a team created with an owner that does not exist leaves no team behind", async () => {
      const slug = `team-${newId()}`;
      await assert.rejects(repos.teams.createWithOwner({ name: "Orphan", slug }, "11111111-1111-1111-1111-111111111111"));
      assert.equal(await repos.teams.getBySlug(slug), undefined);

      const user = await repos.users.create({ email: `${newId()}@Example.com`, passwordHash: "x" });
      const team = await repos.teams.createWithOwner({ name: "Owned", slug }, user.id);
      assert.deepEqual(
        (await repos.teams.listForUser(user.id)).map(({ id, role }) => ({ id, role })),
        [{ id: team.id, role: "owner" }],
      );
      assert.equal((await repos.users.findByEmail(user.email.toUpperCase()))?.id, user.id);
    });

    test("a transition succeeds once and fails on a stale from", async () => {
      const team = await newTeam();
      const sandbox = await newSandbox(team.id);
      assert.equal(sandbox.status, "starting");
      const startedAt = new Date();

      const running = await repos.sandboxes.transition(sandbox.id, { from: ["starting"], to: "running", set: { startedAt } });
      assert.equal(running?.status, "running");
      assert.deepEqual(running?.startedAt, startedAt);
      assert.ok(running.statusChangedAt >= sandbox.statusChangedAt);

      assert.equal(await repos.sandboxes.transition(sandbox.id, { from: ["starting"], to: "running" }), undefined);
      assert.equal(await repos.sandboxes.transition(sandbox.id, { from: ["starting", "paused"], to: "stopped" }), undefined);
      assert.equal(await repos.sandboxes.transition("sbx-missing", { from: ["running"], to: "stopped" }), undefined);
      assert.equal((await repos.sandboxes.get(sandbox.id))?.status, "running");

      // The reconciler race of seed 003: pause marks first, a failed snapshot reverts.
      assert.equal((await repos.sandboxes.transition(sandbox.id, { from: ["running"], to: "paused" }))?.status, "paused");
      assert.equal(await repos.sandboxes.transition(sandbox.id, { from: ["running"], to: "stopped" }), undefined);
      assert.equal((await repos.sandboxes.transition(sandbox.id, { from: ["paused"], to: "running" }))?.status, "running");
    });

    test("a create's running mark (one prepared statement) sets what the host answered, once, and only on a starting row", async () => {
      const team = await newTeam();
      const hostId = (await addHostRow(repos, `mark-${newId()}`, { runtimes: ["gvisor"], memoryMb: 1024, template: "base" })).id;
      const started = { hostId, hostIp: "10.9.0.2", envdVersion: "0.1.0", runtime: "gvisor" as const, startedAt: new Date(Date.now() - 1500) };
      const [one, two] = [await newSandbox(team.id), await newSandbox(team.id)];
      // Several marks at once on two rows (and again on each connection of the pool): each row is marked once.
      const marks = await Promise.all([one, two, one, two].map((sandbox) => repos.sandboxes.markStarted(sandbox.id, started)));
      assert.equal(marks.filter((row) => row !== undefined).length, 2);
      for (const sandbox of [one, two]) {
        const row = await repos.sandboxes.get(sandbox.id);
        assert.equal(row?.status, "running");
        assert.deepEqual({ hostId: row.hostId, hostIp: row.hostIp, envdVersion: row.envdVersion, runtime: row.runtime }, { hostId, hostIp: "10.9.0.2", envdVersion: "0.1.0", runtime: "gvisor" });
        assert.deepEqual(row.startedAt, started.startedAt);
        assert.ok(row.runningSince && Math.abs(row.runningSince.getTime() - started.startedAt.getTime()) < 5, "the run segment opens when the host started it");
      }
      // A row destroyed while it was starting is not marked.
      const destroyed = await newSandbox(team.id);
      await repos.sandboxes.transition(destroyed.id, { from: ["starting"], to: "stopped" });
      assert.equal(await repos.sandboxes.markStarted(destroyed.id, started), undefined);
      assert.equal((await repos.sandboxes.get(destroyed.id))?.status, "stopped");
      assert.equal(await repos.sandboxes.markStarted("sbx-missing", started), undefined);
    });

    test("of ten concurrent transitions from one status exactly one wins", async () => {
      const team = await newTeam();
      const sandbox = await newSandbox(team.id);
      const results = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          repos.sandboxes.transition(sandbox.id, {
            from: ["starting"],
            to: i % 2 === 0 ? "running" : "error",
            set: { metadata: { winner: String(i) } },
          }),
        ),
      );
      const winners = results.filter((row) => row !== undefined);
      assert.equal(winners.length, 1);
      assert.deepEqual(await repos.sandboxes.get(sandbox.id), winners[0]);
    });

    test("a sandbox keeps its traffic access token; one written without it has none (as rows from before migration 0007)", async () => {
      const team = await newTeam();
      const token = randomBytes(24).toString("hex");
      const withToken = await newSandbox(team.id, { trafficAccessToken: token });
      assert.equal((await repos.sandboxes.get(withToken.id))?.trafficAccessToken, token);
      assert.equal((await newSandbox(team.id)).trafficAccessToken, null);
    });

    test("list filters by team, status and metadata", async () => {
      const team = await newTeam();
      const other = await newTeam();
      const web = await newSandbox(team.id, { metadata: { app: "web", env: "prod" } });
      const worker = await newSandbox(team.id, { metadata: { app: "worker", env: "prod" }, status: "paused" });
      await newSandbox(team.id, { metadata: { app: "web", env: "dev" }, status: "stopped" });
      await newSandbox(other.id, { metadata: { app: "web", env: "prod" } });

      const ids = async (request: Parameters<typeof repos.sandboxes.list>[0]) =>
        (await repos.sandboxes.list(request)).sandboxes.map((sandbox) => sandbox.id).sort();

      assert.equal((await ids({ teamId: team.id })).length, 3);
      assert.deepEqual(await ids({ teamId: team.id, statuses: ["starting", "paused"] }), [web.id, worker.id].sort());
      assert.deepEqual(await ids({ teamId: team.id, metadata: { env: "prod" } }), [web.id, worker.id].sort());
      assert.deepEqual(await ids({ teamId: team.id, metadata: { app: "web", env: "prod" } }), [web.id]);
      assert.deepEqual(await ids({ teamId: team.id, metadata: { app: "db" } }), []);
      assert.deepEqual(await ids({ teamId: team.id, statuses: [] }), []);
      assert.deepEqual(await repos.sandboxes.countByStatus(team.id, ["starting", "paused"]), 2);
    });

    test("list pages newest first by created_at then id, without gaps or repeats", async () => {
      const team = await newTeam();
      const base = Date.now() - 60_000;
      const created: Sandbox[] = [];
      // Three pairs share a creation time, so the id must break the tie.
      for (let i = 0; i < 7; i++) {
        created.push(await newSandbox(team.id, { createdAt: new Date(base + Math.floor(i / 2) * 1000) }));
      }
      const expected = [...created]
        .sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime() || (a.id < b.id ? 1 : -1))
        .map((sandbox) => sandbox.id);

      const seen: string[] = [];
      let cursor: string | undefined;
      let pages = 0;
      do {
        const page = await repos.sandboxes.list({ teamId: team.id, limit: 3, cursor });
        seen.push(...page.sandboxes.map((sandbox) => sandbox.id));
        cursor = page.nextCursor;
        pages++;
      } while (cursor !== undefined);
      assert.deepEqual(seen, expected);
      assert.equal(pages, 3);
      await assert.rejects(repos.sandboxes.list({ cursor: "bm9wZQ" }), { name: "InvalidCursorError" });
    });

    test("an API key's secret is shown once, finds the key, and stops working when revoked", async () => {
      const team = await newTeam();
      const { apiKey, secret } = await repos.apiKeys.create({ teamId: team.id, name: "ci" });
      assert.match(secret, /^wrn_[A-Za-z0-9]{40}$/);
      assert.equal(apiKey.prefix, secret.slice(0, 12));
      const [stored] = await database.db.select().from(apiKeys).where(eq(apiKeys.id, apiKey.id));
      assert.ok(stored && !JSON.stringify(stored).includes(secret.slice(4)));
      assert.equal(apiKey.secretHash, hashSecret(secret));
      assert.equal(apiKey.lastUsedAt, null);

      const found = await repos.apiKeys.findBySecret(secret);
      assert.equal(found?.id, apiKey.id);
      assert.equal((await repos.apiKeys.listForTeam(team.id))[0]?.lastUsedAt instanceof Date, true);
      // Another last character (one time in 62 the secret's own last one is an "x").
      const altered = `${secret.slice(0, -1)}${secret.endsWith("x") ? "y" : "x"}`;
      assert.equal(await repos.apiKeys.findBySecret(altered), undefined);
      assert.equal(await repos.apiKeys.findBySecret("not-a-key"), undefined);

      const otherTeam = await newTeam();
      assert.equal(await repos.apiKeys.revoke(otherTeam.id, apiKey.id), false);
      assert.equal(await repos.apiKeys.revoke(team.id, apiKey.id), true);
      assert.equal(await repos.apiKeys.revoke(team.id, apiKey.id), false);
      assert.equal(await repos.apiKeys.findBySecret(secret), undefined);
      assert.ok((await repos.apiKeys.listForTeam(team.id))[0]?.revokedAt instanceof Date);
    });

    test("usage increments add up in the day's row, even when concurrent", async () => {
      const team = await newTeam();
      const first = await repos.usage.add(team.id, "2026-01-02", { sandboxSeconds: 10, vcpuSeconds: 20 });
      assert.deepEqual(
        { ...first },
        { teamId: team.id, day: "2026-01-02", sandboxSeconds: 10, vcpuSeconds: 20, memoryGibSeconds: 0, diskGibSeconds: 0 },
      );
      await Promise.all(
        Array.from({ length: 5 }, () => repos.usage.add(team.id, "2026-01-02", { sandboxSeconds: 1, memoryGibSeconds: 0.5 })),
      );
      await repos.usage.add(team.id, "2026-01-03", { diskGibSeconds: 7 });
      const days = await repos.usage.list(team.id, "2026-01-01", "2026-01-31");
      assert.deepEqual(
        days.map(({ day, sandboxSeconds, vcpuSeconds, memoryGibSeconds, diskGibSeconds }) => [
          day,
          sandboxSeconds,
          vcpuSeconds,
          memoryGibSeconds,
          diskGibSeconds,
        ]),
        [
          ["2026-01-02", 15, 20, 2.5, 0],
          ["2026-01-03", 0, 0, 0, 7],
        ],
      );
    });

    test("a team sees platform templates and its own, and its own wins by name", async () => {
      const team = await newTeam();
      const platformName = `base-${newId()}`;
      const platform = await repos.templates.create({ teamId: PLATFORM_TEAM_ID, name: platformName, kind: "platform", sizeBytes: 5 * 2 ** 40 });
      assert.equal(platform.sizeBytes, 5 * 2 ** 40);
      assert.equal((await repos.templates.findVisible(team.id, platformName))?.id, platform.id);

      const own = await repos.templates.create({ teamId: team.id, name: platformName, kind: "snapshot", metadata: { from: "sbx" } });
      assert.equal((await repos.templates.findVisible(team.id, platformName))?.id, own.id);
      await assert.rejects(repos.templates.create({ teamId: team.id, name: platformName, kind: "build" }));

      const visible = await repos.templates.listVisible(team.id);
      assert.deepEqual(
        visible.filter((template) => template.name === platformName).map((template) => template.id),
        [own.id, platform.id],
      );
      assert.equal(await repos.templates.delete(team.id, "missing"), undefined);
      assert.equal((await repos.templates.delete(team.id, platformName))?.id, own.id);
      assert.equal((await repos.templates.findVisible(team.id, platformName))?.id, platform.id);
      await repos.templates.delete(PLATFORM_TEAM_ID, platformName);
    });

    test("a host registers once, authenticates by its token, and goes unhealthy when silent", async () => {
      const { host, registrationToken } = await repos.hosts.create();
      assert.equal(host.status, "pending");
      const report = { address: "10.0.0.5:5008", runtimes: ["gvisor"], capacity: { cpu: 8, memoryMb: 16384, diskMb: 100_000, slots: 64 } };

      const registered = await repos.hosts.register(registrationToken, report);
      assert.ok(registered);
      assert.equal(registered.host.status, "ready");
      assert.deepEqual(registered.host.runtimes, ["gvisor"]);
      assert.equal(registered.host.registrationTokenHash, null);
      assert.equal(await repos.hosts.register(registrationToken, report), undefined);
      assert.equal((await repos.hosts.findByToken(registered.token))?.id, host.id);
      assert.equal(await repos.hosts.findByToken(registrationToken), undefined);

      const unhealthy = await repos.hosts.markSilentUnhealthy(new Date(Date.now() + 1000));
      assert.ok(unhealthy.some((row) => row.id === host.id));
      assert.equal((await repos.hosts.heartbeat(host.id))?.status, "ready");
      assert.equal((await repos.hosts.transition(host.id, { from: ["ready"], to: "draining" }))?.status, "draining");
      assert.equal((await repos.hosts.heartbeat(host.id))?.status, "draining");

      const team = await newTeam();
      const sandbox = await newSandbox(team.id, { hostId: host.id });
      assert.equal(await repos.hosts.delete(host.id), true);
      assert.equal((await repos.sandboxes.get(sandbox.id))?.hostId, null);
    });

    test("metrics points are stored once per time, read in order, and expire", async () => {
      const team = await newTeam();
      const sandbox = await newSandbox(team.id);
      const at = (seconds: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, seconds));
      const points = [2, 1, 3].map((s) => ({ ts: at(s), cpuPercent: s * 10.5, memoryBytes: 2 ** 33 + s, diskBytes: s }));
      assert.equal(await repos.metrics.insert(sandbox.id, "10m", points), 3);
      assert.equal(await repos.metrics.insert(sandbox.id, "10m", points), 0);
      assert.equal(await repos.metrics.insert(sandbox.id, "2h", points.slice(0, 1)), 1);

      const stored = await repos.metrics.list(sandbox.id, "10m");
      assert.deepEqual(stored.map((point) => point.ts), [at(1), at(2), at(3)]);
      assert.equal(stored[0]?.memoryBytes, 2 ** 33 + 1);
      assert.deepEqual((await repos.metrics.list(sandbox.id, "10m", at(2))).length, 2);
      assert.ok((await repos.metrics.deleteOlderThan(at(3))) >= 3);
      assert.deepEqual((await repos.metrics.list(sandbox.id, "10m")).map((point) => point.ts), [at(3)]);
    });

    test("audit entries list newest first, a page at a time", async () => {
      const team = await newTeam();
      for (const action of ["sandbox.create", "sandbox.pause", "sandbox.kill"]) {
        await repos.audit.record({ teamId: team.id, actorType: "api_key", actorId: "key-1", action, resourceType: "sandbox", resourceId: "sbx-1", sourceIp: "203.0.113.9" });
      }
      await repos.audit.record({ teamId: null, actorType: "system", action: "host.unhealthy", resourceType: "host" });
      const firstPage = await repos.audit.list(team.id, { limit: 2 });
      assert.deepEqual(firstPage.map((entry) => entry.action), ["sandbox.kill", "sandbox.pause"]);
      const secondPage = await repos.audit.list(team.id, { limit: 2, before: firstPage[1] });
      assert.deepEqual(secondPage.map((entry) => entry.action), ["sandbox.create"]);
      assert.deepEqual(secondPage[0]?.details, {});
    });
  });
}
