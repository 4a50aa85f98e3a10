// Whether this host's KVM runs guests, for the VM drivers. /dev/kvm can exist and open while a
// guest hangs (the machines this project is built on have only a PVM module), so the proof is a
// kernel booted under KVM: with no root disk it panics within a second, and the VMM exits.
import { constants, type PathLike } from "node:fs";
import { access, mkdir, open, readFile, writeFile } from "node:fs/promises";
import { release } from "node:os";
import path from "node:path";
import { logger } from "../../logging/logger.js";

export const KVM_DEVICE = "/dev/kvm";
/** How long a probe kernel may take to reach its panic: under working KVM it takes well under a second. */
export const KVM_PROBE_TIMEOUT_MS = 5_000;
/** What a kernel prints when it got as far as looking for its root filesystem. */
const KERNEL_RAN = /Kernel panic|VFS: Unable to mount root/;

export interface KvmProbe {
  /** The driver asking: named in the log line. */
  driver: string;
  /** Where the verdict is kept until the host reboots (it cannot change before). */
  cacheFile: string;
  /** What else the verdict depends on (the VMM's and the guest kernel's versions); the host kernel's release is added. */
  key: string;
  /**
   * Boots the guest kernel alone under KVM (no root disk, `panic=-1 reboot=k` so the VMM exits)
   * and resolves to what it printed; killed after `timeoutMs`.
   */
  bootKernel(timeoutMs: number): Promise<string>;
}

/**
 * True when a kernel booted under KVM reaches its panic in time; false when /dev/kvm is not usable
 * or the guest hangs (as here). The verdict is cached in `cacheFile` (`{ key, accelerator }`,
 * "kvm" or "tcg": the shape the qemu driver has always written).
 */
export async function kvmRunsGuests(probe: KvmProbe): Promise<boolean> {
  if (!(await access(KVM_DEVICE, constants.R_OK | constants.W_OK).then(() => true, () => false))) return false;
  const key = `${probe.key}|${release()}`;
  const cached = await readFile(probe.cacheFile, "utf8").then((text) => JSON.parse(text) as { key: string; accelerator: "kvm" | "tcg" }, () => undefined);
  if (cached?.key === key) return cached.accelerator === "kvm";
  let accelerator: "kvm" | "tcg" = "tcg";
  try {
    if (KERNEL_RAN.test(await probe.bootKernel(KVM_PROBE_TIMEOUT_MS))) accelerator = "kvm";
  } catch {
    // timed out: KVM guests hang here
  }
  await mkdir(path.dirname(probe.cacheFile), { recursive: true });
  await writeFile(probe.cacheFile, JSON.stringify({ key, accelerator }));
  logger.info({ accelerator }, `KVM probe for the ${probe.driver} driver`);
  return accelerator === "kvm";
}

/** Why `device` (/dev/kvm) cannot be opened for reading and writing, or undefined when it can. */
export async function kvmDeviceProblem(device: PathLike = KVM_DEVICE): Promise<string | undefined> {
  try {
    await (await open(device, "r+")).close();
    return undefined;
  } catch (err) {
    return `${String(device)} cannot be opened read-write: ${(err as Error).message}`;
  }
}
