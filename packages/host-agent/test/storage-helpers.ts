// Helpers for the storage tests: scratch dirs that must end with nothing mounted or attached in
// them, and a comparable description of a directory tree (what a sandbox would see).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { lstat, mkdtemp, readdir, readFile, readlink, realpath, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { runCommand } from "../src/exec/command.js";
import { mountsUnder } from "../src/sandbox/storage/rootfs.js";
import { commandRuns } from "./host-tools.js";

export const isRoot = process.getuid?.() === 0;
export const MIB = 1024 * 1024;

/** A fresh scratch dir under the system temp dir (resolved, as the kernel reports mount paths). */
export async function makeScratchDir(): Promise<string> {
  return realpath(await mkdtemp(path.join(tmpdir(), "wrenn-storage-")));
}

/** Loop devices whose backing file lies below `dir`. */
export async function loopDevicesUnder(dir: string): Promise<string[]> {
  const output = await runCommand("losetup", ["--list", "--json", "--output", "NAME,BACK-FILE"], { timeoutMs: 5000 });
  if (output.trim() === "") return [];
  const { loopdevices } = JSON.parse(output) as { loopdevices: { name: string; "back-file": string | null }[] };
  return loopdevices.filter((d) => d["back-file"]?.startsWith(dir + "/")).map((d) => `${d.name} (${d["back-file"]})`);
}

/** Fails unless nothing is mounted below `dir` and no loop device is backed by a file in it. */
export async function assertNothingMountedOrAttached(dir: string): Promise<void> {
  assert.deepEqual(await mountsUnder(dir), [], `mounts left under ${dir}`);
  assert.deepEqual(await loopDevicesUnder(dir), [], `loop devices left for files under ${dir}`);
}

/** Checks nothing is left mounted or attached, then removes the scratch dir. */
export async function removeScratchDir(dir: string): Promise<void> {
  await assertNothingMountedOrAttached(dir);
  await rm(dir, { recursive: true, force: true });
}

const hasPython = commandRuns("python3");

/** Every xattr below `root` (name → value in hex), by relative path; empty without python3 (node cannot read xattrs). */
export async function xattrsUnder(root: string): Promise<Record<string, Record<string, string>>> {
  if (!hasPython) return {};
  const script = `
import json, os, sys
root = sys.argv[1]
out = {}
for dirpath, dirnames, filenames in os.walk(root):
    for name in [''] + dirnames + filenames:
        p = os.path.join(dirpath, name) if name else dirpath
        attrs = {a: os.getxattr(p, a, follow_symlinks=False).hex() for a in os.listxattr(p, follow_symlinks=False)}
        if attrs:
            out[os.path.relpath(p, root)] = attrs
print(json.dumps(out))
`;
  return JSON.parse(await runCommand("python3", ["-c", script, root], { timeoutMs: 60_000 })) as Record<string, Record<string, string>>;
}

/**
 * What a process would see below `root`: for every path, its type, mode, owner, timestamps of
 * files, content hash, link target or device number, and xattrs. Equal descriptions, equal views.
 */
export async function describeTree(root: string): Promise<Map<string, string>> {
  const tree = new Map<string, string>();
  const xattrs = await xattrsUnder(root);
  async function visit(relative: string): Promise<void> {
    const full = path.join(root, relative);
    const info = await lstat(full);
    const perms = `${(info.mode & 0o7777).toString(8)} ${info.uid}:${info.gid}`;
    let what: string;
    if (info.isDirectory()) what = `dir ${perms}`;
    else if (info.isSymbolicLink()) what = `symlink ${perms} -> ${await readlink(full)}`;
    else if (info.isFile()) {
      const hash = createHash("sha256").update(await readFile(full)).digest("hex").slice(0, 16);
      what = `file ${perms} ${info.size} bytes ${hash} mtime ${info.mtimeMs}`;
    } else if (info.isCharacterDevice()) what = `char ${perms} ${info.rdev}`;
    else what = `other ${perms}`;
    const attrs = xattrs[relative || "."];
    tree.set(relative || ".", attrs ? `${what} xattrs ${JSON.stringify(attrs)}` : what);
    if (info.isDirectory()) {
      for (const entry of (await readdir(full)).sort()) await visit(path.join(relative, entry));
    }
  }
  await visit("");
  return tree;
}

/** Blocks the file really occupies on the host, in bytes. */
export async function allocatedBytes(file: string): Promise<number> {
  return (await lstat(file)).blocks * 512;
}
