import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, rmdir, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { detectCgroupLayout, readCgroupUsage, type CgroupLayout } from "../src/sandbox/metrics/cgroup.js";
import { RingBuffer } from "../src/sandbox/metrics/ring-buffer.js";
import { MetricsSampler } from "../src/sandbox/metrics/sampler.js";
import { InvalidMetricsRangeError, SandboxMetrics, type MetricPoint } from "../src/sandbox/metrics/tiers.js";

// A multiple of 600 s, so minute and 10-minute buckets start exactly here.
const T0 = 1_700_000_400;
const point = (timestampUnix: number, cpuPct: number, memBytes: number, diskBytes = 0): MetricPoint => ({
  timestampUnix,
  cpuPct,
  memBytes,
  diskBytes,
});

test("a ring buffer keeps the newest items up to its capacity, oldest first", () => {
  const ring = new RingBuffer<number>(3);
  for (let i = 1; i <= 5; i++) ring.push(i);
  assert.deepEqual(ring.toArray(), [3, 4, 5]);
  assert.equal(ring.size, 3);
  ring.clear();
  assert.deepEqual(ring.toArray(), []);
});

test("the 10m tier keeps every sample as taken, the newest 120", () => {
  const metrics = new SandboxMetrics();
  for (let i = 0; i < 130; i++) metrics.record(point(T0 + i * 5, i, i * 10, i));
  const points = metrics.points("10m");
  assert.equal(points.length, 120);
  assert.deepEqual(points[0], point(T0 + 10 * 5, 10, 100, 10));
  assert.deepEqual(points.at(-1), point(T0 + 129 * 5, 129, 1290, 129));
});

test("the 2h tier averages cpu and memory per wall-clock minute and keeps the latest disk size", () => {
  const metrics = new SandboxMetrics();
  // Minute 0: twelve samples with cpu 0..11 (mean 5.5) and memory 100..111 (mean 105.5).
  for (let i = 0; i < 12; i++) metrics.record(point(T0 + i * 5, i, 100 + i, 1000 + i));
  // Minute 1, still open: two samples.
  metrics.record(point(T0 + 61, 50, 200, 2000));
  metrics.record(point(T0 + 66, 70, 301, 2001));
  assert.deepEqual(metrics.points("2h"), [
    point(T0, 5.5, 106, 1011), // 105.5 bytes rounds to 106
    point(T0 + 60, 60, 251, 2001), // the open minute, averaged so far
  ]);
});

test("a missed sample does not shift the minute buckets", () => {
  const metrics = new SandboxMetrics();
  metrics.record(point(T0 + 55, 10, 10));
  metrics.record(point(T0 + 125, 30, 30)); // nothing in minute 1
  assert.deepEqual(
    metrics.points("2h").map((p) => p.timestampUnix),
    [T0, T0 + 120],
  );
});

test("the 24h tier averages per 10 minutes and returns at most 144 points", () => {
  const metrics = new SandboxMetrics();
  // One sample a minute for 150 ten-minute buckets; each bucket's cpu is 0..9 (mean 4.5).
  for (let minute = 0; minute < 1500; minute++) metrics.record(point(T0 + minute * 60, minute % 10, 1000));
  const points = metrics.points("24h");
  assert.equal(points.length, 144);
  assert.equal(points[0]!.timestampUnix, T0 + 6 * 600);
  assert.equal(points.at(-1)!.timestampUnix, T0 + 149 * 600);
  assert.ok(points.every((p) => p.cpuPct === 4.5 && p.memBytes === 1000));
  assert.equal(metrics.points("2h").length, 120);
  assert.equal(metrics.points("2h").at(-1)!.timestampUnix, T0 + 1499 * 60);
});

test("flush returns every tier, including the buckets still open, and leaves them empty", () => {
  const metrics = new SandboxMetrics();
  metrics.record(point(T0, 10, 100, 1));
  metrics.record(point(T0 + 5, 30, 300, 2));
  const flushed = metrics.flush();
  assert.deepEqual(flushed["10m"], [point(T0, 10, 100, 1), point(T0 + 5, 30, 300, 2)]);
  assert.deepEqual(flushed["2h"], [point(T0, 20, 200, 2)]);
  assert.deepEqual(flushed["24h"], [point(T0, 20, 200, 2)]);
  assert.deepEqual(metrics.flush(), { "10m": [], "2h": [], "24h": [] });
  // Samples after a flush start fresh buckets, not the ones flushed.
  metrics.record(point(T0 + 10, 90, 900, 3));
  assert.deepEqual(metrics.points("2h"), [point(T0, 90, 900, 3)]);
});

test("an unknown range is refused with InvalidMetricsRangeError", () => {
  const metrics = new SandboxMetrics();
  for (const range of ["1h", "", "10M", "toString"]) {
    assert.throws(() => metrics.points(range), (err: unknown) => {
      assert.ok(err instanceof InvalidMetricsRangeError);
      assert.equal(err.range, range);
      assert.match(err.message, /expected one of 10m, 2h, 24h/);
      return true;
    });
  }
});

test("on cgroup v2, usage is usage_usec and memory.current minus inactive_file", async (t) => {
  const root = await mkdtemp(join(tmpdir(), "wrenn-cgroup-v2-"));
  t.after(() => rm(root, { recursive: true, force: true }));
  const layout: CgroupLayout = { root, version: "v2" };
  await mkdir(join(root, "wrenn", "sbx1"), { recursive: true });
  const dir = join(root, "wrenn", "sbx1");
  await writeFile(join(dir, "cpu.stat"), "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\n");
  await writeFile(join(dir, "memory.current"), "500000000\n");
  await writeFile(join(dir, "memory.stat"), "anon 300000000\nfile 200000000\nactive_file 50000000\ninactive_file 150000000\n");
  assert.deepEqual(await readCgroupUsage("/wrenn/sbx1", layout), { cpuUsageNs: 1_234_567_000, memBytes: 350_000_000 });
  assert.equal(await readCgroupUsage("/wrenn/gone", layout), undefined);
});

test("the sampler never throws: an unreadable cgroup or a failing disk probe is logged and skipped", async () => {
  const sampler = new MetricsSampler({ intervalMs: 20 });
  // A file where a directory is expected: a read error that is not "cgroup gone". cgroup.procs is
  // a file at the root of every hierarchy (v1 and v2), so every read fails with ENOTDIR; a name
  // only one v1 hierarchy has (cpuacct.usage) let an ENOENT from another win the race, read as "gone".
  sampler.track("broken", { cgroupPath: "/cgroup.procs", diskBytes: async () => 1 });
  sampler.track("gone", { cgroupPath: `/wrenn-absent-${process.pid}`, diskBytes: () => Promise.reject(new Error("du failed")) });
  await sampler.sampleNow();
  assert.deepEqual(sampler.metrics("broken")!.points("10m"), []);
  // No cgroup (a checkpointed sandbox) still gets points, with no CPU or memory.
  const [gonePoint] = sampler.metrics("gone")!.points("10m");
  assert.deepEqual({ ...gonePoint, timestampUnix: 0 }, point(0, 0, 0, 0));

  // The timer part, with sources that sample cleanly (and quietly).
  sampler.untrack("broken");
  sampler.track("gone", { cgroupPath: `/wrenn-absent-${process.pid}`, diskBytes: async () => 0 });
  sampler.start();
  await sleep(400); // ~20 intervals: at least 3 samples even on a machine busy with other test files
  await sampler.stop(); // a pass the timer began just before is let finish
  const count = sampler.metrics("gone")!.points("10m").length;
  assert.ok(count >= 3, `the timer sampled ${count} times`);
  await sleep(60);
  assert.equal(sampler.metrics("gone")!.points("10m").length, count, "stop() stops the timer");

  sampler.untrack("gone");
  assert.equal(sampler.metrics("gone"), undefined);
});

// ── Against a real cgroup ────────────────────────────────────────────

const isRoot = process.getuid?.() === 0;

/** A throwaway cgroup named like a sandbox's, in every hierarchy the reader looks at. */
async function createCgroup(t: { after: (fn: () => Promise<void>) => void }) {
  const layout = await detectCgroupLayout();
  const name = `wrenn-test-${process.pid}`;
  const dirs =
    layout.version === "v2"
      ? [join(layout.root, name)]
      : ["cpu", "cpuacct", "memory", "pids"].map((controller) => join(layout.root, controller, name));
  if (layout.version === "v2") await writeFile(join(layout.root, "cgroup.subtree_control"), "+cpu +memory");
  for (const dir of dirs) await mkdir(dir);
  // The highest CPU weight: another test file running beside this one must not starve the busy
  // process below the share the CPU test expects of it.
  if (layout.version === "v2") await writeFile(join(dirs[0]!, "cpu.weight"), "10000");
  else await writeFile(join(layout.root, "cpu", name, "cpu.shares"), "262144");
  const children: ChildProcess[] = [];
  const remove = async () => {
    for (const child of children) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGKILL");
        await once(child, "exit");
      }
    }
    for (const dir of dirs) {
      // The kernel drops an exited process from the cgroup a moment after `exit` is seen.
      for (let attempt = 0; existsSync(dir); attempt++) {
        try {
          await rmdir(dir);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "EBUSY" || attempt >= 50) throw err;
          await sleep(50);
        }
      }
    }
  };
  t.after(remove);
  return {
    cgroupPath: `/${name}`,
    dirs,
    remove,
    /** Starts `command` and moves it into the cgroup before it does any work worth measuring. */
    async spawnInside(command: string, args: string[]): Promise<ChildProcess> {
      const child = spawn(command, args, { stdio: ["pipe", "pipe", "inherit"] });
      children.push(child);
      await once(child, "spawn");
      for (const dir of dirs) await writeFile(join(dir, "cgroup.procs"), String(child.pid));
      return child;
    },
  };
}

test("a busy process in a real cgroup shows growing CPU time and over 50% CPU", { skip: !isRoot && "needs root" }, async (t) => {
  const cgroup = await createCgroup(t);
  const before = await readCgroupUsage(cgroup.cgroupPath);
  assert.ok(before, "the new cgroup is readable");
  await cgroup.spawnInside("sh", ["-c", "while :; do :; done"]);

  const sampler = new MetricsSampler();
  sampler.track("busy", { cgroupPath: cgroup.cgroupPath, diskBytes: async () => 4096 });
  await sampler.sampleNow(); // the baseline
  await sleep(1000);
  await sampler.sampleNow();

  const after = await readCgroupUsage(cgroup.cgroupPath);
  assert.ok(after && after.cpuUsageNs - before.cpuUsageNs > 500_000_000, "over half a second of CPU time in ~1 s");
  const points = sampler.metrics("busy")!.points("10m");
  assert.equal(points.length, 1, "the first reading only sets the baseline");
  assert.ok(points[0]!.cpuPct > 50 && points[0]!.cpuPct <= 110, `cpuPct ${points[0]!.cpuPct}`);
  assert.equal(points[0]!.diskBytes, 4096);

  await cgroup.remove();
  for (const dir of cgroup.dirs) assert.equal(existsSync(dir), false, `${dir} removed`);
  assert.equal(await readCgroupUsage(cgroup.cgroupPath), undefined, "a removed cgroup reads as gone");
  // A sandbox whose cgroup went away (checkpointed) keeps getting points, at zero CPU.
  await sampler.sampleNow();
  assert.equal(sampler.metrics("busy")!.points("10m").at(-1)!.cpuPct, 0);
});

test("memory allocated inside a real cgroup shows up in memBytes", { skip: !isRoot && "needs root" }, async (t) => {
  const cgroup = await createCgroup(t);
  // Allocates (and touches) 128 MiB only when told to, after it has been moved into the cgroup:
  // memory is charged to the cgroup a process is in when it touches the page.
  const script =
    "process.stdin.once('data', () => { globalThis.held = Buffer.alloc(128 * 1024 * 1024, 1); console.log('allocated'); });";
  const child = await cgroup.spawnInside(process.execPath, ["-e", script]);
  const before = await readCgroupUsage(cgroup.cgroupPath);
  assert.ok(before);
  child.stdin!.write("go\n");
  const [output] = (await once(child.stdout!, "data")) as [Buffer];
  assert.match(output.toString(), /allocated/);
  const after = await readCgroupUsage(cgroup.cgroupPath);
  assert.ok(after);
  const grown = after.memBytes - before.memBytes;
  assert.ok(grown > 120 * 1024 * 1024, `memBytes grew by ${grown}`);

  await cgroup.remove();
  for (const dir of cgroup.dirs) assert.equal(existsSync(dir), false, `${dir} removed`);
});

test("on this host the reader's memory figure is usage minus inactive file cache", { skip: !isRoot && "needs root" }, async () => {
  const layout = await detectCgroupLayout();
  if (layout.version === "v2") return; // the fixture test above covers v2
  // The parent of every sandbox cgroup exists on an agent host; the root hierarchy always does.
  const usage = await readCgroupUsage("", layout);
  const raw = Number(await readFile(join(layout.root, "memory", "memory.usage_in_bytes"), "utf8"));
  assert.ok(usage && usage.memBytes <= raw && usage.memBytes > 0);
});
