// ReadBehindCache (read-behind.ts): what a create looks up before calling its host, from memory
// while it may stand in for the database, read again behind the callers using it. Over a real
// (embedded) database: the templates a create names, with "another control plane" as writes
// straight to the database, which this process's version counters never see.
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import { sql } from "drizzle-orm";
import { catalogVersion } from "../src/db/catalog-version.js";
import { openDatabase, type Database } from "../src/db/database.js";
import { createRepositories, type Repositories } from "../src/db/repositories.js";
import type { Template } from "../src/db/schema.js";
import { WrennError } from "../src/errors.js";
import { ReadBehindCache } from "../src/sandboxes/read-behind.js";

const REFRESH_MS = 100;
const MAX_AGE_MS = 400;

describe("values read behind their callers", () => {
  let database: Database;
  let repos: Repositories;
  let teamId: string;
  let reads = 0;
  const errors: unknown[] = [];

  /** The template as a create looks it up, counting the database reads. */
  const lookUp = (name: string) => async (): Promise<Template> => {
    reads++;
    const template = await repos.templates.findVisible(teamId, name);
    if (!template) throw new WrennError("not_found", `template ${name} not found`);
    return template;
  };
  const newCache = () =>
    new ReadBehindCache<Template>({ max: 100, maxAgeMs: MAX_AGE_MS, refreshMs: REFRESH_MS, version: catalogVersion.templates, onRefreshError: (_key, err) => errors.push(err) });

  before(async () => {
    database = await openDatabase({});
    repos = createRepositories(database.db);
    teamId = (await repos.teams.create({ name: "Read behind", slug: "read-behind" })).id;
  });

  after(async () => {
    await database?.close();
  });

  test("a fresh entry answers from memory; an older one answers at once and is read again once, in the background", async () => {
    const cache = newCache();
    await repos.templates.create({ teamId, name: "steady", kind: "snapshot", sizeBytes: 1 });
    reads = 0;
    assert.equal((await cache.get("steady", lookUp("steady"))).sizeBytes, 1);
    assert.equal((await cache.get("steady", lookUp("steady"))).sizeBytes, 1);
    assert.equal(reads, 1, "the second ask is answered from memory");

    // Another control plane changes the row: this process sees it only once the entry is read again.
    await database.db.execute(sql`update templates set size_bytes = 2 where team_id = ${teamId} and name = 'steady'`);
    await sleep(REFRESH_MS + 20);
    const answers = await Promise.all([1, 2, 3].map(() => cache.get("steady", lookUp("steady"))));
    assert.deepEqual(answers.map((template) => template.sizeBytes), [1, 1, 1], "answered from memory, not held for the read");
    await sleep(50);
    assert.equal(reads, 2, "one read behind three callers");
    assert.equal((await cache.get("steady", lookUp("steady"))).sizeBytes, 2, "the read behind them is what the next caller gets");
  });

  test("an entry past its maximum age, or older than a write this process made, is read before answering", async () => {
    const cache = newCache();
    await repos.templates.create({ teamId, name: "aged", kind: "snapshot", sizeBytes: 1 });
    await cache.get("aged", lookUp("aged"));
    await database.db.execute(sql`update templates set size_bytes = 3 where team_id = ${teamId} and name = 'aged'`);
    await sleep(MAX_AGE_MS + 50);
    assert.equal((await cache.get("aged", lookUp("aged"))).sizeBytes, 3, "too old to stand in: read first");

    // A write through this process's repositories bumps the version: the next ask reads at once.
    const created = await repos.templates.create({ teamId, name: "aged-2", kind: "snapshot", sizeBytes: 1 });
    await cache.get("aged-2", lookUp("aged-2"));
    await repos.templates.setSize(created.id, 5); // setSize alone does not bump (sizes are not what a create reads)
    await repos.templates.setHost(created.id, null);
    assert.equal((await cache.get("aged-2", lookUp("aged-2"))).sizeBytes, 5);
  });

  test("a template deleted elsewhere is not_found for the caller after the read behind: never served from memory again", async () => {
    const cache = newCache();
    await repos.templates.create({ teamId, name: "doomed", kind: "snapshot", sizeBytes: 1 });
    await cache.get("doomed", lookUp("doomed"));
    await database.db.execute(sql`delete from templates where team_id = ${teamId} and name = 'doomed'`);
    await sleep(REFRESH_MS + 20);
    errors.length = 0;
    await cache.get("doomed", lookUp("doomed")); // answered from memory; the read behind it finds nothing
    await sleep(50);
    assert.equal(errors.length, 1);
    assert.equal((errors[0] as WrennError).code, "not_found");
    await assert.rejects(cache.get("doomed", lookUp("doomed")), { code: "not_found" });
    await assert.rejects(cache.get("doomed", lookUp("doomed")), { code: "not_found" }, "a failed read is not cached either");
  });
});
