// What every isolation runtime offers the layers above it. The sandbox manager prepares a root
// filesystem and a network namespace, then asks a driver to boot, freeze, thaw and stop what runs
// on them. gVisor boots a directory; the VM drivers (qemu, firecracker) will boot a block image
// and add a TAP device inside the same namespace, and can also capture memory.
import type { Cleanup } from "../cleanup.js";

export type RuntimeName = "gvisor" | "qemu" | "firecracker";

/** Every runtime starts envd on this port inside the sandbox: the agent reaches it at the sandbox's address. */
export const ENVD_PORT = 49983;

/** How a driver wants the sandbox's root filesystem handed to it. */
export type RootfsKind = "directory" | "block";

export interface RuntimeProbe {
  name: RuntimeName;
  /** Whether a real sandbox booted and answered during the probe. */
  available: boolean;
  /** The version found, or why the runtime cannot be used here. */
  detail: string;
  memorySnapshots: boolean;
}

export interface BootRequest {
  sandboxId: string;
  /** The sandbox's own directory: the driver keeps its bundle, sockets and console log there. */
  sandboxDir: string;
  /**
   * "directory": the mounted rootfs to boot. "block": the template's read-only image, and the
   * sandbox's own disk to make over it (`sizeMb`: what the sandbox sees as its disk).
   */
  rootfs: { kind: RootfsKind; path: string; disk?: { path: string; sizeMb: number } };
  /** The prepared network namespace, e.g. /var/run/netns/wrenn-<id>. */
  netnsPath: string;
  /** The address envd will answer on inside the namespace. */
  sandboxAddress: string;
  hostname?: string;
  /** CPU time the sandbox may use, in whole or fractional CPUs. */
  vcpus: number;
  /** Memory for everything the sandbox holds, in MiB. */
  memoryMb: number;
  /**
   * The token envd requires from its first request (ENVD_BOOT_TOKEN_ENV), until the host's /init
   * replaces it: no envd is ever open to whoever reaches its address first. The manager always
   * sets it; a driver test may leave envd open.
   */
  envdBootToken?: string;
  /**
   * A VM driver's saved state (a template's memory snapshot) to start from instead of booting:
   * the processes it held run on. The disk must be a copy-on-write copy of the disk it was taken
   * with, of the same size, and memory and vCPUs the same as then.
   */
  restoreFrom?: string;
}

/** The environment variable that gives envd its first access token (packages/envd/src/main.ts reads and removes it). */
export const ENVD_BOOT_TOKEN_ENV = "WRENN_ENVD_ACCESS_TOKEN";

/** "hibernated": memory on the host's disk, no process (a VM driver's `hibernate`). */
export type RuntimeStatus = "running" | "paused" | "hibernated" | "stopped";

export interface RuntimeSandbox {
  id: string;
  status: RuntimeStatus;
}

export interface RuntimeDriver {
  readonly name: RuntimeName;
  readonly rootfsKind: RootfsKind;
  /** Whether `pause` keeps memory and processes (true for all drivers today). */
  readonly memorySnapshots: boolean;
  /** Boots a real sandbox and reports whether this runtime works on this host. */
  probe(): Promise<RuntimeProbe>;
  /** Starts the sandbox (envd starting inside); registers its stop on `cleanup`. */
  boot(request: BootRequest, cleanup: Cleanup): Promise<void>;
  /** Stops the sandbox and releases what the runtime holds for it; a sandbox already gone is fine. */
  stop(sandboxId: string): Promise<void>;
  /** Freezes every process of the sandbox. */
  pause(sandboxId: string): Promise<void>;
  resume(sandboxId: string): Promise<void>;
  /**
   * Saves the sandbox's memory and devices to the host's disk and ends its process (memory and
   * CPU freed; disk and network kept); `restore` brings the same processes back. Absent on
   * runtimes that cannot.
   */
  hibernate?(sandboxId: string): Promise<void>;
  restore?(sandboxId: string): Promise<void>;
  /**
   * Saves the VM's memory and devices to `stateFile`, leaving it stopped (`resume` runs it on); if
   * saving fails, it runs on when `runOnFailure` (it was running), else stays stopped.
   */
  saveState?(sandboxId: string, stateFile: string, options: { runOnFailure: boolean }): Promise<void>;
  /** What a saved state depends on (accelerator, guest kernel and envd image): a state saved under another cannot be restored. */
  stateIdentity?(): Promise<string>;
  /** What the runtime has running or frozen now (also what survived an agent restart). */
  list(): Promise<RuntimeSandbox[]>;
  /** The host cgroup (relative to the controller roots) that bounds the sandbox, for metrics. */
  cgroupPath(sandboxId: string): string;
  /** Why a sandbox stopped by itself, when the runtime can tell (e.g. "out of memory"). */
  exitReason(sandboxId: string): Promise<string | undefined>;
  /** The file that gets the sandbox's console (envd's own output, a VM's kernel and init). */
  consoleLog(sandboxDir: string): string;
}
