// A sandbox's disk (a sparse ext4 image, loop-mounted) and root filesystem (overlayfs over template
// layers, upper on that disk): real mounts and loop devices, each test leaving none behind.
import assert from "node:assert/strict";
import { mkdir, open, readdir, readFile, rename, rm, statfs, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, beforeEach, describe, test } from "node:test";
import { runCommand } from "../src/exec/command.js";
import { Cleanup } from "../src/sandbox/cleanup.js";
import {
  createDisk,
  DEFAULT_MAX_DISK_SIZE_MB,
  destroyDisk,
  diskOf,
  diskUsageBytes,
  InvalidDiskSizeError,
  isDiskMounted,
  MIN_FREE_DISK_MB,
  writableLayerMb,
} from "../src/sandbox/storage/disk.js";
import { mountRootfs, mountsUnder, unmountRootfs } from "../src/sandbox/storage/rootfs.js";
import {
  allocatedBytes,
  assertNothingMountedOrAttached,
  describeTree,
  isRoot,
  loopDevicesUnder,
  makeScratchDir,
  MIB,
  removeScratchDir,
} from "./storage-helpers.js";
import { buildBusyboxTemplate } from "./template.js";

test("the writable layer is the disk size minus the template; nonsense sizes are refused", () => {
  assert.equal(writableLayerMb(5120, 300 * MIB), 4820);
  assert.equal(writableLayerMb(5120, 300 * MIB + 1), 4819); // a started MiB of template counts
  assert.equal(writableLayerMb(300 + MIN_FREE_DISK_MB, 300 * MIB), MIN_FREE_DISK_MB);
  assert.equal(writableLayerMb(DEFAULT_MAX_DISK_SIZE_MB, 0), DEFAULT_MAX_DISK_SIZE_MB);
  for (const size of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, DEFAULT_MAX_DISK_SIZE_MB + 1]) {
    assert.throws(() => writableLayerMb(size, 0), InvalidDiskSizeError, `disk_size_mb ${size}`);
  }
  assert.throws(() => writableLayerMb(300 + MIN_FREE_DISK_MB - 1, 300 * MIB), /at least 364/);
  assert.throws(() => writableLayerMb(2048, 0, { maxDiskSizeMb: 1024 }), /more than this host allows \(1024 MiB\)/);
  assert.equal(writableLayerMb(100, 0, { minFreeMb: 100 }), 100);
});

describe("sandbox disks and root filesystems", { skip: !isRoot && "needs root (mount, losetup)" }, () => {
  let scratch: string;
  let cleanup: Cleanup;
  beforeEach(async () => {
    scratch = await makeScratchDir();
    cleanup = new Cleanup();
  });
  afterEach(async () => {
    await cleanup.run();
    await removeScratchDir(scratch); // fails if a mount or loop device was left
  });

  async function template(name = "template"): Promise<string> {
    const dir = path.join(scratch, name);
    await buildBusyboxTemplate(dir);
    return dir;
  }

  test("writing past a 64 MiB disk fails with ENOSPC inside the sandbox and never touches the template", async () => {
    const templateDir = await template();
    const sandboxDir = path.join(scratch, "sandbox");
    const disk = await createDisk(sandboxDir, 64, cleanup);
    const rootfs = await mountRootfs([templateDir], disk.mountPoint, path.join(sandboxDir, "rootfs"), cleanup);
    assert.equal(rootfs.upperDir, disk.upperDir);

    const chunk = Buffer.alloc(MIB, 7);
    const file = await open(path.join(rootfs.dir, "tmp", "fill"), "w");
    let written = 0;
    let error: NodeJS.ErrnoException | undefined;
    try {
      for (let i = 0; i < 200 && !error; i++) {
        await file.write(chunk).then(({ bytesWritten }) => (written += bytesWritten), (err: NodeJS.ErrnoException) => (error = err));
      }
      if (!error) await file.sync().catch((err: NodeJS.ErrnoException) => (error = err));
    } finally {
      await file.close().catch(() => undefined);
    }
    assert.equal(error?.code, "ENOSPC");
    assert.ok(written > 48 * MIB && written <= 64 * MIB, `wrote ${written / MIB} MiB before ENOSPC`);
    assert.ok((await allocatedBytes(disk.imagePath)) <= 64 * MIB, "the image never outgrows its quota");
    assert.ok((await diskUsageBytes(disk)) >= written, "usage counts what the sandbox wrote");
    assert.deepEqual((await readdir(path.join(templateDir, "tmp"))), [], "the template is untouched");

    // Freeing space inside the sandbox makes room again.
    await rm(path.join(rootfs.dir, "tmp", "fill"));
    await writeFile(path.join(rootfs.dir, "tmp", "small"), chunk);
  });

  test("a 5 GiB disk is sparse: the host holds only the blocks the sandbox writes", async () => {
    const disk = await createDisk(path.join(scratch, "sandbox"), 5120, cleanup);
    const fresh = await allocatedBytes(disk.imagePath);
    assert.ok(fresh < 8 * MIB, `a fresh 5 GiB disk takes ${fresh / MIB} MiB on the host`);
    const fs = await statfs(disk.mountPoint);
    assert.ok(fs.bavail * fs.bsize > 0.97 * 5120 * MIB, `only ${(fs.bavail * fs.bsize) / MIB} MiB free of 5120`);
    assert.ok((await diskUsageBytes(disk)) < MIB, "a fresh disk reports almost no usage");

    await writeFile(path.join(disk.mountPoint, "data"), Buffer.alloc(20 * MIB, 1));
    await runCommand("sync", ["--file-system", disk.mountPoint], { timeoutMs: 10_000 });
    const usage = await diskUsageBytes(disk);
    assert.ok(usage >= 20 * MIB && usage < 21 * MIB, `usage ${usage / MIB} MiB after writing 20`);
    const grown = (await allocatedBytes(disk.imagePath)) - fresh;
    assert.ok(grown >= 20 * MIB && grown < 28 * MIB, `the host file grew by ${grown / MIB} MiB for 20 written`);
  });

  test("destroying a disk unmounts it, frees its loop device and removes its files; again is a no-op", async () => {
    const sandboxDir = path.join(scratch, "sandbox");
    const disk = await createDisk(sandboxDir, 64, cleanup);
    assert.equal(await isDiskMounted(disk), true);
    assert.equal((await loopDevicesUnder(scratch)).length, 1);

    await destroyDisk(disk);
    await assertNothingMountedOrAttached(scratch);
    assert.deepEqual(await readdir(sandboxDir), []);
    await destroyDisk(disk);
    await cleanup.run(); // the steps createDisk registered find nothing left to do
    assert.equal(await diskUsageBytes(disk), 0);
  });

  test("a sandbox build that fails after its disk and rootfs were made leaves nothing behind", async () => {
    const templateDir = await template();
    const sandboxDir = path.join(scratch, "sandbox");
    await mkdir(sandboxDir);
    await assert.rejects(
      cleanup.undoOnFailure(async () => {
        const disk = await createDisk(sandboxDir, 64, cleanup);
        const rootfs = await mountRootfs([templateDir], disk.mountPoint, path.join(sandboxDir, "rootfs"), cleanup);
        await writeFile(path.join(rootfs.dir, "tmp", "partial"), "x");
        throw new Error("runtime failed to boot");
      }),
      /runtime failed to boot/,
    );
    await assertNothingMountedOrAttached(scratch);
    assert.deepEqual(await readdir(sandboxDir), []);
  });

  test("a disk is found again from its sandbox directory, as after an agent restart", async () => {
    const sandboxDir = path.join(scratch, "sandbox");
    const created = await createDisk(sandboxDir, 64, new Cleanup()); // the agent that made it is gone
    await writeFile(path.join(created.mountPoint, "data"), Buffer.alloc(MIB));

    const found = diskOf(sandboxDir);
    assert.deepEqual(found, created);
    assert.equal(await isDiskMounted(found), true);
    assert.ok((await diskUsageBytes(found)) >= MIB);
    await destroyDisk(found);
    await assertNothingMountedOrAttached(scratch);

    const none = diskOf(sandboxDir);
    assert.equal(none.sizeMb, 0);
    await destroyDisk(none);
  });

  test("a disk below the minimum size is refused before anything is made", async () => {
    const sandboxDir = path.join(scratch, "sandbox");
    await mkdir(sandboxDir);
    for (const size of [0, MIN_FREE_DISK_MB - 1, 64.5]) {
      await assert.rejects(createDisk(sandboxDir, size, cleanup), InvalidDiskSizeError);
    }
    assert.equal(cleanup.size, 0);
    assert.deepEqual(await readdir(sandboxDir), []);
  });

  test("several lower layers merge top-most first, whiteouts in a middle layer hiding what is below", async () => {
    const [top, middle, bottom] = ["top", "middle", "bottom"].map((name) => path.join(scratch, "layers", name)) as [string, string, string];
    for (const dir of [top, middle, bottom]) await mkdir(dir, { recursive: true });
    for (const name of ["a", "b", "c", "d"]) await writeFile(path.join(bottom, name), `bottom ${name}`);
    await writeFile(path.join(middle, "b"), "middle b");
    await writeFile(path.join(middle, "a"), "middle a");
    await runCommand("mknod", [path.join(middle, "c"), "c", "0", "0"], { timeoutMs: 5000 }); // overlayfs whiteout
    await writeFile(path.join(top, "a"), "top a");
    await writeFile(path.join(top, "e"), "top e");

    const sandboxDir = path.join(scratch, "sandbox");
    const disk = await createDisk(sandboxDir, 64, cleanup);
    const rootfs = await mountRootfs([top, middle, bottom], disk.mountPoint, path.join(sandboxDir, "rootfs"), cleanup);
    const seen: Record<string, string> = {};
    for (const name of (await readdir(rootfs.dir)).sort()) seen[name] = await readFile(path.join(rootfs.dir, name), "utf8");
    assert.deepEqual(seen, { a: "top a", b: "middle b", d: "bottom d", e: "top e" });
  });

  test("writes, deletions, renames and mode changes in the sandbox land in its upper dir, never in the template", async () => {
    const templateDir = await template();
    await mkdir(path.join(templateDir, "srv", "app"), { recursive: true });
    await writeFile(path.join(templateDir, "srv", "app", "main.js"), "console.log(1)");
    const before = await describeTree(templateDir);

    const sandboxDir = path.join(scratch, "sandbox");
    const disk = await createDisk(sandboxDir, 64, cleanup);
    const rootfs = await mountRootfs([templateDir], disk.mountPoint, path.join(sandboxDir, "rootfs"), cleanup);
    const merged = (p: string) => path.join(rootfs.dir, p);
    await writeFile(merged("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n");
    await rm(merged("etc/group"));
    await rename(merged("srv/app"), merged("srv/service")); // a template dir: needs redirect_dir, else EXDEV
    await runCommand("chmod", ["0700", merged("home/user")], { timeoutMs: 5000 });
    await symlink("service/main.js", merged("srv/link"));

    assert.deepEqual(await describeTree(templateDir), before);
    assert.equal(await readFile(merged("etc/passwd"), "utf8"), "root:x:0:0:root:/root:/bin/sh\n");
    assert.deepEqual(await readdir(merged("srv")), ["link", "service"]);
    assert.equal(await readFile(merged("srv/link"), "utf8"), "console.log(1)");
    assert.ok((await readdir(path.join(rootfs.upperDir, "etc"))).includes("passwd"));
    const view = await describeTree(rootfs.dir);
    assert.equal(view.get("."), before.get("."), "/ keeps the template's owner and mode");
    assert.match(view.get("home/user") ?? "", /^dir 700 1000:1000/);
  });

  test("mountRootfs refuses paths overlayfs would misread, and a failed mount removes the dir it made", async () => {
    const sandboxDir = path.join(scratch, "sandbox");
    await assert.rejects(mountRootfs([path.join(scratch, "a,b")], sandboxDir, path.join(sandboxDir, "rootfs"), cleanup), RangeError);
    await assert.rejects(mountRootfs([path.join(scratch, "a:b")], sandboxDir, path.join(sandboxDir, "rootfs"), cleanup), RangeError);
    await assert.rejects(mountRootfs([], sandboxDir, path.join(sandboxDir, "rootfs"), cleanup), RangeError);
    await assert.rejects(mountRootfs([path.join(scratch, "missing")], sandboxDir, path.join(sandboxDir, "rootfs"), cleanup), { code: "ENOENT" });

    const notADir = path.join(scratch, "file");
    await writeFile(notADir, "");
    await assert.rejects(
      cleanup.undoOnFailure(() => mountRootfs([notADir], sandboxDir, path.join(sandboxDir, "rootfs"), cleanup)),
      /mount/,
    );
    assert.ok(!(await readdir(sandboxDir)).includes("rootfs"));
  });

  test("unmountRootfs takes the merged dir or the rootfs, and is safe to repeat", async () => {
    const templateDir = await template();
    const sandboxDir = path.join(scratch, "sandbox");
    const rootfs = await mountRootfs([templateDir], sandboxDir, path.join(sandboxDir, "rootfs"), cleanup);
    assert.deepEqual(await mountsUnder(rootfs.dir), [rootfs.dir]);
    await unmountRootfs(rootfs.dir);
    await unmountRootfs(rootfs);
    assert.deepEqual(await mountsUnder(scratch), []);
  });
});
