// The SDK against the real stack: the control plane's API, a host agent and gVisor sandboxes.
// Sandboxes, commands and files, each call as a user of the package makes it.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import { after, before, describe, test } from "node:test";
import { NotFoundError, PermissionError, Sandbox, Template, TemplateBuildError, type BuildLogEvent, type CommandEvent, type ConnectionOptions, type SandboxInfo } from "../src/index.js";
import { skipAgent, startStack, TEST_TEMPLATE, waitFor, type ApiUnderTest } from "./sdk-harness.js";

describe("the SDK against a real control plane", { skip: skipAgent }, () => {
  let stack: ApiUnderTest;
  let connection: ConnectionOptions;
  const created: Sandbox[] = [];

  async function newSandbox(options: Parameters<typeof Sandbox.create>[0] = {}): Promise<Sandbox> {
    const sandbox = await Sandbox.create({ template: TEST_TEMPLATE, timeoutSec: 0, ...options }, connection);
    created.push(sandbox);
    return sandbox;
  }

  before(async () => {
    stack = await startStack(1, "sdk");
    connection = { apiUrl: stack.url, apiKey: stack.teamA.key };
  });

  after(async () => {
    for (const sandbox of created) await sandbox.kill().catch(() => undefined);
    await stack?.close();
  });

  test("a sandbox lives through create → info → list → timeout → pause → connect → metrics → logs → snapshot → kill", async () => {
    const purpose = `life-${randomBytes(3).toString("hex")}`;
    const sandbox = await newSandbox({ metadata: { purpose }, envs: { GREETING: "hello from envs" }, memoryMb: 256 });
    assert.match(sandbox.sandboxId, /^[a-z0-9]+$/);
    assert.ok(sandbox.envdAccessToken, "the creator gets envd's token");
    assert.ok(sandbox.trafficAccessToken && sandbox.trafficAccessToken !== sandbox.envdAccessToken, "and a traffic token of its own for its ports");

    const info = await sandbox.getInfo();
    assert.equal(info.state, "running");
    assert.equal(info.template, TEST_TEMPLATE);
    assert.equal(info.memoryMb, 256);
    assert.deepEqual(info.metadata, { purpose });
    assert.equal((await sandbox.commands.run("echo $GREETING")).stdout, "hello from envs\n");

    // Two sandboxes with the same metadata, one per page.
    const second = await newSandbox({ metadata: { purpose, "odd key": "a=b&c" } });
    const pages: SandboxInfo[][] = [];
    for await (const page of Sandbox.list({ metadata: { purpose }, limit: 1 }, connection)) pages.push(page);
    assert.deepEqual(
      pages.map((page) => page.map((s) => s.id)),
      [[second.sandboxId], [sandbox.sandboxId]],
      "newest first, one per page",
    );
    const odd: string[] = [];
    for await (const page of Sandbox.list({ metadata: { "odd key": "a=b&c" }, state: ["running"] }, connection)) odd.push(...page.map((s) => s.id));
    assert.deepEqual(odd, [second.sandboxId], "keys and values with '=', '&' and spaces survive the query");
    await second.kill();

    assert.equal((await sandbox.setTimeout(600)).timeoutSec, 600);
    await sandbox.keepAlive();

    assert.equal((await sandbox.pause()).state, "paused");
    assert.equal(await sandbox.isRunning(), false);
    const again = await Sandbox.connect(sandbox.sandboxId, {}, connection);
    assert.equal((await again.getInfo()).state, "running", "connect resumes a paused sandbox");
    assert.equal((await again.commands.run("echo back")).stdout, "back\n");
    assert.equal((await again.resume()).state, "running", "resuming a running sandbox is a no-op");

    const metrics = await sandbox.metrics({ range: "10m" });
    assert.equal(metrics.range, "10m");
    assert.ok(Array.isArray(metrics.points));
    const points = await waitFor("a metrics point", async () => {
      const { points } = await sandbox.metrics();
      return points.length > 0 ? points : undefined;
    });
    assert.ok(points[0]!.memoryBytes > 0);

    const logs = await waitFor("envd's logs", async () => {
      const logs = await sandbox.logs({ start: 0, limit: 10 });
      return logs.logs.length > 0 ? logs : undefined;
    });
    assert.ok(logs.logs.length <= 10);
    assert.equal(logs.logEntries.length, logs.logs.length);
    const later = await sandbox.logs({ start: new Date(Date.now() + 60_000) });
    assert.deepEqual(later.logs, [], "nothing logged after a time in the future");

    const template = await sandbox.snapshot({ name: `sdk-snap-${randomBytes(3).toString("hex")}`, keepRunning: true });
    assert.equal(template.kind, "snapshot");
    const fromSnapshot = await newSandbox({ template: template.name });
    assert.equal((await fromSnapshot.commands.run("echo from snapshot")).exitCode, 0);
    await fromSnapshot.kill();

    assert.equal((await sandbox.kill()).state, "stopped");
    assert.equal((await sandbox.getInfo()).state, "stopped");
    assert.equal((await sandbox.kill()).state, "stopped", "killing a stopped sandbox is a no-op");
    await assert.rejects(sandbox.commands.run("true"), (err: unknown) => err instanceof NotFoundError && /is stopped/.test(err.message), "a stopped sandbox runs nothing");
    await assert.rejects(Sandbox.connect(sandbox.sandboxId, {}, connection), /has ended \(stopped\): create a new one/);
  });

  test("getHost names a port of the sandbox on the edge proxy (the API's own port)", async () => {
    const sandbox = await newSandbox();
    const host = sandbox.getHost(49983);
    const port = new URL(stack.url).port;
    assert.equal(host, `49983-${sandbox.sandboxId}.localhost:${port}`);
    // envd's /health through the proxy, by host name.
    const status = await new Promise<number>((resolve, reject) => {
      http
        .get({ host: "127.0.0.1", port, path: "/health", headers: { host, "x-api-key": stack.teamA.key } }, (response) => {
          response.resume();
          resolve(response.statusCode ?? 0);
        })
        .on("error", reject);
    });
    assert.equal(status, 204);
    await sandbox.kill();
  });

  test("commands.run answers exit code and output, calls onStdout/onStderr as output comes, honours cwd, envs, user and args", async () => {
    const sandbox = await newSandbox();
    const seen: string[] = [];
    const result = await sandbox.commands.run("echo out; echo err >&2; exit 3", {
      onStdout: (data) => seen.push(`out:${data}`),
      onStderr: (data) => seen.push(`err:${data}`),
    });
    assert.deepEqual({ ...result, error: undefined }, { exitCode: 3, stdout: "out\n", stderr: "err\n", error: undefined });
    assert.equal(result.error, undefined, "a command that simply exited has no error (only a killed or failed one does)");
    assert.deepEqual(seen.sort(), ["err:err\n", "out:out\n"]);

    const where = await sandbox.commands.run('pwd; echo "$ONE $TWO"; id -un', { cwd: "/tmp", envs: { ONE: "1", TWO: "two words" }, user: "root" });
    assert.equal(where.stdout, "/tmp\n1 two words\nroot\n");
    assert.equal((await sandbox.commands.run("id -un", { user: "user" })).stdout, "user\n");
    const direct = await sandbox.commands.run("/bin/echo", { args: ["a b", "$HOME"] });
    assert.equal(direct.stdout, "a b $HOME\n", "with args there is no shell");
    await sandbox.kill();
  });

  test("commands.stream yields start, the output in order, then exit; leaving the loop ends the command", async () => {
    const sandbox = await newSandbox();
    const events: CommandEvent[] = [];
    for await (const event of sandbox.commands.stream("echo one; sleep 0.2; echo two >&2; sleep 0.2; echo three; exit 7")) events.push(event);
    assert.equal(events[0]!.type, "start");
    assert.ok((events[0] as { pid: number }).pid > 0);
    assert.deepEqual(events.slice(1), [
      { type: "stdout", data: "one\n" },
      { type: "stderr", data: "two\n" },
      { type: "stdout", data: "three\n" },
      { type: "exit", exitCode: 7 },
    ]);

    for await (const event of sandbox.commands.stream("echo ready; exec sleep 3017")) {
      if (event.type === "stdout") break;
    }
    await waitFor("the abandoned command to end", async () => !(await sandbox.commands.run("ps")).stdout.includes("sleep 3017"));
    await sandbox.kill();
  });

  test("files: write and read text, bytes and large streams; list, stat, makeDir, move, remove", async () => {
    const sandbox = await newSandbox();
    const { files } = sandbox;
    assert.deepEqual(await files.write("notes/hello.txt", "héllo\n"), { path: "notes/hello.txt", size: 7 });
    assert.equal(await files.read("notes/hello.txt"), "héllo\n");
    assert.equal(await files.read("/home/user/notes/hello.txt"), "héllo\n", "relative paths start at the user's home");
    const bytes = randomBytes(1000);
    await files.write("/tmp/bytes.bin", bytes);
    assert.deepEqual(Buffer.from(await files.read("/tmp/bytes.bin", { format: "bytes" })), bytes);

    // 48 MiB from an async iterable, read back as a stream: never whole in the test's memory.
    const chunk = randomBytes(1024 * 1024);
    const chunks = 48;
    const sent = createHash("sha256");
    async function* generate(): AsyncGenerator<Uint8Array> {
      for (let i = 0; i < chunks; i++) {
        const piece = Buffer.concat([chunk.subarray(i), chunk.subarray(0, i)]);
        sent.update(piece);
        yield piece;
      }
    }
    const written = await files.write("/tmp/large.bin", generate());
    assert.equal(written.size, chunks * chunk.length);
    const received = createHash("sha256");
    let size = 0;
    for await (const piece of await files.read("/tmp/large.bin", { format: "stream" })) {
      received.update(piece);
      size += piece.byteLength;
    }
    assert.equal(size, chunks * chunk.length);
    assert.equal(received.digest("hex"), sent.digest("hex"));
    // A ReadableStream uploads too.
    await files.write("/tmp/from-web-stream.txt", new Blob(["web ", "stream"]).stream());
    assert.equal(await files.read("/tmp/from-web-stream.txt"), "web stream");

    assert.equal(await files.makeDir("/tmp/dir/sub"), true);
    assert.equal(await files.makeDir("/tmp/dir/sub"), false, "an existing directory is not an error");
    await files.write("/tmp/dir/sub/a.txt", "a");
    const entries = await files.list("/tmp/dir", { depth: 2 });
    assert.deepEqual(entries.map((entry) => [entry.path, entry.type]).sort(), [
      ["/tmp/dir/sub", "dir"],
      ["/tmp/dir/sub/a.txt", "file"],
    ]);
    const stat = await files.stat("/tmp/dir/sub/a.txt");
    assert.equal(stat.size, 1);
    assert.equal(stat.type, "file");
    const moved = await files.move("/tmp/dir/sub/a.txt", "/tmp/dir/b.txt");
    assert.equal(moved.path, "/tmp/dir/b.txt");
    assert.equal(await files.exists("/tmp/dir/sub/a.txt"), false);
    assert.equal(await files.read("/tmp/dir/b.txt"), "a");
    await files.remove("/tmp/dir");
    assert.equal(await files.exists("/tmp/dir"), false);
    await assert.rejects(files.read("/tmp/dir/b.txt"), (err: unknown) => err instanceof NotFoundError && err.status === 404);
    await sandbox.kill();
  });

  test("pty: a terminal through envd on the edge proxy takes input, resizes, ends with its exit code, and can be killed", async () => {
    const sandbox = await newSandbox();
    let output = "";
    const terminal = await sandbox.pty.create({ cols: 80, rows: 24, onData: (data) => (output += Buffer.from(data).toString()) });
    assert.ok(terminal.pid > 0);
    await terminal.sendInput("echo $((6 * 7)) $(id -un)\n");
    await waitFor("the terminal's answer", async () => output.includes("42 user"));
    await terminal.resize({ cols: 120, rows: 40 });
    await terminal.sendInput("stty size\n");
    await waitFor("the new size", async () => output.includes("40 120"));
    await terminal.sendInput("exit 5\n");
    assert.deepEqual(await terminal.wait(), { exitCode: 5, status: "exit status 5" });

    const asRoot = await sandbox.pty.create({ cols: 80, rows: 24, user: "root", cmd: "/bin/sleep", args: ["3031"], onData: () => undefined });
    assert.match((await sandbox.commands.run("ps")).stdout, /sleep 3031/);
    await asRoot.kill();
    const end = await asRoot.wait();
    assert.equal(end.status, "signal: killed");
    await assert.rejects(asRoot.sendInput("x"), NotFoundError, "an ended terminal is not found");
    await sandbox.kill();
  });

  test("templates: list, build with a live log, create from the build, a failing build, delete", async () => {
    const platform = await Template.list({}, connection);
    assert.ok(platform.some((template) => template.name === TEST_TEMPLATE && template.platform));
    await assert.rejects(Template.delete(TEST_TEMPLATE, {}, connection), PermissionError, "a platform template is no team's to delete");

    const name = `sdk-built-${randomBytes(3).toString("hex")}`;
    const log: BuildLogEvent[] = [];
    const template = await Template.build(
      { name, baseTemplate: TEST_TEMPLATE, steps: ["echo built > /built.txt", "echo to-stderr >&2"], onLog: (event) => log.push(event) },
      connection,
    );
    assert.equal(template.name, name);
    assert.equal(template.kind, "build");
    assert.deepEqual(
      log.filter((event) => event.type !== "stdout" && event.type !== "stderr"),
      [
        { type: "step", step: 0, command: "echo built > /built.txt" },
        { type: "exit", step: 0, exitCode: 0 },
        { type: "step", step: 1, command: "echo to-stderr >&2" },
        { type: "exit", step: 1, exitCode: 0 },
      ],
    );
    assert.ok(log.some((event) => event.type === "stderr" && event.data.includes("to-stderr")));
    assert.equal((await Template.get(name, {}, connection)).id, template.id);
    const sandbox = await newSandbox({ template: name });
    assert.equal(await sandbox.files.read("/built.txt"), "built\n");
    await sandbox.kill();

    await assert.rejects(Template.build({ name: `${name}-bad`, baseTemplate: TEST_TEMPLATE, steps: ["exit 4"] }, connection), (err: unknown) => {
      assert.ok(err instanceof TemplateBuildError, String(err));
      assert.match(err.buildId, /^bld_/);
      return true;
    });
    await Template.delete(name, {}, connection);
    await assert.rejects(Template.get(name, {}, connection), NotFoundError);
  });
});
