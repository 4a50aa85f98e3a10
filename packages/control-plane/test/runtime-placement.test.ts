// A sandbox's runtime in the database and in placement, without any host agent: host rows stand
// for hosts (no call ever reaches them: `place` runs the test's own attempt), and the migration
// that added the column is applied to a database made before it.
import assert from "node:assert/strict";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { PGlite } from "@electric-sql/pglite";
import { drizzle } from "drizzle-orm/pglite";
import { migrate } from "drizzle-orm/pglite/migrator";
import { pino } from "pino";
import { openDatabase, type Database } from "../src/db/database.js";
import { migrationsFolder } from "../src/db/migrate.js";
import { createRepositories, type Repositories } from "../src/db/repositories.js";
import type { Host } from "../src/db/schema.js";
import { WrennError } from "../src/errors.js";
import { Placement, type PlacementRequest } from "../src/orchestration/placement.js";
import { addHostRow } from "./host-rows.js";

const TEMPLATE = "base";
const REQUEST: PlacementRequest = { template: TEMPLATE, hostTemplateName: TEMPLATE, vcpus: 1, memoryMb: 512, diskSizeMb: 1024 };

describe("placement by runtime", () => {
  let database: Database;
  let repos: Repositories;
  let placement: Placement;
  const hosts: Record<string, Host> = {};

  /** A ready host row holding TEMPLATE; more memory ranks it higher among idle hosts. */
  async function addHost(name: string, runtimes: string[], memoryMb: number): Promise<Host> {
    return (hosts[name] = await addHostRow(repos, name, { runtimes, memoryMb, template: TEMPLATE }));
  }

  before(async () => {
    database = await openDatabase({});
    repos = createRepositories(database.db);
    placement = new Placement({ db: database.db, logger: pino({ level: "silent" }) });
    await addHost("qemu-big", ["gvisor", "qemu"], 64_000);
    await addHost("gvisor-only", ["gvisor"], 32_000);
    await addHost("qemu-small", ["gvisor", "qemu"], 16_000);
  });

  after(async () => {
    await database?.close();
  });

  const names = (ranked: Array<{ host: Host }>) => ranked.map(({ host }) => Object.keys(hosts).find((name) => hosts[name]!.id === host.id));

  test("only hosts offering the runtime are candidates; without one, every host is", async () => {
    assert.deepEqual(names(await placement.rank(REQUEST)), ["qemu-big", "gvisor-only", "qemu-small"]);
    assert.deepEqual(names(await placement.rank({ ...REQUEST, runtime: "qemu" })), ["qemu-big", "qemu-small"]);
    assert.deepEqual(names(await placement.rank({ ...REQUEST, runtime: "gvisor" })), ["qemu-big", "gvisor-only", "qemu-small"]);
  });

  test("a retry after a host fails the create goes to the next host offering the runtime, never to one without it", async () => {
    const tried: string[] = [];
    const placed = await placement.place({ ...REQUEST, runtime: "qemu" }, async (host) => {
      tried.push(names([{ host }])[0]!);
      if (tried.length === 1) throw new WrennError("unavailable", "the first host went away mid-create");
      return "created";
    });
    assert.deepEqual(tried, ["qemu-big", "qemu-small"]);
    assert.equal(placed.host.id, hosts["qemu-small"]!.id);
    assert.equal(placed.result, "created");

    // Every host offering it failed: the last host's failure, not a host without the runtime.
    const attempts: string[] = [];
    await assert.rejects(
      placement.place({ ...REQUEST, runtime: "qemu" }, async (host) => {
        attempts.push(names([{ host }])[0]!);
        throw new WrennError("resource_exhausted", `${attempts.at(-1)} is full`);
      }),
      { code: "resource_exhausted", message: "qemu-small is full" },
    );
    assert.deepEqual(attempts, ["qemu-big", "qemu-small"]);
  });

  test("no host offering the runtime: failed_precondition (409) naming what the hosts offer; a host-bound template names its host", async () => {
    await assert.rejects(placement.rank({ ...REQUEST, runtime: "firecracker" }), (err: unknown) => {
      assert.ok(err instanceof WrennError);
      assert.equal(err.code, "failed_precondition");
      assert.equal(err.status, 409);
      assert.equal(err.message, "no available host offers runtime firecracker (the available hosts offer: gvisor, qemu)");
      return true;
    });
    await assert.rejects(placement.rank({ ...REQUEST, template: "mine", hostId: hosts["gvisor-only"]!.id, runtime: "qemu" }), {
      code: "failed_precondition",
      message: "the host holding template mine does not offer runtime qemu (it offers: gvisor)",
    });
  });
});

describe("the sandbox runtime migration", () => {
  let dir: string;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "wrenn-runtime-migration-"));
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test("sandboxes made before it ran on gVisor, and say so", async () => {
    // The migrations as they were before 0009: the same files, the journal cut before it.
    const before = path.join(dir, "migrations");
    await cp(migrationsFolder, before, { recursive: true });
    const journalFile = path.join(before, "meta", "_journal.json");
    const journal = JSON.parse(await readFile(journalFile, "utf8")) as { entries: Array<{ tag: string }> };
    const at = journal.entries.findIndex((entry) => entry.tag === "0009_sandbox_runtime");
    assert.ok(at > 0, "migration 0009_sandbox_runtime is in the journal");
    await writeFile(journalFile, JSON.stringify({ ...journal, entries: journal.entries.slice(0, at) }));

    const client = await PGlite.create();
    try {
      const db = drizzle(client);
      await migrate(db, { migrationsFolder: before });
      await client.query(`INSERT INTO teams (id, name, slug) VALUES ('11111111-1111-1111-1111-111111111111', 'old', 'old')`);
      await client.query(
        `INSERT INTO sandboxes (id, team_id, template, status, vcpus, memory_mb, timeout_sec) VALUES ('oldsandbox', '11111111-1111-1111-1111-111111111111', 'base', 'running', 1, 512, 300)`,
      );
      await migrate(db, { migrationsFolder });
      const { rows } = await client.query<{ runtime: string | null }>(`SELECT runtime FROM sandboxes WHERE id = 'oldsandbox'`);
      assert.deepEqual(rows, [{ runtime: "gvisor" }]);
      // A new row without one is null until its host answers.
      await client.query(
        `INSERT INTO sandboxes (id, team_id, template, vcpus, memory_mb, timeout_sec) VALUES ('newsandbox', '11111111-1111-1111-1111-111111111111', 'base', 1, 512, 300)`,
      );
      const fresh = await client.query<{ runtime: string | null }>(`SELECT runtime FROM sandboxes WHERE id = 'newsandbox'`);
      assert.deepEqual(fresh.rows, [{ runtime: null }]);
    } finally {
      await client.close();
    }
  });
});
