// A sandbox's disk quota: a sparse ext4 image, `<sandboxDir>/disk.img`, loop-mounted at
// `<sandboxDir>/disk`. The overlay's upper and work dirs live inside it, so a sandbox that fills it
// gets ENOSPC while the host's disk only pays for the blocks actually written.
import { statSync } from "node:fs";
import { mkdir, open, realpath, rm, rmdir, stat, statfs } from "node:fs/promises";
import path from "node:path";
import { runCommand } from "../../exec/command.js";
import type { Cleanup } from "../cleanup.js";
import { mountsUnder, upperDirIn } from "./rootfs.js";

const MIB = 1024 * 1024;
const MKFS_TIMEOUT_MS = 60_000;
const MOUNT_TIMEOUT_MS = 10_000;

/** Below this a sandbox could not even start a shell; also the smallest image worth formatting. */
export const MIN_FREE_DISK_MB = 64;
/** Larger requests are typos, not disks (1 TiB); a host may configure its own ceiling. */
export const DEFAULT_MAX_DISK_SIZE_MB = 1024 * 1024;

export interface SandboxDisk {
  /** The sparse image file holding the filesystem. */
  imagePath: string;
  /** Where it is mounted; the overlay's upper and work dirs go here (mountRootfs's upperParent). */
  mountPoint: string;
  /** The overlay upper dir inside it, once mountRootfs made it: the sandbox's writes, for snapshots. */
  upperDir: string;
  /** The image's size: the most the sandbox can write. */
  sizeMb: number;
}

/** A requested disk size that is not a whole number of MiB, too large, or too small for the template. */
export class InvalidDiskSizeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvalidDiskSizeError";
  }
}

export interface DiskSizeLimits {
  /** Default DEFAULT_MAX_DISK_SIZE_MB. */
  maxDiskSizeMb?: number;
  /** Default MIN_FREE_DISK_MB. */
  minFreeMb?: number;
}

/**
 * The quota of the writable layer, in MiB, for a sandbox asking for `diskSizeMb` in total (what it
 * sees as its disk, like E2B's disk_size_mb) over a template of `templateSizeBytes`.
 */
export function writableLayerMb(diskSizeMb: number, templateSizeBytes: number, limits: DiskSizeLimits = {}): number {
  const maxDiskSizeMb = limits.maxDiskSizeMb ?? DEFAULT_MAX_DISK_SIZE_MB;
  const minFreeMb = limits.minFreeMb ?? MIN_FREE_DISK_MB;
  if (!Number.isSafeInteger(diskSizeMb) || diskSizeMb <= 0) {
    throw new InvalidDiskSizeError(`disk_size_mb must be a positive whole number of MiB, got ${diskSizeMb}`);
  }
  if (diskSizeMb > maxDiskSizeMb) {
    throw new InvalidDiskSizeError(`disk_size_mb ${diskSizeMb} is more than this host allows (${maxDiskSizeMb} MiB)`);
  }
  const templateMb = Math.ceil(templateSizeBytes / MIB);
  if (diskSizeMb < templateMb + minFreeMb) {
    throw new InvalidDiskSizeError(
      `disk_size_mb ${diskSizeMb} is too small: the template takes ${templateMb} MiB and a sandbox needs ` +
        `${minFreeMb} MiB free, so ask for at least ${templateMb + minFreeMb}`,
    );
  }
  return diskSizeMb - templateMb;
}

/** The disk's paths inside `sandboxDir` (nothing is created). */
function diskPaths(sandboxDir: string, sizeMb: number): SandboxDisk {
  const dir = path.resolve(sandboxDir);
  const mountPoint = path.join(dir, "disk");
  return { imagePath: path.join(dir, "disk.img"), mountPoint, upperDir: upperDirIn(mountPoint), sizeMb };
}

/**
 * The disk of a VM sandbox in `sandboxDir`: a qcow2 overlay of its template's image, written by the
 * VM driver, never mounted on the host; `destroyDisk` and `diskUsageBytes` (blocks the overlay holds:
 * what the sandbox wrote) work on it as on any disk.
 */
export function vmDiskOf(sandboxDir: string, sizeMb: number): SandboxDisk {
  return { ...diskPaths(sandboxDir, sizeMb), imagePath: path.join(path.resolve(sandboxDir), "root.qcow2") };
}

/**
 * Creates, formats and mounts a `sizeMb` disk for the sandbox in `sandboxDir`, registering on
 * `cleanup` the unmount (which frees the loop device) and the removal of everything it made.
 */
export async function createDisk(sandboxDir: string, sizeMb: number, cleanup: Cleanup): Promise<SandboxDisk> {
  if (!Number.isSafeInteger(sizeMb) || sizeMb < MIN_FREE_DISK_MB) {
    throw new InvalidDiskSizeError(`a sandbox disk must be a whole number of MiB, at least ${MIN_FREE_DISK_MB}; got ${sizeMb}`);
  }
  const disk = diskPaths(sandboxDir, sizeMb);
  await mkdir(path.dirname(disk.imagePath), { recursive: true });

  const image = await open(disk.imagePath, "wx", 0o600); // "x": never reuse another sandbox's disk
  cleanup.defer(`remove ${disk.imagePath}`, () => removeImage(disk));
  try {
    await image.truncate(sizeMb * MIB); // sparse: no block is allocated yet
  } finally {
    await image.close();
  }
  await runCommand("mkfs.ext4", mkfsArguments(disk), { timeoutMs: MKFS_TIMEOUT_MS });

  await mkdir(disk.mountPoint);
  cleanup.defer(`remove ${disk.mountPoint}`, () => removeMountPoint(disk));
  // util-linux sets up the loop device with autoclear: unmounting detaches it.
  await runCommand("mount", ["-t", "ext4", "-o", "loop,noatime,nosuid,nodev", disk.imagePath, disk.mountPoint], {
    timeoutMs: MOUNT_TIMEOUT_MS,
  });
  cleanup.defer(`unmount ${disk.mountPoint}`, () => unmountDisk(disk));
  return disk;
}

// -m 0: no blocks reserved for root (the sandbox is root anyway). A small journal: it comes out of
// the quota. mke2fs "discards" a regular file by punching holes, learns the file then reads as
// zeros and marks the inode tables initialised, so the kernel never writes them in the background
// (with nodiscard it would, over time, allocating 16 MiB per GiB of the sparse file).
function mkfsArguments(disk: SandboxDisk): string[] {
  const journalMb = Math.min(16, Math.max(4, Math.floor(disk.sizeMb / 64)));
  return [
    "-q", "-F", "-t", "ext4", "-b", "4096", "-i", "16384", "-I", "256", "-m", "0",
    "-J", `size=${journalMb}`, "-E", "lazy_itable_init=1,lazy_journal_init=1", "-L", "wrenn-disk",
    disk.imagePath,
  ];
}

/**
 * Unmounts the disk, frees its loop device and removes the image and mount point. Safe to repeat,
 * and to call on a disk that was only half created.
 */
export async function destroyDisk(disk: SandboxDisk): Promise<void> {
  await unmountDisk(disk);
  await removeMountPoint(disk);
  await removeImage(disk);
}

/** Whether the disk's filesystem is mounted at its mount point. */
export async function isDiskMounted(disk: SandboxDisk): Promise<boolean> {
  return (await mountsUnder(disk.mountPoint)).includes(disk.mountPoint);
}

/**
 * Bytes the sandbox has written (used blocks of the disk's filesystem, a few KiB when fresh);
 * when the disk is not mounted, the blocks its image holds on the host; 0 when there is no disk.
 */
export async function diskUsageBytes(disk: SandboxDisk): Promise<number> {
  if (await isDiskMounted(disk)) {
    const fs = await statfs(disk.mountPoint, { bigint: true });
    return Number((fs.blocks - fs.bfree) * fs.bsize);
  }
  try {
    return (await stat(disk.imagePath)).blocks * 512;
  } catch (err) {
    if (isNotFound(err)) return 0;
    throw err;
  }
}

/**
 * The disk of the sandbox in `sandboxDir`, for an agent that restarted (its mounts outlive it).
 * `sizeMb` comes from the image; it is 0 when the image is gone (destroyDisk still works).
 */
export function diskOf(sandboxDir: string): SandboxDisk {
  const disk = diskPaths(sandboxDir, 0);
  try {
    disk.sizeMb = Math.floor(statSync(disk.imagePath).size / MIB);
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  return disk;
}

async function unmountDisk(disk: SandboxDisk): Promise<void> {
  if (await isDiskMounted(disk)) {
    await runCommand("umount", [disk.mountPoint], { timeoutMs: MOUNT_TIMEOUT_MS });
  }
  await detachLoopDevices(disk.imagePath);
}

// Autoclear detaches the device on unmount; this catches one left by a mount that failed halfway
// or by anyone who attached the image by hand.
async function detachLoopDevices(imagePath: string): Promise<void> {
  for (const device of await loopDevicesBackedBy(imagePath)) {
    try {
      await runCommand("losetup", ["--detach", device], { timeoutMs: MOUNT_TIMEOUT_MS });
    } catch (err) {
      if ((await loopDevicesBackedBy(imagePath)).includes(device)) throw err; // not just autocleared meanwhile
    }
  }
}

/** Loop devices whose backing file is `imagePath` (also after the file was deleted). */
export async function loopDevicesBackedBy(imagePath: string): Promise<string[]> {
  // The kernel records the path with symlinks resolved (/tmp may be one).
  const dir = await realpath(path.dirname(imagePath)).catch(() => path.dirname(imagePath));
  const wanted = new Set([imagePath, path.join(dir, path.basename(imagePath))]);
  const output = await runCommand("losetup", ["--list", "--json", "--output", "NAME,BACK-FILE"], { timeoutMs: MOUNT_TIMEOUT_MS });
  if (output.trim() === "") return [];
  const { loopdevices } = JSON.parse(output) as { loopdevices: { name: string; "back-file": string | null }[] };
  return loopdevices
    .filter((device) => wanted.has(device["back-file"]?.replace(/ \(deleted\)$/, "") ?? ""))
    .map((device) => device.name);
}

async function removeMountPoint(disk: SandboxDisk): Promise<void> {
  if ((await mountsUnder(disk.mountPoint)).length > 0) throw new Error(`not removing ${disk.mountPoint}: still mounted`);
  try {
    await rmdir(disk.mountPoint); // empty once unmounted; anything else there is not ours to delete
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
}

async function removeImage(disk: SandboxDisk): Promise<void> {
  if (await isDiskMounted(disk)) throw new Error(`not removing ${disk.imagePath}: mounted at ${disk.mountPoint}`);
  await detachLoopDevices(disk.imagePath);
  await rm(disk.imagePath, { force: true });
}

const isNotFound = (err: unknown): boolean => (err as NodeJS.ErrnoException).code === "ENOENT";

