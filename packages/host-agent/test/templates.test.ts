// The template store (create, list, layer, hold, delete; never half a template) and snapshots of a
// sandbox's writable layer or its whole merged view, checked by mounting sandboxes on them.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chown, mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, beforeEach, describe, test } from "node:test";
import { runCommand } from "../src/exec/command.js";
import { Cleanup } from "../src/sandbox/cleanup.js";
import { createDisk } from "../src/sandbox/storage/disk.js";
import { mountRootfs, type SandboxRootfs } from "../src/sandbox/storage/rootfs.js";
import { flattenRootfs, snapshotLayer } from "../src/sandbox/storage/snapshot.js";
import {
  InvalidTemplateNameError,
  MAX_TEMPLATE_LAYERS,
  PLATFORM_TEAM_ID,
  TemplateExistsError,
  TemplateInUseError,
  TemplateNotFoundError,
  TemplateStore,
  TooManyLayersError,
  validateTemplateName,
} from "../src/sandbox/storage/templates.js";
import { describeTree, isRoot, makeScratchDir, removeScratchDir, xattrsUnder } from "./storage-helpers.js";
import { buildBusyboxTemplate } from "./template.js";
import { commandRuns } from "./host-tools.js";

const TEAM = "2f6a3c1e-1111-4222-8333-444455556666";
const base = { teamId: PLATFORM_TEAM_ID, kind: "base" } as const;

test("template names are 1-63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit, without '..'", () => {
  for (const name of ["base", "a", "0", "my-app.v2_1", "x".repeat(63)]) validateTemplateName(name);
  for (const name of ["", "-a", ".hidden", "_a", "Base", "a/b", "../etc", "a..b", "a b", "é", "x".repeat(64), "a\n"]) {
    assert.throws(() => validateTemplateName(name), InvalidTemplateNameError, JSON.stringify(name));
  }
});

describe("the template store", { skip: !isRoot && "needs root (ownership, mounts)" }, () => {
  let scratch: string;
  let store: TemplateStore;
  let cleanup: Cleanup;
  beforeEach(async () => {
    scratch = await makeScratchDir();
    store = new TemplateStore(path.join(scratch, "data", "templates"));
    cleanup = new Cleanup();
  });
  afterEach(async () => {
    await cleanup.run();
    await removeScratchDir(scratch);
  });

  async function importBusybox(name = "base"): Promise<string> {
    const source = path.join(scratch, `build-${name}`);
    await buildBusyboxTemplate(source);
    await store.importDirectory(name, source, { ...base, metadata: { from: "test" } });
    return source;
  }

  /** A sandbox's storage as the agent makes it: a disk, and the overlay with its upper on it. */
  async function startSandbox(id: string, template: string): Promise<SandboxRootfs> {
    const dir = path.join(scratch, "sandboxes", id);
    const disk = await createDisk(dir, 64, cleanup);
    return mountRootfs(store.layers(template), disk.mountPoint, path.join(dir, "rootfs"), cleanup);
  }

  const storeEntries = async () => (await readdir(store.dir)).sort();

  test("an imported directory becomes a template with its metadata, size and one layer", async () => {
    assert.deepEqual(store.list(), []);
    assert.equal(store.exists("base"), false);
    const source = await importBusybox();

    const info = store.get("base");
    assert.equal(info.name, "base");
    assert.equal(info.teamId, PLATFORM_TEAM_ID);
    assert.equal(info.kind, "base");
    assert.equal(info.parent, undefined);
    assert.deepEqual(info.metadata, { from: "test" });
    assert.ok(Math.abs(info.createdAt - Date.now() / 1000) < 60);
    const du = Number((await runCommand("du", ["-s", "--apparent-size", "--block-size=1", source], { timeoutMs: 5000 })).split("\t")[0]);
    assert.ok(Math.abs(info.sizeBytes - du) <= 16384, `${info.sizeBytes} bytes, du says ${du}`); // directories' sizes vary a little
    assert.equal(store.sizeBytes("base"), info.sizeBytes);
    assert.deepEqual(store.list(), [info]);
    assert.equal(store.exists("base"), true);
    assert.deepEqual(store.layers("base"), [path.join(store.dir, "base", "rootfs")]);
    assert.deepEqual(await describeTree(store.rootfsDir("base")), await describeTree(source), "ownership and modes are kept");
    assert.deepEqual(JSON.parse(await readFile(path.join(store.dir, "base", "template.json"), "utf8")), info);
    assert.deepEqual(await storeEntries(), ["base"]);
  });

  test("importing with move renames the source in", async () => {
    const source = path.join(scratch, "built");
    await buildBusyboxTemplate(source);
    const before = await describeTree(source);
    await store.importDirectory("moved", source, base, { move: true });
    assert.deepEqual(await describeTree(store.rootfsDir("moved")), before);
    await assert.rejects(readdir(source), { code: "ENOENT" });
  });

  test("creating a template that exists fails with TemplateExistsError and keeps the first", async () => {
    await importBusybox();
    const first = store.get("base");
    let filled = false;
    await assert.rejects(store.createFrom("base", base, async () => { filled = true; }), TemplateExistsError);
    assert.equal(filled, false, "refused before any copying");
    assert.deepEqual(store.get("base"), first);
    assert.deepEqual(await storeEntries(), ["base"]);
  });

  test("a template being filled is invisible, and one whose fill throws leaves nothing", async () => {
    await assert.rejects(
      store.createFrom("half", base, async (rootfs) => {
        await writeFile(path.join(rootfs, "partial"), "x");
        assert.equal(store.exists("half"), false);
        assert.deepEqual(store.list(), []);
        throw new Error("copy failed");
      }),
      /copy failed/,
    );
    assert.equal(store.exists("half"), false);
    assert.deepEqual(await storeEntries(), [], "no temp dir is left");
  });

  test("unknown templates are not found and invalid names are refused, by every method", async () => {
    assert.throws(() => store.get("nope"), TemplateNotFoundError);
    assert.throws(() => store.layers("nope"), TemplateNotFoundError);
    assert.throws(() => store.sizeBytes("nope"), TemplateNotFoundError);
    assert.throws(() => store.acquire("nope", "sbx1"), TemplateNotFoundError);
    await assert.rejects(store.delete("nope"), TemplateNotFoundError);
    await assert.rejects(store.createFrom("child", { teamId: TEAM, kind: "snapshot", parent: "nope" }, async () => {}), TemplateNotFoundError);
    for (const name of ["../x", "A", ".tmp-x"]) {
      assert.throws(() => store.get(name), InvalidTemplateNameError);
      assert.throws(() => store.exists(name), InvalidTemplateNameError);
      await assert.rejects(store.delete(name), InvalidTemplateNameError);
      await assert.rejects(store.createFrom(name, base, async () => {}), InvalidTemplateNameError);
    }
    assert.deepEqual(await readdir(scratch), [], "nothing was created");
  });

  test("a template held by a sandbox cannot be deleted until every holder released it", async () => {
    await importBusybox();
    store.acquire("base", "sbx1");
    store.acquire("base", "sbx2");
    store.acquire("base", "sbx2"); // twice: still one holder
    assert.deepEqual(store.usersOf("base"), ["sbx1", "sbx2"]);
    await assert.rejects(store.delete("base"), (err: unknown) => err instanceof TemplateInUseError && /sbx1, sbx2/.test(err.message));
    store.release("base", "sbx1");
    await assert.rejects(store.delete("base"), TemplateInUseError);
    store.release("base", "sbx2");
    store.release("base", "sbx2"); // releasing again is harmless
    assert.deepEqual(store.usersOf("base"), []);

    await store.delete("base");
    assert.equal(store.exists("base"), false);
    assert.deepEqual(await storeEntries(), [], "no trash dir is left");
    await assert.rejects(store.delete("base"), TemplateNotFoundError);
  });

  test("a template other templates are layered on cannot be deleted before them", async () => {
    await importBusybox();
    await store.createFrom("snap", { teamId: TEAM, kind: "snapshot", parent: "base" }, async () => {});
    await assert.rejects(store.delete("base"), (err: unknown) => err instanceof TemplateInUseError && /snap/.test(err.message));
    await store.delete("snap");
    await store.delete("base");
    assert.deepEqual(store.list(), []);
  });

  test("a parent cannot be deleted while a snapshot on it is being made", async () => {
    await importBusybox();
    let fillStarted!: () => void;
    const started = new Promise<void>((resolve) => (fillStarted = resolve));
    let finishFill!: () => void;
    const creating = store.createFrom("snap", { teamId: TEAM, kind: "snapshot", parent: "base" }, async () => {
      fillStarted();
      await new Promise<void>((resolve) => (finishFill = resolve));
    });
    await started;
    await assert.rejects(store.delete("base"), TemplateInUseError);
    finishFill();
    await creating;
    assert.equal(store.get("snap").parent, "base");
  });

  test("snapshots stack at most MAX_TEMPLATE_LAYERS layers", async () => {
    await importBusybox();
    let parent = "base";
    for (let i = 2; i <= MAX_TEMPLATE_LAYERS; i++) {
      await store.createFrom(`s${i}`, { teamId: TEAM, kind: "snapshot", parent }, async () => {});
      parent = `s${i}`;
    }
    assert.equal(store.layers(parent).length, MAX_TEMPLATE_LAYERS);
    await assert.rejects(store.createFrom("one-too-many", { teamId: TEAM, kind: "snapshot", parent }, async () => {}), TooManyLayersError);
    const sandbox = await startSandbox("deep", parent); // one overlayfs mount still takes them all
    assert.ok((await readdir(sandbox.dir)).includes("bin"));
  });

  test("removeLeftovers clears the temp and trash dirs of an agent that died mid-way", async () => {
    await importBusybox();
    await mkdir(path.join(store.dir, ".tmp-half-abc123", "rootfs"), { recursive: true });
    await mkdir(path.join(store.dir, ".trash-old-1234", "rootfs"), { recursive: true });
    assert.deepEqual(store.list().map((t) => t.name), ["base"]);
    await store.removeLeftovers();
    assert.deepEqual(await storeEntries(), ["base"]);
  });

  test("a snapshot reproduces the sandbox's view: deleted files stay deleted, opaque dirs opaque, renamed dirs renamed", async () => {
    const source = path.join(scratch, "build");
    await buildBusyboxTemplate(source);
    for (const dir of ["data/keep", "data/replaced", "data/moveme"]) await mkdir(path.join(source, dir), { recursive: true });
    for (const file of ["data/keep/a", "data/gone.txt", "data/replaced/old1", "data/replaced/old2", "data/moveme/x"]) {
      await writeFile(path.join(source, file), `template ${file}`);
    }
    await store.importDirectory("base", source, base);

    const sandbox = await startSandbox("sbx1", "base");
    const inSandbox = (p: string) => path.join(sandbox.dir, p);
    await rm(inSandbox("data/gone.txt"));
    await rm(inSandbox("data/replaced"), { recursive: true });
    await mkdir(inSandbox("data/replaced"));
    await writeFile(inSandbox("data/replaced/new"), "sandbox new");
    await rename(inSandbox("data/moveme"), inSandbox("data/moved"));
    await writeFile(inSandbox("data/keep/a"), "sandbox changed a");
    await writeFile(inSandbox("home/user/notes.txt"), "mine");
    await chown(inSandbox("home/user/notes.txt"), 1000, 1000);
    await runCommand("chmod", ["4755", inSandbox("bin/busybox")], { timeoutMs: 5000 });
    await runCommand("ln", [inSandbox("home/user/notes.txt"), inSandbox("home/user/notes-link")], { timeoutMs: 5000 });
    if (hasPython) setXattr(inSandbox("home/user/notes.txt"), "user.origin", "sandbox");

    // The upper dir holds what overlayfs needs to replay all that, which the copy must keep.
    const upperXattrs = await xattrsUnder(sandbox.upperDir);
    if (hasPython) {
      assert.equal(upperXattrs["data/replaced"]?.["trusted.overlay.opaque"], Buffer.from("y").toString("hex"));
      assert.ok(upperXattrs["data/moved"]?.["trusted.overlay.redirect"], "the renamed dir carries a redirect");
    }
    const view = await describeTree(sandbox.dir);

    const started = performance.now();
    const info = await snapshotLayer(store, { name: "snap", parent: "base", upperDir: sandbox.upperDir, teamId: TEAM, metadata: { sandboxId: "sbx1" } });
    const ms = performance.now() - started;
    assert.equal(info.kind, "snapshot");
    assert.equal(info.parent, "base");
    assert.equal(info.teamId, TEAM);
    assert.deepEqual(info.metadata, { sandboxId: "sbx1" });
    assert.ok(info.sizeBytes > 0 && info.sizeBytes < store.get("base").sizeBytes, `snapshot layer of ${info.sizeBytes} bytes`);
    assert.equal(store.sizeBytes("snap"), info.sizeBytes + store.get("base").sizeBytes);
    assert.deepEqual(store.layers("snap"), [store.rootfsDir("snap"), store.rootfsDir("base")]);
    const layer = await describeTree(store.rootfsDir("snap"));
    assert.match(layer.get("data/gone.txt") ?? "", /^char \S+ 0:0 0/, "the whiteout is copied as a 0/0 character device");
    if (hasPython) assert.deepEqual(await xattrsUnder(store.rootfsDir("snap")), upperXattrs, "every xattr of the upper dir is copied");
    assert.ok(ms < 15_000, `snapshot took ${ms} ms`);

    const restored = await startSandbox("sbx2", "snap");
    const restoredView = await describeTree(restored.dir);
    assert.deepEqual(restoredView, view);
    assert.equal(restoredView.has("data/gone.txt"), false);
    assert.deepEqual(await readdir(path.join(restored.dir, "data/replaced")), ["new"]);
    assert.deepEqual(await readdir(path.join(restored.dir, "data/moved")), ["x"]);
    assert.equal(restoredView.has("data/moveme"), false);

    // A snapshot of a sandbox running on a snapshot: three layers, still the same view.
    await rm(path.join(restored.dir, "data/moved/x"));
    await writeFile(path.join(restored.dir, "data/keep/b"), "second generation");
    const secondView = await describeTree(restored.dir);
    await snapshotLayer(store, { name: "snap2", parent: "snap", upperDir: restored.upperDir, teamId: TEAM });
    assert.equal(store.layers("snap2").length, 3);
    const third = await startSandbox("sbx3", "snap2");
    assert.deepEqual(await describeTree(third.dir), secondView);

    // The template under them all is as it was built.
    assert.deepEqual(await describeTree(store.rootfsDir("base")), await describeTree(source));
  });

  test("flattening copies the merged view into a standalone image template", async () => {
    await importBusybox();
    const sandbox = await startSandbox("sbx1", "base");
    await rm(path.join(sandbox.dir, "etc/group"));
    await mkdir(path.join(sandbox.dir, "srv/app"), { recursive: true });
    await writeFile(path.join(sandbox.dir, "srv/app/main.py"), "print('hi')");
    await snapshotLayer(store, { name: "snap", parent: "base", upperDir: sandbox.upperDir, teamId: TEAM });
    const onSnapshot = await startSandbox("sbx2", "snap");
    await writeFile(path.join(onSnapshot.dir, "srv/app/config"), "debug=1");
    const view = await describeTree(onSnapshot.dir);

    const info = await flattenRootfs(store, { name: "flat", mergedDir: onSnapshot.dir, teamId: TEAM, metadata: { note: "flat" } });
    assert.equal(info.kind, "image");
    assert.equal(info.parent, undefined);
    assert.deepEqual(store.layers("flat"), [store.rootfsDir("flat")]);
    assert.equal(store.sizeBytes("flat"), info.sizeBytes);
    assert.deepEqual(await xattrsUnder(store.rootfsDir("flat")), {}, "no overlayfs bookkeeping in a flat image");
    assert.deepEqual(await describeTree(store.rootfsDir("flat")), view);

    const onImage = await startSandbox("sbx3", "flat");
    assert.deepEqual(await describeTree(onImage.dir), view);
  });
});

const hasPython = commandRuns("python3");

function setXattr(file: string, name: string, value: string): void {
  execFileSync("python3", ["-c", "import os, sys; os.setxattr(sys.argv[1], sys.argv[2], sys.argv[3].encode())", file, name, value]);
}
