// The control plane's embedded PostgreSQL cluster: made on first start in the data dir, reused on
// the next, never outliving the control plane, and the choice between it and PGlite.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { chmod, mkdir, mkdtemp, rm } from "node:fs/promises";
import path from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import { sql } from "drizzle-orm";
import { chooseEmbedded, openDatabase } from "../src/db/database.js";
import { createRepositories } from "../src/db/repositories.js";
import { skipPostgres } from "./postgres-harness.js";

const isRoot = process.getuid?.() === 0;

/** True once no process holds the cluster: PostgreSQL removes postmaster.pid when it stops. */
async function waitForServerGone(clusterDir: string): Promise<void> {
  const pidFile = path.join(clusterDir, "data", "postmaster.pid");
  for (let i = 0; i < 600 && existsSync(pidFile); i++) await sleep(50);
  assert.equal(existsSync(pidFile), false, "the server is still running");
}

describe("embedded PostgreSQL", { skip: skipPostgres }, () => {
  let root: string;
  before(async () => {
    root = await mkdtemp("/tmp/wrenn-embedded-pg-");
    await chmod(root, 0o711);
  });
  after(() => rm(root, { recursive: true, force: true }));

  test("is made on first start, keeps its data across restarts, and stops with close()", async () => {
    const dataDir = path.join(root, "restart");
    assert.deepEqual(chooseEmbedded(dataDir), { choice: "postgres" });
    const first = await openDatabase({ dataDir, embedded: "postgres" });
    assert.equal(first.driver, "postgres");
    const team = await createRepositories(first.db).teams.create({ name: "kept", slug: "kept" });
    await first.close();
    await waitForServerGone(path.join(dataDir, "postgres"));

    const second = await openDatabase({ dataDir, embedded: "postgres" });
    try {
      assert.equal((await createRepositories(second.db).teams.get(team.id))?.name, "kept");
      // Nothing listens on TCP: the only way in is the socket in a directory closed to others.
      const listen = (await second.db.execute(sql`show listen_addresses`)) as unknown as { rows: Array<{ listen_addresses: string }> };
      assert.equal(listen.rows[0]!.listen_addresses, "");
    } finally {
      await second.close();
    }
    // The data dir lets the server's user pass without listing it; the cluster is the server's alone.
    const { statSync } = await import("node:fs");
    assert.equal(statSync(dataDir).mode & 0o777 & 0o004, 0, "the data dir must not be listable by others");
    assert.equal(statSync(path.join(dataDir, "postgres")).mode & 0o077, 0);
  });

  test("the server stops when the control plane is killed", async () => {
    const dataDir = path.join(root, "killed");
    const script = `
      import { openDatabase } from ${JSON.stringify(path.resolve("packages/control-plane/src/db/database.ts"))};
      await openDatabase({ dataDir: ${JSON.stringify(dataDir)}, embedded: "postgres" });
      console.log("ready");
      setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
    const exited = new Promise((resolve) => child.once("exit", resolve));
    await new Promise<void>((resolve, reject) => {
      createInterface({ input: child.stdout! }).on("line", (line) => line === "ready" && resolve());
      child.once("exit", (code) => reject(new Error(`the child exited (${code}) before its database was ready`)));
    });
    const pid = Number(readFileSync(path.join(dataDir, "postgres", "data", "postmaster.pid"), "utf8").split("\n")[0]);
    assert.ok(pid > 0);
    child.kill("SIGKILL");
    await exited;
    await waitForServerGone(path.join(dataDir, "postgres"));
    // Gone, or a zombie waiting for init to reap it (kill(pid, 0) still succeeds on one).
    const alive = () => existsSync(`/proc/${pid}`) && !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
    for (let i = 0; i < 200 && alive(); i++) await sleep(50);
    assert.equal(alive(), false, "the postmaster outlived its control plane");
  });

  test("a data dir that already holds PGlite keeps PGlite", async () => {
    const dataDir = path.join(root, "had-pglite");
    await mkdir(path.join(dataDir, "pglite"), { recursive: true });
    const chosen = chooseEmbedded(dataDir);
    assert.equal(chosen.choice, "pglite");
    assert.match(chosen.reason ?? "", /pglite holds this control plane's data/);
  });

  test("a data dir the server's user cannot reach falls back to PGlite, saying why", { skip: !isRoot && "needs root (the server runs as postgres)" }, async () => {
    const closed = path.join(root, "closed");
    await mkdir(closed, { mode: 0o700 });
    await chmod(closed, 0o700);
    const chosen = chooseEmbedded(path.join(closed, "data"));
    assert.equal(chosen.choice, "pglite");
    assert.match(chosen.reason ?? "", /cannot enter .*closed \(mode 700\)/);
    await assert.rejects(openDatabase({ dataDir: path.join(closed, "data"), embedded: "postgres" }), /cannot enter/);
    assert.equal(existsSync(path.join(closed, "data", "postgres", "data")), false, "nothing half-made");
  });
});
