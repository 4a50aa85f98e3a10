// Placement's view in memory (placement.ts, rankFast): a create's first ranking without a database
// round trip, and the rules that keep it honest. Host rows stand for hosts (no call reaches them);
// "another control plane" is a write straight to the database, which this process's repositories
// never see.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { sql } from "drizzle-orm";
import { pino } from "pino";
import { openDatabase, type Database } from "../src/db/database.js";
import { createRepositories, type Repositories } from "../src/db/repositories.js";
import { PLATFORM_TEAM_ID, type Host } from "../src/db/schema.js";
import { Placement, type PlacementRequest } from "../src/orchestration/placement.js";
import { addHostRow } from "./host-rows.js";

const TEMPLATE = "view-base";
const REQUEST: PlacementRequest = { template: TEMPLATE, hostTemplateName: TEMPLATE, vcpus: 1, memoryMb: 512, diskSizeMb: 1024 };

describe("placement's view of the hosts in memory", () => {
  let database: Database;
  let repos: Repositories;
  let placement: Placement;
  const hosts: Record<string, Host> = {};

  async function addHost(name: string, memoryMb: number): Promise<Host> {
    return (hosts[name] = await addHostRow(repos, name, { runtimes: ["gvisor"], memoryMb, template: TEMPLATE }));
  }

  const names = (ranked: Array<{ host: Host }>) => ranked.map(({ host }) => Object.keys(hosts).find((name) => hosts[name]!.id === host.id) ?? host.id);

  before(async () => {
    database = await openDatabase({});
    repos = createRepositories(database.db);
    placement = new Placement({ db: database.db, logger: pino({ level: "silent" }) });
    await addHost("big", 64_000);
    await addHost("small", 16_000);
  });

  after(async () => {
    await database?.close();
  });

  test("the first ranking reads the database; later ones answer from the view while nothing this process wrote changed it", async () => {
    assert.deepEqual(names(await placement.rankFast(REQUEST)), ["big", "small"]);
    // Another control plane drains `big`: this process cannot know until its view is read again.
    await database.db.execute(sql`update hosts set status = 'draining' where id = ${hosts.big!.id}`);
    assert.deepEqual(names(await placement.rankFast(REQUEST)), ["big", "small"], "from memory");
    assert.deepEqual(names(await placement.rank(REQUEST)), ["small"], "rank() (a retry's) reads the database");
    await database.db.execute(sql`update hosts set status = 'ready' where id = ${hosts.big!.id}`);
  });

  test("a host change this process makes is seen at once", async () => {
    await placement.rankFast(REQUEST);
    await repos.hosts.transition(hosts.big!.id, { from: ["ready"], to: "draining" });
    assert.deepEqual(names(await placement.rankFast(REQUEST)), ["small"]);
    await repos.hosts.transition(hosts.big!.id, { from: ["draining"], to: "ready" });
    assert.deepEqual(names(await placement.rankFast(REQUEST)), ["big", "small"]);
    // A template that appears on a host is a change too.
    const other = { ...REQUEST, template: "view-other", hostTemplateName: "view-other" };
    await assert.rejects(placement.rankFast(other), { code: "failed_precondition" });
    await repos.hostTemplates.add(hosts.small!.id, { name: "view-other", teamId: PLATFORM_TEAM_ID, kind: "base", sizeBytes: 0 });
    assert.deepEqual(names(await placement.rankFast(other)), ["small"]);
  });

  test("each sandbox placed is counted on its host in the view, so creates spread before the next read", async () => {
    await placement.rank(REQUEST); // a fresh view: no sandboxes anywhere
    const chosen: string[] = [];
    for (let i = 0; i < 4; i++) {
      const { host } = await placement.place(REQUEST, async () => "created", placement.rankFast(REQUEST));
      chosen.push(names([{ host }])[0]!);
    }
    assert.deepEqual(chosen, ["big", "small", "big", "small"], "the fewest sandboxes first, then the most free memory");
  });

  test("a view with no host for the request is never the last word: the database is asked", async () => {
    await placement.rank(REQUEST);
    // Both hosts go silent and come back through writes this process did not make (another
    // control plane's heartbeats): the view read in between holds no ready host.
    await database.db.execute(sql`update hosts set status = 'unhealthy'`);
    await assert.rejects(placement.rank(REQUEST), { code: "unavailable" });
    await database.db.execute(sql`update hosts set status = 'ready'`);
    assert.deepEqual(names(await placement.rankFast(REQUEST)), ["big", "small"]);
  });
});
