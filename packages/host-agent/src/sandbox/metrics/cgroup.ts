// Reads a sandbox's CPU time and memory from its host cgroup (runsc puts every process of the
// sandbox there), on cgroup v1 (this dev machine) and v2 (production hosts) alike.
import { access, readFile } from "node:fs/promises";

export interface CgroupUsage {
  /** CPU time used by the cgroup since it was created, in nanoseconds. */
  cpuUsageNs: number;
  /** Memory in use minus inactive page cache: the number `docker stats` shows. */
  memBytes: number;
}

export type CgroupVersion = "v1" | "v2";

/** Where the cgroup hierarchies are mounted and which version they are. */
export interface CgroupLayout {
  root: string;
  version: CgroupVersion;
}

const CGROUP_ROOT = "/sys/fs/cgroup";

/** v2 ("unified") when the root itself is a cgroup2 mount; a hybrid host counts as v1. */
export async function detectCgroupLayout(root = CGROUP_ROOT): Promise<CgroupLayout> {
  const unified = await access(`${root}/cgroup.controllers`).then(() => true, () => false);
  return { root, version: unified ? "v2" : "v1" };
}

// The host's layout cannot change while the agent runs, so it is probed once.
let hostLayout: Promise<CgroupLayout> | undefined;
const hostCgroupLayout = (): Promise<CgroupLayout> => (hostLayout ??= detectCgroupLayout());

/** How often a cgroup hit its limits: what tells why a sandbox died by itself. */
export interface CgroupLimitHits {
  /** Processes the kernel's OOM killer killed in the cgroup. */
  oomKills: number;
  memoryLimitBytes: number;
  /** Forks the pids controller refused. */
  pidsLimitHits: number;
}

/** Reads the cgroup's limit events (missing files count as none). Must run before the cgroup is removed. */
export async function readCgroupLimitHits(cgroupPath: string): Promise<CgroupLimitHits> {
  const { root, version } = await hostCgroupLayout();
  const read = (file: string) => readFile(file, "utf8").catch(() => "");
  const [memoryEvents, memoryLimit, pidsEvents] =
    version === "v2"
      ? await Promise.all([read(`${root}${cgroupPath}/memory.events`), read(`${root}${cgroupPath}/memory.max`), read(`${root}${cgroupPath}/pids.events`)])
      : await Promise.all([
          read(`${root}/memory${cgroupPath}/memory.oom_control`),
          read(`${root}/memory${cgroupPath}/memory.limit_in_bytes`),
          read(`${root}/pids${cgroupPath}/pids.events`),
        ]);
  return { oomKills: statField(memoryEvents, "oom_kill"), memoryLimitBytes: Number(memoryLimit.trim()) || 0, pidsLimitHits: statField(pidsEvents, "max") };
}

/**
 * The usage of the cgroup at `cgroupPath` (e.g. "/wrenn/<sandboxId>"), or undefined when the
 * cgroup does not exist (the sandbox stopped or was checkpointed). `layout` is for tests.
 */
export async function readCgroupUsage(
  cgroupPath: string,
  layout?: CgroupLayout,
): Promise<CgroupUsage | undefined> {
  const { root, version } = layout ?? (await hostCgroupLayout());
  try {
    return version === "v2" ? await readV2(`${root}${cgroupPath}`) : await readV1(root, cgroupPath);
  } catch (err) {
    // ENOENT: never created or already removed; ENODEV: removed while being read.
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENODEV") return undefined;
    throw err;
  }
}

async function readV1(root: string, cgroupPath: string): Promise<CgroupUsage> {
  // cpuacct may be mounted alone or with cpu ("cpu,cpuacct" plus a "cpuacct" link): this path
  // works for both.
  const [cpuUsage, memoryUsage, memoryStat] = await Promise.all([
    readFile(`${root}/cpuacct${cgroupPath}/cpuacct.usage`, "utf8"),
    readFile(`${root}/memory${cgroupPath}/memory.usage_in_bytes`, "utf8"),
    readFile(`${root}/memory${cgroupPath}/memory.stat`, "utf8"),
  ]);
  // total_* counts the cgroup and its children (gVisor may nest its own below the sandbox's).
  const inactiveFile = statField(memoryStat, "total_inactive_file");
  return { cpuUsageNs: Number(cpuUsage.trim()), memBytes: withoutCache(Number(memoryUsage.trim()), inactiveFile) };
}

async function readV2(dir: string): Promise<CgroupUsage> {
  const [cpuStat, memoryCurrent, memoryStat] = await Promise.all([
    readFile(`${dir}/cpu.stat`, "utf8"),
    readFile(`${dir}/memory.current`, "utf8"),
    readFile(`${dir}/memory.stat`, "utf8"),
  ]);
  return {
    cpuUsageNs: statField(cpuStat, "usage_usec") * 1000,
    memBytes: withoutCache(Number(memoryCurrent.trim()), statField(memoryStat, "inactive_file")),
  };
}

/** Usage minus inactive file cache, never below zero (the counters are read at slightly different times). */
function withoutCache(usage: number, inactiveFile: number): number {
  return Math.max(0, usage - inactiveFile);
}

/** The value of `key` in a "key value" per line file (memory.stat, cpu.stat); 0 when absent. */
function statField(text: string, key: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${key} `));
  return line ? Number(line.slice(key.length + 1)) : 0;
}
