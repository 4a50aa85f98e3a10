// A template as a block device, for the VM runtimes: an ext4 image of its merged layers, made once
// (`mke2fs -d`, no loop device) and kept beside the template's rootfs as `rootfs.ext4`. Sandboxes
// boot copy-on-write overlays of it and never write it; it goes when the template goes.
import { randomUUID } from "node:crypto";
import { mkdtemp, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { runCommand } from "../../exec/command.js";
import { Cleanup } from "../cleanup.js";
import { removeUnlessMounted } from "./rootfs.js";

const MIB = 2 ** 20;
/** mke2fs copies every file of a template; a few GiB take a while. */
const BUILD_TIMEOUT_MS = 10 * 60_000;
const MOUNT_TIMEOUT_MS = 10_000;
/** The image file's name in a template's directory. */
export const BLOCK_IMAGE_NAME = "rootfs.ext4";

/**
 * The image's size for `contentBytes` of files: room for ext4's own metadata (inode tables, the
 * journal) and a little free space; a sandbox's disk grows it to its own size at boot.
 */
export function blockImageMb(contentBytes: number): number {
  return Math.ceil((contentBytes * 1.2) / MIB) + 48;
}

/**
 * Writes an ext4 image of `layers` (top-most first, as overlayfs stacks them) to `imagePath`;
 * nothing is left at `imagePath` unless it is whole. Several layers are merged through a
 * read-only overlay mount while mke2fs reads them.
 */
export async function buildBlockImage(layers: string[], contentBytes: number, imagePath: string): Promise<void> {
  if (layers.length === 0) throw new RangeError("buildBlockImage needs at least one layer");
  const temp = `${imagePath}.${randomUUID()}.tmp`;
  const cleanup = new Cleanup();
  try {
    let source = layers[0]!;
    if (layers.length > 1) {
      const merged = await mkdtemp(path.join(path.dirname(imagePath), ".merged-"));
      cleanup.defer(`remove ${merged}`, () => removeUnlessMounted(merged));
      // No upper dir: overlayfs mounts the lower layers read-only.
      await runCommand("mount", ["-t", "overlay", "overlay", "-o", `ro,lowerdir=${layers.join(":")}`, merged], { timeoutMs: MOUNT_TIMEOUT_MS });
      cleanup.defer(`unmount ${merged}`, () => runCommand("umount", [merged], { timeoutMs: MOUNT_TIMEOUT_MS }).then(() => undefined));
      source = merged;
    }
    cleanup.defer(`remove ${temp}`, () => rm(temp, { force: true }));
    // -b 4096: a small image would get 1 KiB blocks; -E root_owner: `/` keeps the template's owner;
    // -d copies modes, owners, xattrs, hard links and special files.
    const top = await stat(source);
    await runCommand(
      "mke2fs",
      ["-q", "-F", "-t", "ext4", "-b", "4096", "-L", "wrenn-root", "-E", `root_owner=${top.uid}:${top.gid}`, "-d", source, temp, `${blockImageMb(contentBytes)}M`],
      { timeoutMs: BUILD_TIMEOUT_MS },
    );
    await rename(temp, imagePath);
  } finally {
    await cleanup.run();
  }
}
