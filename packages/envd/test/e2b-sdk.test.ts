// Wire compatibility with the official `e2b` SDK: its shipped protobuf descriptors must match
// ours field for field, and its own high-level clients must work against a real envd.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFile, mkdtemp, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fromBinary, isFieldSet, type DescMessage } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, FieldDescriptorProtoSchema, type DescriptorProto, type FileDescriptorProto } from "@bufbuild/protobuf/wkt";
import { file_process_process } from "@wrenn/proto/envd/process";
import { file_filesystem_filesystem } from "@wrenn/proto/envd/filesystem";
import { Sandbox, CommandExitError, FileType, NotFoundError } from "e2b";
import { startEnvdProcess, type EnvdUnderTest } from "./harness.js";
import { cleanUp } from "./helpers.js";

const require = createRequire(import.meta.url);

/** The FileDescriptorProtos embedded in the e2b package's bundle, by file name. */
async function e2bDescriptors(): Promise<Map<string, FileDescriptorProto>> {
  const bundle = await readFile(require.resolve("e2b").replace(/index\.js$/, "index.mjs"), "utf8");
  const found = new Map<string, FileDescriptorProto>();
  for (const match of bundle.matchAll(/fileDesc\("([A-Za-z0-9+/=_-]+)"/g)) {
    const bytes = Buffer.from(match[1]!.replace(/-/g, "+").replace(/_/g, "/"), "base64");
    const file = fromBinary(FileDescriptorProtoSchema, bytes);
    found.set(file.name, file);
  }
  return found;
}

/** The JSON name a field travels under: explicit, or protoc's lowerCamelCase default (bundles omit the default). */
const jsonNameOf = (f: { name: string; jsonName: string }) => f.jsonName || f.name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/** A comparable outline of a message: every field's name, number, type, label, oneof and presence. */
function outline(message: DescriptorProto, prefix = ""): string[] {
  const name = prefix + message.name;
  const lines = message.field.map((f) => {
    const oneof = isFieldSet(f, FieldDescriptorProtoSchema.field.oneofIndex) && !f.proto3Optional ? message.oneofDecl[f.oneofIndex]?.name : "";
    return `${name}.${f.name}=${f.number} type=${f.type}${f.typeName ? ":" + f.typeName : ""} label=${f.label} json=${jsonNameOf(f)} oneof=${oneof} optional=${f.proto3Optional}`;
  });
  for (const nested of message.nestedType) lines.push(...outline(nested, name + "."));
  for (const e of message.enumType) lines.push(`${name}.${e.name} {${e.value.map((v) => `${v.name}=${v.number}`).join(",")}}`);
  return lines;
}

function fileOutline(file: FileDescriptorProto): string[] {
  return [
    `package ${file.package}`,
    ...file.messageType.flatMap((m) => outline(m)),
    ...file.enumType.map((e) => `${e.name} {${e.value.map((v) => `${v.name}=${v.number}`).join(",")}}`),
    ...file.service.flatMap((s) => s.method.map((m) => `${s.name}.${m.name}(${m.clientStreaming ? "stream " : ""}${m.inputType}) -> ${m.serverStreaming ? "stream " : ""}${m.outputType}`)),
  ].sort();
}

describe("the e2b SDK's protobuf descriptors", () => {
  test("process.proto and filesystem.proto match the e2b package's field for field", async () => {
    const theirs = await e2bDescriptors();
    for (const ours of [file_process_process, file_filesystem_filesystem]) {
      const name = ours.proto.name;
      const shipped = theirs.get(name);
      assert.ok(shipped, `the e2b package ships ${name}`);
      assert.deepEqual(fileOutline(ours.proto), fileOutline(shipped));
    }
  });
});

describe("the e2b SDK against a real envd", () => {
  let envd: EnvdUnderTest;
  let sandbox: Sandbox;
  let dir: string;

  before(async () => {
    envd = await startEnvdProcess();
    // Debug mode skips the control plane; sandboxUrl points every envd call at this envd.
    sandbox = await Sandbox.create({ debug: true, sandboxUrl: envd.url });
    dir = await mkdtemp(path.join(os.tmpdir(), "wrenn-e2b-"));
  });
  after(() => cleanUp(() => envd.stop(), () => rm(dir, { recursive: true, force: true })));

  test("commands.run returns output and exit code, with envs and cwd", async () => {
    const result = await sandbox.commands.run('echo "hello $NAME"; pwd; echo oops >&2', { envs: { NAME: "wrenn" }, cwd: "/tmp" });
    assert.equal(result.exitCode, 0);
    assert.equal(result.stdout, "hello wrenn\n/tmp\n");
    assert.equal(result.stderr, "oops\n");
  });

  test("a failing command throws CommandExitError with its exit code", async () => {
    await assert.rejects(sandbox.commands.run("exit 3"), (err: unknown) => err instanceof CommandExitError && err.exitCode === 3);
  });

  test("output callbacks stream while the command runs", async () => {
    const seen: string[] = [];
    await sandbox.commands.run("echo one; sleep 0.3; echo two", { onStdout: (data) => void seen.push(data) });
    assert.deepEqual(seen.join(""), "one\ntwo\n");
    assert.ok(seen.length >= 2, "two separate chunks arrived");
  });

  test("background commands can be listed, connected to, fed stdin and killed", async () => {
    const handle = await sandbox.commands.run("cat", { background: true, stdin: true });
    const listed = await sandbox.commands.list();
    assert.ok(listed.some((p) => p.pid === handle.pid));
    const received: string[] = [];
    const attached = await sandbox.commands.connect(handle.pid, { onStdout: (d) => void received.push(d) });
    await sandbox.commands.sendStdin(handle.pid, "through stdin\n");
    for (let i = 0; i < 100 && !received.join("").includes("through stdin"); i++) await sleep(20);
    assert.equal(received.join(""), "through stdin\n");
    assert.equal(await sandbox.commands.kill(handle.pid), true);
    await assert.rejects(attached.wait(), (err: unknown) => err instanceof CommandExitError);
    assert.equal(await sandbox.commands.kill(handle.pid), false, "killing a gone process reports false");
  });

  test("files: write, read, list, stat, rename, remove, exists, makeDir", async () => {
    const file = path.join(dir, "notes/hello.txt");
    const info = await sandbox.files.write(file, "hi from e2b");
    assert.equal(info.path, file);
    assert.equal(await sandbox.files.read(file), "hi from e2b");
    assert.deepEqual(Buffer.from(await sandbox.files.read(file, { format: "bytes" })).toString(), "hi from e2b");
    const many = await sandbox.files.write([
      { path: path.join(dir, "many/a.txt"), data: "a" },
      { path: path.join(dir, "many/b.txt"), data: new Blob(["b"]) },
    ]);
    assert.equal(many.length, 2);
    const entries = await sandbox.files.list(path.join(dir, "many"));
    assert.deepEqual(entries.map((e) => e.name).sort(), ["a.txt", "b.txt"]);
    assert.equal(entries[0]!.type, FileType.FILE);
    const stat = await sandbox.files.getInfo(file);
    assert.equal(stat.size, 11);
    assert.equal(await sandbox.files.makeDir(path.join(dir, "newdir")), true);
    assert.equal(await sandbox.files.makeDir(path.join(dir, "newdir")), false);
    const moved = await sandbox.files.rename(file, path.join(dir, "moved.txt"));
    assert.equal(moved.name, "moved.txt");
    assert.equal(await sandbox.files.exists(file), false);
    await sandbox.files.remove(path.join(dir, "moved.txt"));
    assert.equal(await sandbox.files.exists(path.join(dir, "moved.txt")), false);
    await assert.rejects(sandbox.files.read(path.join(dir, "missing.txt")), NotFoundError);
  });

  test("files: streamed write (octet-stream) and streamed read", async () => {
    const data = Buffer.alloc(3 << 20, 7);
    const target = path.join(dir, "stream.bin");
    await sandbox.files.write(target, new Blob([data]).stream());
    const stream = await sandbox.files.read(target, { format: "stream" });
    let size = 0;
    for await (const chunk of stream as unknown as AsyncIterable<Uint8Array>) size += chunk.length;
    assert.equal(size, data.length);
  });

  test("files.watchDir reports events", async () => {
    const events: string[] = [];
    const watcher = await sandbox.files.watchDir(dir, (e) => void events.push(`${e.type}:${e.name}`));
    await sandbox.files.write(path.join(dir, "watched.txt"), "x");
    for (let i = 0; i < 100 && !events.some((e) => e.endsWith("watched.txt")); i++) await sleep(20);
    await watcher.stop();
    assert.ok(events.some((e) => e.endsWith(":watched.txt")), events.join(","));
  });

  test("pty: create, type, resize, kill", async () => {
    let screen = "";
    const terminal = await sandbox.pty.create({ cols: 80, rows: 24, onData: (d) => void (screen += Buffer.from(d).toString()) });
    await sandbox.pty.sendInput(terminal.pid, new TextEncoder().encode("stty size\n"));
    for (let i = 0; i < 1500 && !screen.includes("24 80"); i++) await sleep(20);
    assert.match(screen, /24 80/);
    await sandbox.pty.resize(terminal.pid, { cols: 100, rows: 30 });
    await sandbox.pty.sendInput(terminal.pid, new TextEncoder().encode("stty size\n"));
    for (let i = 0; i < 1500 && !screen.includes("30 100"); i++) await sleep(20);
    assert.match(screen, /30 100/);
    assert.equal(await sandbox.pty.kill(terminal.pid), true);
  });

  test("isRunning reads envd's health", async () => {
    assert.equal(await sandbox.isRunning(), true);
  });
});
