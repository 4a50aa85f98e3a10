import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { appendFile, chmod, lstat, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, symlink, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import {
  EventType,
  FileType,
  Filesystem,
  type FilesystemEvent,
  type WatchDirRequestSchema,
  type WatchDirResponse,
} from "@wrenn/proto/envd/filesystem";
import { startEnvdProcess, allTransports, type EnvdUnderTest } from "./harness.js";
import { basicAuth, cleanUp, eventually, expectCode } from "./helpers.js";

const basic = basicAuth;
const asRoot = { headers: basic("root") };

const eventLabel = (e: FilesystemEvent) => `${EventType[e.type]} ${e.name}`;

/** A WatchDir stream read in the background, so tests can wait for the events they expect. */
class WatchStream {
  readonly messages: WatchDirResponse[] = [];
  ended = false;
  error: unknown;

  private constructor(
    private readonly iterator: AsyncIterator<WatchDirResponse>,
    private readonly abort: AbortController,
  ) {}

  static async open(
    client: Client<typeof Filesystem>,
    request: MessageInitShape<typeof WatchDirRequestSchema>,
    headers: Record<string, string> = {},
  ): Promise<WatchStream> {
    const abort = new AbortController();
    const iterator = client.watchDir(request, { signal: abort.signal, headers })[Symbol.asyncIterator]();
    const stream = new WatchStream(iterator, abort);
    const first = await iterator.next();
    assert.equal(first.done, false, "the stream ended before its first message");
    stream.messages.push(first.value);
    void stream.pump();
    return stream;
  }

  private async pump(): Promise<void> {
    try {
      for (;;) {
        const next = await this.iterator.next();
        if (next.done) break;
        this.messages.push(next.value);
      }
    } catch (err) {
      this.error = err;
    } finally {
      this.ended = true;
    }
  }

  events(): FilesystemEvent[] {
    return this.messages.flatMap((m) => (m.event.case === "filesystem" ? [m.event.value] : []));
  }

  waitFor(type: EventType, name: string, timeoutMs = 15_000): Promise<FilesystemEvent> {
    return eventually(
      () => this.events().find((e) => e.type === type && e.name === name),
      () => `${EventType[type]} ${name}; got [${this.events().map(eventLabel).join(", ")}]`,
      timeoutMs,
    );
  }

  async cancel(): Promise<void> {
    this.abort.abort();
    await eventually(() => this.ended, "the stream to end");
  }
}

/** How many inotify watches a process holds (summed over its inotify file descriptors). */
async function inotifyWatches(pid: number): Promise<number> {
  let count = 0;
  for (const fd of await readdir(`/proc/${pid}/fdinfo`)) {
    const info = await readFile(`/proc/${pid}/fdinfo/${fd}`, "utf8").catch(() => "");
    count += info.split("\n").filter((line) => line.startsWith("inotify wd:")).length;
  }
  return count;
}

/** The watch count once streams closed by earlier tests are gone on the server side too. */
async function settledWatches(pid: number): Promise<number> {
  let last = -1;
  return eventually(async () => {
    await sleep(50);
    const now = await inotifyWatches(pid);
    const settled = now === last;
    last = now;
    return settled ? now : undefined;
  }, "the inotify watch count to settle");
}

describe("filesystem service", () => {
  let envd: EnvdUnderTest;
  let root: string;
  let fs: Client<typeof Filesystem>;
  /** A fresh directory for one test. */
  const scratch = async (name: string) => {
    const dir = path.join(root, `${name}-${randomBytes(3).toString("hex")}`);
    await mkdir(dir);
    return dir;
  };

  before(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), "wrenn-envd-fs-"));
    envd = await startEnvdProcess();
    fs = envd.filesystem;
  });

  after(() => cleanUp(() => envd?.stop(), () => rm(root, { recursive: true, force: true })));

  describe("Stat", () => {
    test("describes a file: name, type, absolute path, size, mode, permissions, owner, group, mtime", async () => {
      const dir = await scratch("stat");
      const file = path.join(dir, "hello.txt");
      await writeFile(file, "hello");
      await chmod(file, 0o640);
      const { entry } = await fs.stat({ path: file });
      assert.ok(entry);
      assert.equal(entry.name, "hello.txt");
      assert.equal(entry.type, FileType.FILE);
      assert.equal(entry.path, file);
      assert.equal(entry.size, 5n);
      assert.equal(entry.mode, 0o640);
      assert.equal(entry.permissions, "-rw-r-----");
      assert.equal(entry.owner, "root");
      assert.equal(entry.group, "root");
      assert.equal(entry.symlinkTarget, undefined);
      const mtimeMs = (await stat(file)).mtimeMs;
      const reportedMs = Number(entry.modifiedTime!.seconds) * 1000 + entry.modifiedTime!.nanos / 1e6;
      assert.ok(Math.abs(reportedMs - mtimeMs) < 1, `mtime ${reportedMs} vs ${mtimeMs}`);
    });

    test("describes a directory with ls-style permissions", async () => {
      const dir = await scratch("stat-dir");
      await chmod(dir, 0o755);
      const { entry } = await fs.stat({ path: dir });
      assert.equal(entry?.type, FileType.DIRECTORY);
      assert.equal(entry?.permissions, "drwxr-xr-x");
      assert.equal(entry?.mode, 0o755);
    });

    test("reports a symlink as SYMLINK with its target as an absolute path", async () => {
      const dir = await scratch("stat-link");
      await writeFile(path.join(dir, "target.txt"), "x");
      await symlink("target.txt", path.join(dir, "link"));
      const { entry } = await fs.stat({ path: path.join(dir, "link") });
      assert.equal(entry?.type, FileType.SYMLINK);
      assert.equal(entry?.symlinkTarget, path.join(dir, "target.txt"));
      assert.equal(entry?.permissions, "lrwxrwxrwx");
    });

    test("a missing path is not_found", async () => {
      await expectCode(fs.stat({ path: path.join(root, "does-not-exist") }), Code.NotFound);
    });

    test("an empty path is invalid_argument", async () => {
      await expectCode(fs.stat({ path: "" }), Code.InvalidArgument);
    });

    test("relative paths and ~ resolve against the caller's home", async () => {
      const { entry } = await fs.stat({ path: "." }, asRoot);
      assert.equal(entry?.path, "/root");
      const { entry: home } = await fs.stat({ path: "~" }, asRoot);
      assert.equal(home?.path, "/root");
    });

    test("a caller naming a user that does not exist is refused with invalid_argument", async () => {
      await expectCode(fs.stat({ path: "/" }, { headers: basic("no-such-user-here") }), Code.InvalidArgument);
    });
  });

  describe("MakeDir", () => {
    test("creates the directory and its missing parents, and returns its entry", async () => {
      const dir = await scratch("mkdir");
      const target = path.join(dir, "a", "b", "c");
      const { entry } = await fs.makeDir({ path: target });
      assert.equal(entry?.path, target);
      assert.equal(entry?.name, "c");
      assert.equal(entry?.type, FileType.DIRECTORY);
      assert.ok((await stat(target)).isDirectory());
    });

    test("an existing directory is already_exists", async () => {
      const dir = await scratch("mkdir-exists");
      await expectCode(fs.makeDir({ path: dir }), Code.AlreadyExists);
    });

    test("a file in the way is invalid_argument", async () => {
      const dir = await scratch("mkdir-file");
      await writeFile(path.join(dir, "file"), "");
      await expectCode(fs.makeDir({ path: path.join(dir, "file") }), Code.InvalidArgument);
      await expectCode(fs.makeDir({ path: path.join(dir, "file", "below") }), Code.InvalidArgument);
    });

    test("relative paths are created in the caller's home", async () => {
      const name = `wrenn-envd-test-${randomBytes(4).toString("hex")}`;
      try {
        const { entry } = await fs.makeDir({ path: `${name}/inner` }, asRoot);
        assert.equal(entry?.path, `/root/${name}/inner`);
        assert.ok((await stat(`/root/${name}/inner`)).isDirectory());
      } finally {
        await rm(`/root/${name}`, { recursive: true, force: true });
      }
    });

    test("directories created for user nobody are owned by nobody (uid 65534), parents included", async () => {
      const dir = await scratch("mkdir-nobody");
      const { entry } = await fs.makeDir({ path: path.join(dir, "p", "q") }, { headers: basic("nobody") });
      assert.equal(entry?.owner, "nobody");
      for (const created of [path.join(dir, "p"), path.join(dir, "p", "q")]) {
        const stats = await stat(created);
        assert.equal(stats.uid, 65534, created);
        assert.equal(stats.gid, 65534, created);
      }
      assert.equal((await stat(dir)).uid, 0, "the existing parent keeps its owner");
    });
  });

  describe("Move", () => {
    test("renames a file, creating the destination's parents, and returns the destination entry", async () => {
      const dir = await scratch("move");
      await writeFile(path.join(dir, "from.txt"), "moved");
      const destination = path.join(dir, "new", "parent", "to.txt");
      const { entry } = await fs.move({ source: path.join(dir, "from.txt"), destination });
      assert.equal(entry?.path, destination);
      assert.equal(entry?.type, FileType.FILE);
      assert.equal(await readFile(destination, "utf8"), "moved");
      await assert.rejects(lstat(path.join(dir, "from.txt")));
    });

    test("moves a directory with its contents", async () => {
      const dir = await scratch("move-dir");
      await mkdir(path.join(dir, "src", "inner"), { recursive: true });
      await writeFile(path.join(dir, "src", "inner", "f"), "x");
      await fs.move({ source: path.join(dir, "src"), destination: path.join(dir, "dst") });
      assert.equal(await readFile(path.join(dir, "dst", "inner", "f"), "utf8"), "x");
    });

    test("a missing source is not_found and creates nothing", async () => {
      const dir = await scratch("move-missing");
      await expectCode(fs.move({ source: path.join(dir, "nope"), destination: path.join(dir, "x", "y") }), Code.NotFound);
      assert.deepEqual(await readdir(dir), []);
    });
  });

  describe("ListDir", () => {
    let tree: string;
    before(async () => {
      tree = await scratch("list");
      await mkdir(path.join(tree, "sub", "deeper"), { recursive: true });
      await writeFile(path.join(tree, "a.txt"), "a");
      await writeFile(path.join(tree, "sub", "b.txt"), "bb");
      await writeFile(path.join(tree, "sub", "deeper", "c.txt"), "ccc");
      await symlink(path.join(tree, "a.txt"), path.join(tree, "link-to-a"));
      await symlink(tree, path.join(tree, "sub", "loop")); // a symlinked directory pointing back up
    });

    const pathsOf = (entries: { path: string }[]) => entries.map((e) => path.relative(tree, e.path)).sort();

    test("depth 1 lists only the directory's children", async () => {
      const { entries } = await fs.listDir({ path: tree, depth: 1 });
      assert.deepEqual(pathsOf(entries), ["a.txt", "link-to-a", "sub"]);
    });

    test("depth 0 is treated as 1", async () => {
      const { entries } = await fs.listDir({ path: tree, depth: 0 });
      assert.deepEqual(pathsOf(entries), ["a.txt", "link-to-a", "sub"]);
    });

    test("depth 2 includes the entries of subdirectories", async () => {
      const { entries } = await fs.listDir({ path: tree, depth: 2 });
      assert.deepEqual(pathsOf(entries), ["a.txt", "link-to-a", "sub", "sub/b.txt", "sub/deeper", "sub/loop"]);
    });

    test("never follows symlinked directories, so a link loop ends", async () => {
      const { entries } = await fs.listDir({ path: tree, depth: 50 });
      assert.deepEqual(pathsOf(entries), ["a.txt", "link-to-a", "sub", "sub/b.txt", "sub/deeper", "sub/deeper/c.txt", "sub/loop"]);
    });

    test("symlink entries are SYMLINK with their absolute target; files and directories have their types", async () => {
      const { entries } = await fs.listDir({ path: tree, depth: 2 });
      const byName = new Map(entries.map((e) => [path.relative(tree, e.path), e]));
      assert.equal(byName.get("link-to-a")?.type, FileType.SYMLINK);
      assert.equal(byName.get("link-to-a")?.symlinkTarget, path.join(tree, "a.txt"));
      assert.equal(byName.get("sub/loop")?.type, FileType.SYMLINK);
      assert.equal(byName.get("sub/loop")?.symlinkTarget, tree);
      assert.equal(byName.get("a.txt")?.type, FileType.FILE);
      assert.equal(byName.get("a.txt")?.size, 1n);
      assert.equal(byName.get("sub")?.type, FileType.DIRECTORY);
    });

    test("a file is invalid_argument and a missing path not_found", async () => {
      await expectCode(fs.listDir({ path: path.join(tree, "a.txt") }), Code.InvalidArgument);
      await expectCode(fs.listDir({ path: path.join(tree, "missing") }), Code.NotFound);
    });

    test("Stat and ListDir answer the same over every transport", async () => {
      for (const [name, transport] of Object.entries(allTransports(envd.url))) {
        const client = createClient(Filesystem, transport);
        const { entry } = await client.stat({ path: path.join(tree, "a.txt") });
        assert.equal(entry?.size, 1n, name);
        assert.equal(entry?.type, FileType.FILE, name);
        const { entries } = await client.listDir({ path: tree, depth: 2 });
        assert.deepEqual(pathsOf(entries), ["a.txt", "link-to-a", "sub", "sub/b.txt", "sub/deeper", "sub/loop"], name);
      }
    });
  });

  describe("Remove", () => {
    test("removes a file", async () => {
      const dir = await scratch("remove");
      await writeFile(path.join(dir, "f"), "x");
      await fs.remove({ path: path.join(dir, "f") });
      await assert.rejects(lstat(path.join(dir, "f")));
    });

    test("removes a directory recursively", async () => {
      const dir = await scratch("remove-dir");
      await mkdir(path.join(dir, "d", "e"), { recursive: true });
      await writeFile(path.join(dir, "d", "e", "f"), "x");
      await fs.remove({ path: path.join(dir, "d") });
      assert.deepEqual(await readdir(dir), []);
    });

    test("removes a symlink, not what it points to", async () => {
      const dir = await scratch("remove-link");
      await mkdir(path.join(dir, "target"));
      await writeFile(path.join(dir, "target", "keep"), "x");
      await symlink(path.join(dir, "target"), path.join(dir, "link"));
      await fs.remove({ path: path.join(dir, "link") });
      assert.deepEqual(await readdir(dir), ["target"]);
      assert.deepEqual(await readdir(path.join(dir, "target")), ["keep"]);
    });

    test("a missing path is already removed, as with E2B's envd (os.RemoveAll)", async () => {
      await fs.remove({ path: path.join(root, "never-was") });
    });
  });

  describe("WatchDir", () => {
    test("sends start first, then CREATE, WRITE, CHMOD, RENAME (old name) + CREATE (new name) and REMOVE", async () => {
      const dir = await scratch("watch");
      const stream = await WatchStream.open(fs, { path: dir });
      try {
        assert.equal(stream.messages[0]?.event.case, "start");
        const file = path.join(dir, "file.txt");
        await writeFile(file, "");
        await stream.waitFor(EventType.CREATE, "file.txt");
        await appendFile(file, "more");
        await stream.waitFor(EventType.WRITE, "file.txt");
        await chmod(file, 0o600);
        await stream.waitFor(EventType.CHMOD, "file.txt");
        await rename(file, path.join(dir, "renamed.txt"));
        await stream.waitFor(EventType.RENAME, "file.txt");
        await stream.waitFor(EventType.CREATE, "renamed.txt");
        await rm(path.join(dir, "renamed.txt"));
        await stream.waitFor(EventType.REMOVE, "renamed.txt");
        assert.ok(
          !stream.events().some((e) => e.type === EventType.REMOVE && e.name === "file.txt"),
          "a rename is not reported as a removal",
        );
      } finally {
        await stream.cancel();
      }
    });

    test("writing a new file reports CREATE then WRITE", async () => {
      const dir = await scratch("watch-write");
      const stream = await WatchStream.open(fs, { path: dir });
      try {
        await writeFile(path.join(dir, "new.txt"), "content");
        await stream.waitFor(EventType.WRITE, "new.txt");
        const labels = stream.events().map(eventLabel);
        assert.ok(labels.indexOf("CREATE new.txt") < labels.indexOf("WRITE new.txt"), labels.join(", "));
      } finally {
        await stream.cancel();
      }
    });

    test("changing a directory's mode reports CHMOD", async () => {
      const dir = await scratch("watch-chmod-dir");
      await mkdir(path.join(dir, "sub"));
      const stream = await WatchStream.open(fs, { path: dir });
      try {
        await chmod(path.join(dir, "sub"), 0o700);
        await stream.waitFor(EventType.CHMOD, "sub");
      } finally {
        await stream.cancel();
      }
    });

    test("a recursive watch reports changes in existing and newly created subdirectories by relative path", async () => {
      const dir = await scratch("watch-recursive");
      await mkdir(path.join(dir, "existing"));
      const stream = await WatchStream.open(fs, { path: dir, recursive: true });
      try {
        await writeFile(path.join(dir, "existing", "a.txt"), "a");
        await stream.waitFor(EventType.WRITE, "existing/a.txt");
        await mkdir(path.join(dir, "fresh"));
        await stream.waitFor(EventType.CREATE, "fresh");
        await writeFile(path.join(dir, "fresh", "file.txt"), "hello");
        await stream.waitFor(EventType.CREATE, "fresh/file.txt");
        await stream.waitFor(EventType.WRITE, "fresh/file.txt");
        // Contents that appear together with their directory are reported too.
        await mkdir(path.join(dir, "burst", "deep"), { recursive: true });
        await writeFile(path.join(dir, "burst", "deep", "x.txt"), "x");
        await stream.waitFor(EventType.CREATE, "burst");
        await stream.waitFor(EventType.CREATE, "burst/deep/x.txt");
        // A directory moved within the tree keeps being watched under its new name.
        await rename(path.join(dir, "fresh"), path.join(dir, "moved"));
        await stream.waitFor(EventType.RENAME, "fresh");
        await stream.waitFor(EventType.CREATE, "moved");
        await writeFile(path.join(dir, "moved", "after-move.txt"), "y");
        await stream.waitFor(EventType.WRITE, "moved/after-move.txt");
      } finally {
        await stream.cancel();
      }
    });

    test("saving by renaming over an existing file reports RENAME for the temporary name and CREATE for the target", async () => {
      const dir = await scratch("watch-replace");
      await writeFile(path.join(dir, "config.json"), "old");
      await writeFile(path.join(dir, "config.json.tmp"), "new");
      const stream = await WatchStream.open(fs, { path: dir });
      try {
        await rename(path.join(dir, "config.json.tmp"), path.join(dir, "config.json"));
        await stream.waitFor(EventType.RENAME, "config.json.tmp");
        await stream.waitFor(EventType.CREATE, "config.json");
        assert.ok(!stream.events().some((e) => e.type === EventType.REMOVE), stream.events().map(eventLabel).join(", "));
      } finally {
        await stream.cancel();
      }
    });

    test("removing a watched subtree reports REMOVE for its entries and releases its watches", async () => {
      const dir = await scratch("watch-rmtree");
      await mkdir(path.join(dir, "tree", "inner"), { recursive: true });
      await writeFile(path.join(dir, "tree", "inner", "leaf"), "x");
      const baseline = await settledWatches(envd.pid);
      const stream = await WatchStream.open(fs, { path: dir, recursive: true });
      try {
        assert.equal(await inotifyWatches(envd.pid), baseline + 3);
        await rm(path.join(dir, "tree"), { recursive: true });
        await stream.waitFor(EventType.REMOVE, "tree/inner/leaf");
        await stream.waitFor(EventType.REMOVE, "tree/inner");
        await stream.waitFor(EventType.REMOVE, "tree");
        await eventually(async () => (await inotifyWatches(envd.pid)) === baseline + 1, "only the root to stay watched");
      } finally {
        await stream.cancel();
      }
    });

    test("a non-recursive watch does not report changes inside subdirectories", async () => {
      const dir = await scratch("watch-flat");
      await mkdir(path.join(dir, "sub"));
      const stream = await WatchStream.open(fs, { path: dir });
      try {
        await writeFile(path.join(dir, "sub", "inner.txt"), "x");
        await writeFile(path.join(dir, "marker"), "x");
        await stream.waitFor(EventType.CREATE, "marker");
        assert.ok(!stream.events().some((e) => e.name.startsWith("sub/")), stream.events().map(eventLabel).join(", "));
      } finally {
        await stream.cancel();
      }
    });

    test("include_entry attaches the entry while it exists", async () => {
      const dir = await scratch("watch-entry");
      const stream = await WatchStream.open(fs, { path: dir, includeEntry: true });
      try {
        await writeFile(path.join(dir, "e.txt"), "12345");
        const written = await stream.waitFor(EventType.WRITE, "e.txt");
        assert.equal(written.entry?.path, path.join(dir, "e.txt"));
        assert.equal(written.entry?.type, FileType.FILE);
        assert.equal(written.entry?.size, 5n);
        await rm(path.join(dir, "e.txt"));
        const removed = await stream.waitFor(EventType.REMOVE, "e.txt");
        assert.equal(removed.entry, undefined);
      } finally {
        await stream.cancel();
      }
    });

    test("without include_entry events carry no entry", async () => {
      const dir = await scratch("watch-no-entry");
      const stream = await WatchStream.open(fs, { path: dir });
      try {
        await writeFile(path.join(dir, "f"), "x");
        assert.equal((await stream.waitFor(EventType.CREATE, "f")).entry, undefined);
      } finally {
        await stream.cancel();
      }
    });

    test("sends keepalives at the Keepalive-Ping-Interval the caller asked for", async () => {
      const dir = await scratch("watch-keepalive");
      const stream = await WatchStream.open(fs, { path: dir }, { "keepalive-ping-interval": "1" });
      try {
        await eventually(() => stream.messages.some((m) => m.event.case === "keepalive"), "a keepalive", 8000); // asked for 1 s; the default is far longer
      } finally {
        await stream.cancel();
      }
    });

    test("a missing directory is not_found and a file invalid_argument", async () => {
      const dir = await scratch("watch-errors");
      await writeFile(path.join(dir, "file"), "");
      const open = (p: string) => fs.watchDir({ path: p })[Symbol.asyncIterator]().next();
      await expectCode(open(path.join(dir, "missing")), Code.NotFound);
      await expectCode(open(path.join(dir, "file")), Code.InvalidArgument);
    });

    test("cancelling the stream closes every inotify watch it opened, and envd stays healthy", async () => {
      const dir = await scratch("watch-cancel");
      for (const sub of ["a", "b", "c/d"]) await mkdir(path.join(dir, sub), { recursive: true });
      const baseline = await settledWatches(envd.pid);
      const stream = await WatchStream.open(fs, { path: dir, recursive: true });
      assert.equal(await inotifyWatches(envd.pid), baseline + 5, "one watch per directory: root, a, b, c, c/d");
      await stream.cancel();
      await eventually(async () => (await inotifyWatches(envd.pid)) === baseline, "the watches to be closed");

      await Promise.all(Array.from({ length: 200 }, (_, i) => writeFile(path.join(dir, "a", `f${i}`), "x")));
      const { entries } = await fs.listDir({ path: path.join(dir, "a") });
      assert.equal(entries.length, 200);
      assert.equal(await inotifyWatches(envd.pid), baseline);
    });
  });

  describe("polling watchers", () => {
    test("GetWatcherEvents returns the events since the last call, then RemoveWatcher closes it", async () => {
      const dir = await scratch("poll");
      const baseline = await settledWatches(envd.pid);
      const { watcherId } = await fs.createWatcher({ path: dir, recursive: true });
      assert.ok(watcherId);
      await writeFile(path.join(dir, "one.txt"), "1");
      await mkdir(path.join(dir, "sub"));
      await writeFile(path.join(dir, "sub", "two.txt"), "2");
      const seen: FilesystemEvent[] = [];
      await eventually(async () => {
        seen.push(...(await fs.getWatcherEvents({ watcherId })).events);
        return seen.some((e) => e.type === EventType.WRITE && e.name === "sub/two.txt");
      }, "WRITE sub/two.txt");
      const labels = seen.map(eventLabel);
      assert.ok(labels.includes("CREATE one.txt"), labels.join(", "));
      assert.ok(labels.includes("CREATE sub"), labels.join(", "));

      await writeFile(path.join(dir, "three.txt"), "3");
      const later: FilesystemEvent[] = [];
      await eventually(async () => {
        later.push(...(await fs.getWatcherEvents({ watcherId })).events);
        return later.some((e) => e.type === EventType.CREATE && e.name === "three.txt");
      }, "CREATE three.txt");
      const laterLabels = later.map(eventLabel);
      assert.ok(!laterLabels.includes("CREATE one.txt") && !laterLabels.includes("CREATE sub"), `events are cleared once returned: ${laterLabels.join(", ")}`);

      await fs.removeWatcher({ watcherId });
      await expectCode(fs.getWatcherEvents({ watcherId }), Code.NotFound);
      assert.equal(await inotifyWatches(envd.pid), baseline);
    });

    test("an unknown watcher id is not_found", async () => {
      await expectCode(fs.getWatcherEvents({ watcherId: "w-unknown" }), Code.NotFound);
      await expectCode(fs.removeWatcher({ watcherId: "w-unknown" }), Code.NotFound);
    });

    test("CreateWatcher on a missing directory is not_found", async () => {
      await expectCode(fs.createWatcher({ path: path.join(root, "missing-dir") }), Code.NotFound);
    });

    test("a watcher nobody polls keeps at most the newest 10,000 events", async () => {
      const dir = await scratch("poll-bound");
      const { watcherId } = await fs.createWatcher({ path: dir });
      const companion = await WatchStream.open(fs, { path: dir });
      try {
        const count = 10_500;
        for (let start = 0; start < count; start += 500) {
          await Promise.all(Array.from({ length: 500 }, (_, i) => writeFile(path.join(dir, `f${start + i}`), "")));
        }
        // A stream on the same directory tells when envd has seen the last file; then read everything at once.
        await companion.waitFor(EventType.CREATE, `f${count - 1}`, 20_000);
        await sleep(200);
        const { events } = await fs.getWatcherEvents({ watcherId });
        assert.equal(events.length, 10_000);
        assert.ok(events.some((e) => e.type === EventType.CREATE && e.name === `f${count - 1}`), "the newest events are kept");
      } finally {
        await companion.cancel();
        await fs.removeWatcher({ watcherId });
      }
    });
  });
});
