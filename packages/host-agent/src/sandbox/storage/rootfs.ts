// A sandbox's root filesystem: an overlayfs whose lower layers are a template and its ancestors
// (never written) and whose upper and work directories live on the sandbox's own disk.
import { chmod, chown, mkdir, readFile, rm, stat } from "node:fs/promises";
import path from "node:path";
import { runCommand } from "../../exec/command.js";
import type { Cleanup } from "../cleanup.js";

const MOUNT_TIMEOUT_MS = 10_000;
// mount(2) takes at most one page of options; util-linux 2.38 has no other way to pass them.
const MAX_MOUNT_OPTIONS_BYTES = 4095;
// Fixed rather than left to the kernel's build defaults, since snapshots copy upper dirs as they
// are: no metacopy (an upper file must hold its data once it becomes a lower layer of another
// template), no index (upper dirs are not tied to one set of lower dirs), and redirect_dir so a
// directory from the template can be renamed (else EXDEV); the redirects are followed when a
// snapshot becomes a lower layer.
const OVERLAY_FEATURES = "index=off,metacopy=off,redirect_dir=on";

export interface SandboxRootfs {
  /** The merged view: what the sandbox sees as `/`. */
  dir: string;
  /** The sandbox's private writes. */
  upperDir: string;
  workDir: string;
  /** The read-only layers, top-most first. */
  layers: string[];
}

/**
 * Mounts `layers` (top-most first) copy-on-write at `mergedDir`, with the sandbox's writes going to
 * `<upperParent>/upper` (and overlayfs's scratch space to `<upperParent>/work`; both must be on one
 * filesystem: the sandbox's disk). Registers the unmount and the removal of the merged dir on
 * `cleanup`; an upper dir that already exists is reused, so a sandbox's writes can be mounted again.
 */
export async function mountRootfs(layers: string[], upperParent: string, mergedDir: string, cleanup: Cleanup): Promise<SandboxRootfs> {
  if (layers.length === 0) throw new RangeError("mountRootfs needs at least one lower layer");
  const rootfs: SandboxRootfs = {
    dir: path.resolve(mergedDir),
    upperDir: upperDirIn(upperParent),
    workDir: path.resolve(upperParent, "work"),
    layers: layers.map((layer) => path.resolve(layer)),
  };
  // overlayfs options are comma-separated and lowerdir colon-separated: such a path would be misread.
  for (const dir of [...rootfs.layers, rootfs.upperDir, rootfs.workDir]) {
    if (/[,:\\]/.test(dir)) throw new RangeError(`overlayfs cannot use a path containing ',', ':' or '\\': ${dir}`);
  }
  const options = `lowerdir=${rootfs.layers.join(":")},upperdir=${rootfs.upperDir},workdir=${rootfs.workDir},${OVERLAY_FEATURES}`;
  if (Buffer.byteLength(options) > MAX_MOUNT_OPTIONS_BYTES) {
    throw new RangeError(`too many layers (${layers.length}) for one overlayfs mount: ${Buffer.byteLength(options)} bytes of options`);
  }
  const top = await stat(rootfs.layers[0]!); // a missing template fails here, before anything is made
  // The upper and work dirs hold the sandbox's writes and go away with its disk, as a whole: not
  // removed file by file here (slow for a big upper, and wrong for one mounted again).
  if ((await mkdir(rootfs.upperDir, { recursive: true })) !== undefined) {
    // overlayfs shows the upper dir's own owner and mode as `/`: keep the template's.
    await chown(rootfs.upperDir, top.uid, top.gid);
    await chmod(rootfs.upperDir, top.mode & 0o7777);
  }
  await mkdir(rootfs.workDir, { recursive: true });
  if ((await mkdir(rootfs.dir, { recursive: true })) !== undefined) {
    cleanup.defer(`remove ${rootfs.dir}`, () => removeUnlessMounted(rootfs.dir));
  }
  await runCommand("mount", ["-t", "overlay", "overlay", "-o", options, rootfs.dir], { timeoutMs: MOUNT_TIMEOUT_MS });
  cleanup.defer(`unmount ${rootfs.dir}`, () => unmountRootfs(rootfs));
  return rootfs;
}

/** Where mountRootfs puts the upper dir given `upperParent`. */
export function upperDirIn(upperParent: string): string {
  return path.resolve(upperParent, "upper");
}

/** Unmounts the merged view (a SandboxRootfs or its dir) if it is mounted; safe to repeat. Leaves the directories in place. */
export async function unmountRootfs(rootfs: Pick<SandboxRootfs, "dir"> | string): Promise<void> {
  const dir = path.resolve(typeof rootfs === "string" ? rootfs : rootfs.dir);
  if ((await mountsUnder(dir)).length > 0) {
    await runCommand("umount", [dir], { timeoutMs: MOUNT_TIMEOUT_MS });
  }
}

/** Removes `dir`, refusing while anything is mounted at or below it (deleting through a mount deletes what it shows). */
export async function removeUnlessMounted(dir: string): Promise<void> {
  const mounted = await mountsUnder(dir);
  if (mounted.length > 0) throw new Error(`not removing ${dir}: still mounted at ${mounted.join(", ")}`);
  await rm(dir, { recursive: true, force: true });
}

/** Mount points at or below `dir`, from /proc/self/mounts. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const mounts = await readFile("/proc/self/mounts", "utf8");
  return mounts
    .split("\n")
    .map((line) => line.split(" ")[1])
    .filter((point): point is string => point !== undefined)
    .map((point) => point.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8))))
    .filter((point) => point === dir || point.startsWith(dir + "/"));
}
