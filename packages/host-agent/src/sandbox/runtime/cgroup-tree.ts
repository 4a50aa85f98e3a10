// A sandbox's host cgroup as a tree to create, fill and empty: what the runtimes share. runsc
// makes its own (from the OCI spec); the VM drivers make theirs here.
import { mkdir, readdir, readFile, rmdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { detectCgroupLayout } from "../metrics/cgroup.js";

/**
 * The sandbox's cgroup directories in every hierarchy (one on v2, one per controller on v1),
 * children before parents so they can be removed in order.
 */
export async function cgroupDirs(cgroupPath: string): Promise<string[]> {
  const layout = await detectCgroupLayout();
  const hierarchies =
    layout.version === "v2"
      ? [layout.root]
      : (await readdir(layout.root, { withFileTypes: true })).filter((entry) => entry.isDirectory()).map((entry) => path.join(layout.root, entry.name));
  const found: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => undefined);
    if (!entries) return; // not in this hierarchy (or already removed)
    for (const entry of entries) if (entry.isDirectory()) await walk(path.join(dir, entry.name));
    found.push(dir);
  };
  for (const hierarchy of hierarchies) await walk(path.join(hierarchy, cgroupPath));
  return found;
}

/**
 * SIGKILLs every process in `dirs` and removes them, retrying until the kernel lets them go
 * (rmdir fails with EBUSY while a task has not finished exiting); fails after `timeoutMs`.
 */
export async function killCgroup(dirs: string[], timeoutMs: number): Promise<void> {
  const started = performance.now();
  let left = dirs;
  for (;;) {
    for (const dir of left) {
      const procs = await readFile(path.join(dir, "cgroup.procs"), "utf8").catch(() => "");
      for (const pid of procs.split("\n").filter(Boolean)) {
        try {
          process.kill(Number(pid), "SIGKILL");
        } catch {
          // Already exited.
        }
      }
    }
    const busy: string[] = [];
    for (const dir of left) {
      try {
        await rmdir(dir);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "EBUSY") busy.push(dir);
        else if (code !== "ENOENT") throw err;
      }
    }
    if (busy.length === 0) return;
    if (performance.now() - started > timeoutMs) throw new Error(`processes still in ${busy.join(", ")} ${timeoutMs} ms after SIGKILL`);
    left = busy;
    await sleep(5);
  }
}

export interface CgroupLimits {
  /** CPU time per period, in whole or fractional CPUs. */
  vcpus: number;
  memoryBytes: number;
  pidsLimit?: number;
}

/** The CFS period the cpu quota is a share of (the kernel's default, 100 ms). */
const CPU_PERIOD_US = 100_000;

/**
 * Creates the cgroup `cgroupPath` with `limits` and moves `pid` into it (v2: one tree; v1: the
 * memory, cpu, cpuacct and pids hierarchies, never cpuset, which takes no task before its cpus
 * and mems are set). Returns the directories made, for the caller's undo.
 */
export async function placeInCgroup(cgroupPath: string, pid: number, limits: CgroupLimits): Promise<string[]> {
  const layout = await detectCgroupLayout();
  const quota = Math.round(limits.vcpus * CPU_PERIOD_US);
  const made: string[] = [];
  const make = async (dir: string, files: Record<string, string>) => {
    await mkdir(dir, { recursive: true });
    made.push(dir);
    for (const [file, value] of Object.entries(files)) await writeFile(path.join(dir, file), value);
    await writeFile(path.join(dir, "cgroup.procs"), String(pid));
  };
  if (layout.version === "v2") {
    // Each level must hand the controllers down to the next.
    let parent = layout.root;
    for (const part of path.posix.dirname(cgroupPath).split("/").filter(Boolean)) {
      await writeFile(path.join(parent, "cgroup.subtree_control"), "+cpu +memory +pids").catch(() => undefined);
      parent = path.join(parent, part);
      await mkdir(parent, { recursive: true });
    }
    await writeFile(path.join(parent, "cgroup.subtree_control"), "+cpu +memory +pids").catch(() => undefined);
    await make(path.join(layout.root, cgroupPath), {
      "memory.max": String(limits.memoryBytes),
      "cpu.max": `${quota} ${CPU_PERIOD_US}`,
      ...(limits.pidsLimit ? { "pids.max": String(limits.pidsLimit) } : {}),
    });
    return made;
  }
  const hierarchies = new Set((await readdir(layout.root, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name));
  const cpu = [...hierarchies].find((name) => name.split(",").includes("cpu"));
  if (hierarchies.has("memory")) await make(path.join(layout.root, "memory", cgroupPath), { "memory.limit_in_bytes": String(limits.memoryBytes) });
  if (cpu) await make(path.join(layout.root, cpu, cgroupPath), { "cpu.cfs_period_us": String(CPU_PERIOD_US), "cpu.cfs_quota_us": String(quota) });
  const cpuacct = [...hierarchies].find((name) => name !== cpu && name.split(",").includes("cpuacct"));
  if (cpuacct) await make(path.join(layout.root, cpuacct, cgroupPath), {});
  if (hierarchies.has("pids")) await make(path.join(layout.root, "pids", cgroupPath), limits.pidsLimit ? { "pids.max": String(limits.pidsLimit) } : {});
  return made;
}
