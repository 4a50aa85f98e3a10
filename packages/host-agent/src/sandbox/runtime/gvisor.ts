// The gVisor driver: one OCI bundle and one runsc container per sandbox, envd under tini as PID 1.
//
// Debian's runsc (2022-12) cannot create or join a netns itself on these kernels
// (`--network=sandbox` mistakes any netns for the root one), so the spec names the sandbox's
// prepared netns and runsc runs with `--network=host`: the sentry then uses that namespace's
// interfaces and nothing else. runsc is never started through `ip netns exec` (that remounts
// /sys and breaks cgroups). See docs/host-agent-gvisor.md for the measured facts.
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { runCommand } from "../../exec/command.js";
import { logger } from "../../logging/logger.js";
import type { Cleanup } from "../cleanup.js";
import { readCgroupLimitHits } from "../metrics/cgroup.js";
import { cgroupDirs, killCgroup } from "./cgroup-tree.js";
import { ENVD_BOOT_TOKEN_ENV, ENVD_PORT, type BootRequest, type RuntimeDriver, type RuntimeProbe, type RuntimeSandbox, type RuntimeStatus } from "./driver.js";

const RUN_TIMEOUT_MS = 30_000;
const CONTROL_TIMEOUT_MS = 10_000;
/** Where envd's directory appears inside every sandbox. */
export const ENVD_MOUNT_POINT = "/opt/wrenn";
const SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * What root inside a sandbox may do: Docker's default set without NET_RAW (raw sockets on
 * hostinet would be the host kernel's, and runsc refuses them without --net-raw anyway).
 */
const SANDBOX_CAPABILITIES = [
  "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_SETGID", "CAP_SETUID",
  "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
];

export interface GvisorConfig {
  /** runsc's `--root`: its own record of the containers it runs. */
  stateDir: string;
  /** The host directory mounted read-only at /opt/wrenn (build/opt-wrenn). */
  envdDir: string;
  runsc?: string;
}

export interface GvisorLimits {
  vcpus?: number;
  /**
   * Memory for everything the sandbox holds, sentry included, in MiB (default 512); also the
   * MemTotal the sandbox sees. Going past it gets the whole sandbox OOM-killed by the host.
   */
  memoryMb?: number;
  /**
   * Host tasks the sandbox may hold (default 4096): sentry, gofer and ptrace stub threads, not
   * guest processes. A backstop for the host: reaching it kills the whole sandbox.
   */
  pidsLimit?: number;
}

/** What the OCI spec is written from. */
export interface SpecRequest extends GvisorLimits {
  sandboxId: string;
  rootfsDir: string;
  netnsPath?: string;
  hostname?: string;
  /** envd's first access token (BootRequest.envdBootToken). */
  envdBootToken?: string;
}

/** Idle, a sandbox holds ~50 host tasks; 40 sleeping guest processes ~420. */
export const DEFAULT_LIMITS = { vcpus: 1, memoryMb: 512, pidsLimit: 4096 } as const;
/** The CFS period the cpu quota is a share of (the kernel's default, 100 ms). */
const CPU_PERIOD_US = 100_000;

export interface RunscContainer {
  id: string;
  pid: number;
  status: "created" | "running" | "paused" | "stopped" | string;
}

export class GvisorRuntime implements RuntimeDriver {
  readonly name = "gvisor" as const;
  readonly rootfsKind = "directory" as const;
  /** `runsc checkpoint` refuses hostinet sandboxes on this runsc: snapshots are filesystem-only. */
  readonly memorySnapshots = false;
  private readonly runsc: string;

  constructor(private readonly config: GvisorConfig & { pidsLimit?: number }) {
    this.runsc = config.runsc ?? "runsc";
  }

  /**
   * Boots a real (network-less) sandbox whose only program is tini printing its version: proves
   * runsc, the platform and the envd directory all work here, not merely that a binary exists.
   */
  async probe(): Promise<RuntimeProbe> {
    const result = { name: this.name, memorySnapshots: this.memorySnapshots };
    let version: string;
    try {
      version = (await runCommand(this.runsc, ["--version"], { timeoutMs: CONTROL_TIMEOUT_MS })).split("\n")[0] ?? "";
    } catch (err) {
      return { ...result, available: false, detail: `runsc not usable: ${(err as Error).message}` };
    }
    const dir = await mkdtemp(path.join(tmpdir(), "wrenn-gvisor-probe-"));
    try {
      const rootfsDir = path.join(dir, "rootfs");
      await mkdir(path.join(rootfsDir, "opt", "wrenn"), { recursive: true });
      const id = `wrenn-probe-${process.pid}-${Date.now()}`;
      const spec = ociSpec({ sandboxId: id, rootfsDir, envdDir: this.config.envdDir, args: [path.posix.join(ENVD_MOUNT_POINT, "bin", "tini"), "--version"] });
      await writeFile(path.join(dir, "config.json"), JSON.stringify(spec));
      const out = await runCommand(this.runsc, ["--network=none", "--root", path.join(dir, "state"), "run", "--bundle", dir, id], { timeoutMs: RUN_TIMEOUT_MS });
      if (!/tini/i.test(out)) return { ...result, available: false, detail: `probe sandbox printed ${JSON.stringify(out.slice(0, 200))}` };
      return { ...result, available: true, detail: version };
    } catch (err) {
      return { ...result, available: false, detail: `probe sandbox failed: ${(err as Error).message}` };
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /**
   * Writes the bundle and starts the sandbox; returns once runsc has started it (not once envd
   * answers). Registers the sandbox's stop on `cleanup`.
   */
  async boot(request: BootRequest, cleanup: Cleanup): Promise<void> {
    const log = logger.child({ sandboxId: request.sandboxId, runtime: "gvisor" });
    if (request.rootfs.kind !== "directory") throw new Error(`gvisor boots a directory, not a ${request.rootfs.kind} rootfs`);
    const bundleDir = bundleDirOf(request.sandboxDir);
    await mkdir(bundleDir, { recursive: true });
    await mkdir(this.config.stateDir, { recursive: true });
    const args = await envdCommand(this.config.envdDir);
    const spec = ociSpec({
      sandboxId: request.sandboxId,
      rootfsDir: request.rootfs.path,
      netnsPath: request.netnsPath,
      hostname: request.hostname,
      envdBootToken: request.envdBootToken,
      vcpus: request.vcpus,
      memoryMb: request.memoryMb,
      pidsLimit: this.config.pidsLimit,
      args,
      envdDir: this.config.envdDir,
    });
    await writeFile(path.join(bundleDir, "config.json"), JSON.stringify(spec, null, 2));
    // Registered before `run`: a run that fails halfway can leave a created container behind.
    cleanup.defer(`stop gvisor sandbox ${request.sandboxId}`, () => this.stop(request.sandboxId));
    const started = performance.now();
    // The detached sandbox inherits runsc's stdout/stderr: envd's output lands in console.log.
    await this.control(["run", "--detach", "--bundle", bundleDir, containerId(request.sandboxId)], {
      timeoutMs: RUN_TIMEOUT_MS,
      outputFile: consoleLogOf(request.sandboxDir),
    });
    log.info({ ms: Math.round(performance.now() - started) }, "gvisor sandbox started");
  }

  /**
   * Kills every process of the sandbox, removes its cgroup and runsc's record of it; a sandbox
   * already gone is fine. Not `runsc delete`: after its SIGKILL it polls every 100 ms until the
   * sandbox's pid is gone, i.e. until whoever inherited the orphaned sandbox reaps it — PID 1
   * here, which reaps every ~2 s. The cgroup holds every host process of the sandbox (sentry,
   * gofer, ptrace stubs); once it is empty they have all exited and released their memory,
   * files, mounts and netns; what is left is a zombie's pid for PID 1 to reap.
   */
  async stop(sandboxId: string): Promise<void> {
    const id = containerId(sandboxId);
    const cgroups = await cgroupDirs(this.cgroupPath(sandboxId));
    const stateFiles = await this.stateFiles(id);
    if (cgroups.length > 0) await killCgroup(cgroups, CONTROL_TIMEOUT_MS);
    if (cgroups.length > 0 && stateFiles.length > 0) {
      for (const file of stateFiles) await rm(file, { force: true });
      return;
    }
    // No cgroup or no state file where this runsc keeps them: gone, half-deleted, or a layout
    // this code does not know. runsc then finds and deletes the container itself (slowly).
    const container = (await this.list()).find((c) => c.id === sandboxId);
    if (container) await this.deleteWithRunsc(sandboxId, container.status);
  }

  /**
   * `runsc delete --force`. This runsc panics on it for a paused container ("invalid state
   * transition: paused => stopped", after having cleaned up): resume first, and trust the list.
   */
  private async deleteWithRunsc(sandboxId: string, status: RuntimeStatus): Promise<void> {
    if (status === "paused") await this.resume(sandboxId).catch(() => undefined);
    try {
      await this.control(["delete", "--force", containerId(sandboxId)], { timeoutMs: CONTROL_TIMEOUT_MS });
    } catch (err) {
      if ((await this.list()).some((c) => c.id === sandboxId)) throw err;
    }
  }

  /**
   * runsc's record of a root container, as `runsc delete` removes it: `<id>_sandbox:<id>.state`
   * (what `runsc list` reads), then its `.lock`. Only those that exist.
   */
  private async stateFiles(id: string): Promise<string[]> {
    const names = await readdir(this.config.stateDir).catch(() => [] as string[]);
    return [`${id}_sandbox:${id}.state`, `${id}_sandbox:${id}.lock`].filter((name) => names.includes(name)).map((name) => path.join(this.config.stateDir, name));
  }

  /** Freezes every process of the sandbox (this runsc cannot checkpoint hostinet sandboxes). */
  async pause(sandboxId: string): Promise<void> {
    await this.control(["pause", containerId(sandboxId)], { timeoutMs: CONTROL_TIMEOUT_MS });
  }

  async resume(sandboxId: string): Promise<void> {
    await this.control(["resume", containerId(sandboxId)], { timeoutMs: CONTROL_TIMEOUT_MS });
  }

  /** The containers runsc knows under this state directory. */
  async containers(): Promise<RunscContainer[]> {
    if (!existsSync(this.config.stateDir)) return [];
    const out = await this.control(["list", "--format=json"], { timeoutMs: CONTROL_TIMEOUT_MS });
    const parsed = JSON.parse(out) as { id: string; pid: number; status: string }[] | null;
    return (parsed ?? []).map(({ id, pid, status }) => ({ id, pid, status }));
  }

  async list(): Promise<RuntimeSandbox[]> {
    const statusOf = (status: string): RuntimeStatus => (status === "running" || status === "paused" ? status : "stopped");
    return (await this.containers())
      .filter(({ id }) => id.endsWith(CONTAINER_SUFFIX))
      .map(({ id, status }) => ({ id: id.slice(0, -CONTAINER_SUFFIX.length), status: statusOf(status) }));
  }

  cgroupPath(sandboxId: string): string {
    return `/wrenn/${sandboxId}`;
  }

  consoleLog(sandboxDir: string): string {
    return consoleLogOf(sandboxDir);
  }

  /** Reads the sandbox's host cgroup before it is deleted: an OOM kill or a full pids budget. */
  async exitReason(sandboxId: string): Promise<string | undefined> {
    const hits = await readCgroupLimitHits(this.cgroupPath(sandboxId));
    if (hits.oomKills > 0) return `out of memory: the sandbox used its whole memory limit (${Math.round(hits.memoryLimitBytes / 2 ** 20)} MiB) and was killed`;
    if (hits.pidsLimitHits > 0) return "process limit: the sandbox reached its task limit and was stopped";
    return undefined;
  }

  private async control(args: string[], options: { timeoutMs: number; outputFile?: string }): Promise<string> {
    return runCommand(this.runsc, ["--network=host", "--root", this.config.stateDir, ...args], options);
  }
}

/**
 * envd's start command inside the sandbox, shell-free: tini as PID 1, then the argv from
 * `envd.argv` (relative paths joined to the mount point), then envd's port.
 */
export async function envdCommand(envdDir: string, port = ENVD_PORT): Promise<string[]> {
  const lines = (await readFile(path.join(envdDir, "envd.argv"), "utf8")).split("\n").filter(Boolean);
  const argv = lines.map((arg) => (arg.startsWith("-") ? arg : path.posix.join(ENVD_MOUNT_POINT, arg)));
  return [path.posix.join(ENVD_MOUNT_POINT, "bin", "tini"), "-s", "--", ...argv, "--port", String(port)];
}

/**
 * runsc finds a container by id *prefix* and refuses an id that prefixes another ("idle1" vs
 * "idle11": "id is ambiguous"). Sandbox ids never contain '.', so ending every container id with
 * this suffix makes no id a prefix of another.
 */
const CONTAINER_SUFFIX = ".sandbox";

export function containerId(sandboxId: string): string {
  return sandboxId + CONTAINER_SUFFIX;
}

export function bundleDirOf(sandboxDir: string): string {
  return path.join(sandboxDir, "bundle");
}

/** Where a sandbox's console (envd's stdout and stderr) is appended: runsc's output file. */
export function consoleLogOf(sandboxDir: string): string {
  return path.join(bundleDirOf(sandboxDir), "console.log");
}

/** The OCI runtime spec for one sandbox. */
export function ociSpec(options: SpecRequest & { args: string[]; envdDir: string }): Record<string, unknown> {
  return {
    ociVersion: "1.0.2",
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: options.args,
      // Without these, root inside has no capabilities: envd could neither start processes as
      // another user (setuid/setgid) nor write into and chown in users' homes.
      capabilities: {
        bounding: SANDBOX_CAPABILITIES,
        effective: SANDBOX_CAPABILITIES,
        permitted: SANDBOX_CAPABILITIES,
        inheritable: SANDBOX_CAPABILITIES,
      },
      noNewPrivileges: false,
      env: [`PATH=${SANDBOX_PATH}`, "HOME=/root", ...(options.envdBootToken ? [`${ENVD_BOOT_TOKEN_ENV}=${options.envdBootToken}`] : [])],
      cwd: "/",
    },
    root: { path: options.rootfsDir, readonly: false },
    hostname: options.hostname ?? options.sandboxId,
    mounts: [
      { destination: "/proc", type: "proc", source: "proc" },
      { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"] },
      // envd's PTYs need /dev/ptmx and /dev/pts.
      { destination: "/dev/pts", type: "devpts", source: "devpts", options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
      { destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
      { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
      { destination: "/tmp", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "mode=1777"] },
      { destination: ENVD_MOUNT_POINT, type: "bind", source: options.envdDir, options: ["rbind", "ro"] },
    ],
    linux: {
      // Grouped under one parent so the host's cgroup tree shows which sandboxes are Wrenn's.
      cgroupsPath: `/wrenn/${options.sandboxId}`,
      resources: sandboxResources(options),
      namespaces: [
        { type: "pid" },
        { type: "ipc" },
        { type: "uts" },
        { type: "mount" },
        // No path (the probe): left out, and runsc runs with --network=none.
        ...(options.netnsPath ? [{ type: "network", path: options.netnsPath }] : []),
      ],
    },
  };
}

/**
 * `linux.resources` for one sandbox. runsc writes them to the host cgroup /wrenn/<id>; gVisor does
 * not enforce them inside (this runsc has no in-sandbox OOM killer or pids controller).
 */
export function sandboxResources(limits: GvisorLimits): Record<string, unknown> {
  const vcpus = limits.vcpus ?? DEFAULT_LIMITS.vcpus;
  const memoryMb = limits.memoryMb ?? DEFAULT_LIMITS.memoryMb;
  const pidsLimit = limits.pidsLimit ?? DEFAULT_LIMITS.pidsLimit;
  return {
    cpu: { quota: Math.round(vcpus * CPU_PERIOD_US), period: CPU_PERIOD_US },
    memory: { limit: memoryMb * 1024 * 1024 },
    pids: { limit: pidsLimit },
  };
}
