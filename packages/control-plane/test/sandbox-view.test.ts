// The sandbox list is rendered by PostgreSQL (sandboxViewSql); every other answer by
// toSandboxView(). The two must never drift: same fields, same values, same pages, on both
// database modes.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { openDatabase, type Database } from "../src/db/database.js";
import { createRepositories, type Repositories } from "../src/db/repositories.js";
import type { Team } from "../src/db/schema.js";
import { sandboxViewSql, toSandboxView } from "../src/api/routes/sandboxes.js";
import { createDatabase, skipPostgres, startPostgres, type PostgresCluster } from "./postgres-harness.js";

const modes: Array<{ name: string; skip: string | false; open: () => Promise<{ database: Database; done: () => Promise<void> }> }> = [
  { name: "PGlite", skip: false, open: async () => ({ database: await openDatabase({}), done: async () => {} }) },
  {
    name: "PostgreSQL",
    skip: skipPostgres,
    open: async () => {
      const cluster: PostgresCluster = await startPostgres();
      const database = await openDatabase({ url: await createDatabase(cluster, "views") });
      return { database, done: () => cluster.stop() };
    },
  },
];

for (const mode of modes) {
  describe(`the sandbox list rendered by the database (${mode.name})`, { skip: mode.skip }, () => {
    let database: Database;
    let done: () => Promise<void>;
    let repos: Repositories;
    let team: Team;

    before(async () => {
      ({ database, done } = await mode.open());
      repos = createRepositories(database.db);
      team = await repos.teams.create({ name: "views", slug: "views" });
      const other = await repos.teams.create({ name: "other", slug: "other" });
      const base = { template: "base", vcpus: 2, memoryMb: 1024, diskSizeMb: 4096, timeoutSec: 300, allowOut: [], denyOut: [] };
      // Same creation time for several rows: the id breaks the tie, in both renderings.
      const tied = new Date("2026-11-27T07:00:00.123Z");
      for (let i = 0; i < 7; i++) {
        await repos.sandboxes.create({
          ...base,
          id: `view${i}`,
          teamId: team.id,
          metadata: i % 2 ? { owner: `ünïcødé "quoted" \\ ${i}`, empty: "" } : {},
          createdAt: i < 3 ? tied : new Date(Date.UTC(2026, 10, 27, 8, i, 5, i * 7)),
          ...(i === 4 ? { startedAt: new Date("2026-11-27T08:04:06.001Z"), envdVersion: "0.2.0", status: "running" as const, runtime: "qemu" as const } : {}),
          ...(i === 5 ? { startedAt: new Date("2026-11-27T08:05:06Z"), endedAt: new Date("2026-11-27T09:00:00.999Z"), status: "stopped" as const, runtime: "gvisor" as const } : {}),
        });
      }
      await repos.sandboxes.create({ ...base, id: "notmine", teamId: other.id, metadata: {} });
    });
    after(async () => {
      await database.close();
      await done();
    });

    test("every page equals toSandboxView of the same rows, with the same cursors", async () => {
      for (const request of [{}, { limit: 3 }, { limit: 1 }, { statuses: ["running" as const, "stopped" as const] }, { metadata: { empty: "" } }]) {
        let cursor: string | undefined;
        let pages = 0;
        do {
          const typed = await repos.sandboxes.list({ ...request, teamId: team.id, cursor });
          const rendered = await repos.sandboxes.listJson({ ...request, teamId: team.id, cursor }, sandboxViewSql);
          assert.deepEqual(JSON.parse(rendered.json), typed.sandboxes.map(toSandboxView), `request ${JSON.stringify(request)}, page ${pages}`);
          assert.equal(rendered.nextCursor, typed.nextCursor);
          cursor = typed.nextCursor;
          pages++;
        } while (cursor !== undefined && pages < 20);
        assert.equal(cursor, undefined, "the pages end");
      }
    });

    test("an empty page is an empty array, and field order matches", async () => {
      const empty = await repos.sandboxes.listJson({ teamId: team.id, statuses: ["paused"] }, sandboxViewSql);
      assert.equal(empty.json, "[]");
      assert.equal(empty.nextCursor, undefined);
      const [sandbox] = (await repos.sandboxes.list({ teamId: team.id, limit: 1 })).sandboxes;
      const [row] = JSON.parse((await repos.sandboxes.listJson({ teamId: team.id, limit: 1 }, sandboxViewSql)).json) as object[];
      assert.deepEqual(Object.keys(row!), Object.keys(toSandboxView(sandbox!)));
    });
  });
}
