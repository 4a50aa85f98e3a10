// The official e2b SDK, unmodified, against the whole stack as a user points it there: `apiUrl`
// and `sandboxUrl` both the API's URL (envd calls travel through the edge proxy by E2B's
// `E2b-Sandbox-Id` / `E2b-Sandbox-Port` headers), a team's API key, a real host agent and gVisor
// sandboxes. Commands, PTY, files, watch, getHost and isRunning: everything that goes to envd.
//
// The SDK runs `/bin/bash -l -c <cmd>` and its terminal `/bin/bash -i -l`, so the sandboxes boot
// `busybox-bash`: the tests' busybox template with Debian's bash-static as /bin/bash.
import assert from "node:assert/strict";
import http from "node:http";
import type { LookupFunction } from "node:net";
import { after, before, describe, test } from "node:test";
import { CommandExitError, FileType, NotFoundError, Sandbox, SandboxNotFoundError, TimeoutError, type SandboxOpts } from "e2b";
import { startApi, type ApiUnderTest } from "./api-harness.js";
import { BASH_TEMPLATE, skipBash, waitFor, type ManagedAgent } from "./orchestration-harness.js";

const POOL = "10.251.1.0/24";
const TABLE = "wrenn_hkb_sdk";
/** The port of busybox's httpd inside the sandbox, for getHost. */
const HTTP_PORT = 8000;
const NODE_IN_SANDBOX = "/opt/wrenn/lib/ld-linux-x86-64.so.2 --library-path /opt/wrenn/lib /opt/wrenn/lib/node";

const skip = skipBash;

/** Polls until `check` holds (output arrives asynchronously). */
async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  await waitFor(what, async () => check(), timeoutMs);
}

// Names `<port>-<id>.localhost` resolve to the loopback here, whatever the system resolver does
// with *.localhost: the request still carries the SDK's host name, as a browser's would.
const localhostLookup: LookupFunction = (hostname, options, callback) => {
  if (!hostname.endsWith(".localhost")) throw new Error(`unexpected lookup of ${hostname}`);
  if (options.all) (callback as (err: null, addresses: Array<{ address: string; family: number }>) => void)(null, [{ address: "127.0.0.1", family: 4 }]);
  else callback(null, "127.0.0.1", 4);
};

/** One request to a URL whose host is `<port>-<id>.localhost[:port]`, resolved to the loopback. */
function requestByHostName(url: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: init.method ?? "GET", lookup: localhostLookup, agent: false, headers: init.headers }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode!, body }));
    });
    req.on("error", reject);
    req.end(init.body);
  });
}

describe("the e2b SDK's envd calls against Wrenn (commands, PTY, files, getHost)", { skip }, () => {
  let stack: ApiUnderTest;
  let agent: ManagedAgent | undefined;
  let sdk: Pick<SandboxOpts, "apiUrl" | "sandboxUrl" | "apiKey" | "requestTimeoutMs">;
  let sandbox: Sandbox;

  before(async () => {
    stack = await startApi({ database: "pglite", agents: [{ pool: POOL, table: TABLE, bashTemplate: true }] });
    agent = stack.agents[0]!;
    sdk = { apiUrl: stack.url, sandboxUrl: stack.url, apiKey: stack.teamA.key, requestTimeoutMs: 60_000 };
    sandbox = await Sandbox.create(BASH_TEMPLATE, { ...sdk, timeoutMs: 600_000, envs: { SANDBOX_WIDE: "set at create" } });
  });

  after(async () => {
    await stack?.close();
  });

  test("commands.run streams stdout and stderr to the callbacks as the command runs, and returns its exit code", async () => {
    const stdout: Array<{ data: string; at: number }> = [];
    const stderr: string[] = [];
    const result = await sandbox.commands.run("echo one; sleep 0.5; echo two; echo oops >&2", {
      onStdout: (data) => void stdout.push({ data, at: Date.now() }),
      onStderr: (data) => void stderr.push(data),
    });
    assert.equal(result.exitCode, 0);
    assert.equal(result.stdout, "one\ntwo\n");
    assert.equal(result.stderr, "oops\n");
    assert.equal(stdout.map((chunk) => chunk.data).join(""), "one\ntwo\n");
    assert.equal(stderr.join(""), "oops\n");
    assert.ok(stdout.length >= 2 && stdout.at(-1)!.at - stdout[0]!.at >= 300, "the first line arrived before the command slept");
  });

  test("large output and many commands at once pass the proxies whole", async () => {
    const big = await sandbox.commands.run("seq 1 200000");
    assert.equal(big.stdout.length, 1_288_895);
    assert.ok(big.stdout.endsWith("\n199999\n200000\n"));
    const many = await Promise.all(Array.from({ length: 10 }, (_, i) => sandbox.commands.run(`echo ${i}`)));
    assert.deepEqual(many.map((result) => result.stdout), Array.from({ length: 10 }, (_, i) => `${i}\n`));
  });

  test("a failing command throws CommandExitError with its exit code and output", async () => {
    await assert.rejects(sandbox.commands.run("echo partial; echo bad >&2; exit 3"), (err: unknown) => {
      assert.ok(err instanceof CommandExitError, String(err));
      assert.equal(err.exitCode, 3);
      assert.equal(err.message, "exit status 3", "envd's error, as E2B's envd words it");
      assert.equal(err.stdout, "partial\n");
      assert.equal(err.stderr, "bad\n");
      return true;
    });
  });

  test("commands run as the default user in /home/user, or in cwd, with envs, as another user", async () => {
    const plain = await sandbox.commands.run("whoami; pwd; echo $HOME");
    assert.equal(plain.stdout, "user\n/home/user\n/home/user\n");
    const custom = await sandbox.commands.run('whoami; pwd; echo "$GREETING $OTHER"', { cwd: "/tmp", envs: { GREETING: "hello", OTHER: "wrenn" }, user: "root" });
    assert.equal(custom.stdout, "root\n/tmp\nhello wrenn\n");
    assert.equal((await sandbox.commands.run("echo $SANDBOX_WIDE")).stdout, "set at create\n", "the create's envs reach every command");
    assert.match((await sandbox.commands.run("echo $BASH_VERSION")).stdout, /^5\./, "a real bash runs the command");
  });

  test("a background command returns at once; wait() gives its result, kill() ends it", async () => {
    const finishing = await sandbox.commands.run("sleep 0.5; echo done; exit 4", { background: true });
    assert.ok(finishing.pid > 0);
    assert.equal(finishing.stdout, "", "run returned before the command printed");
    await assert.rejects(finishing.wait(), (err: unknown) => err instanceof CommandExitError && err.exitCode === 4 && err.stdout === "done\n");

    const sleeping = await sandbox.commands.run("sleep 60", { background: true });
    assert.equal(await sleeping.kill(), true);
    await assert.rejects(sleeping.wait(), (err: unknown) => err instanceof CommandExitError && err.error === "signal: killed" && err.message === "signal: killed");
    assert.equal(await sandbox.commands.kill(sleeping.pid), false, "a gone process cannot be killed again");
  });

  test("sendStdin feeds a background command and closeStdin ends its input", async () => {
    let seen = "";
    const cat = await sandbox.commands.run("cat; echo eof", { background: true, stdin: true, onStdout: (data) => void (seen += data) });
    await sandbox.commands.sendStdin(cat.pid, "first line\n");
    await until("cat to echo stdin", () => seen === "first line\n");
    await sandbox.commands.sendStdin(cat.pid, "second line\n");
    await until("cat to echo more stdin", () => seen === "first line\nsecond line\n");
    await sandbox.commands.closeStdin(cat.pid);
    const result = await cat.wait();
    assert.equal(result.exitCode, 0);
    assert.equal(result.stdout, "first line\nsecond line\neof\n");
  });

  test("commands.list shows a running command, and commands.connect attaches to its output", async () => {
    const ticker = await sandbox.commands.run("while true; do echo tick; sleep 0.2; done", { background: true, envs: { MARK: "ticker" }, cwd: "/tmp" });
    const listed = (await sandbox.commands.list()).find((process) => process.pid === ticker.pid);
    assert.ok(listed, "the command is listed");
    assert.equal(listed.cmd, "/bin/bash");
    assert.deepEqual(listed.args, ["-l", "-c", "while true; do echo tick; sleep 0.2; done"]);
    assert.equal(listed.cwd, "/tmp");
    assert.equal(listed.envs.MARK, "ticker");

    let seen = "";
    const attached = await sandbox.commands.connect(ticker.pid, { onStdout: (data) => void (seen += data) });
    assert.equal(attached.pid, ticker.pid);
    await until("output through the second handle", () => seen.includes("tick\ntick\n"));
    assert.equal(await attached.kill(), true);
    await assert.rejects(attached.wait(), CommandExitError);
    await assert.rejects(ticker.wait(), CommandExitError);
    assert.ok(!(await sandbox.commands.list()).some((process) => process.pid === ticker.pid), "gone from the list");
  });

  test("a command's timeoutMs ends it: the SDK throws TimeoutError and the process is gone", async () => {
    const command = "sleep 30; echo never";
    await assert.rejects(sandbox.commands.run(command, { timeoutMs: 1500 }), TimeoutError);
    await waitFor("the timed-out command to be killed", async () => !(await sandbox.commands.list()).some((process) => process.args.includes(command)));
  });

  test("another SDK client connects to the sandbox by id and runs commands with the token connect returns", async () => {
    const again = await Sandbox.connect(sandbox.sandboxId, sdk);
    assert.equal(again.sandboxId, sandbox.sandboxId);
    assert.equal((await again.commands.run("echo connected")).stdout, "connected\n");
    assert.equal(await again.files.exists("/home/user"), true);
  });

  test("pty: create, sendInput, resize and kill a bash terminal, with its output received", async () => {
    let screen = "";
    const decoder = new TextDecoder();
    const terminal = await sandbox.pty.create({ cols: 80, rows: 24, cwd: "/tmp", envs: { MARK: "in-pty" }, onData: (data) => void (screen += decoder.decode(data, { stream: true })) });
    const type = (text: string) => sandbox.pty.sendInput(terminal.pid, new TextEncoder().encode(text));
    await type("echo tty=$(tty | cut -c1-8) shell=$0 in=$(pwd) mark=$MARK; stty size\n");
    await until("the terminal's answer", () => /tty=\/dev\/pt/.test(screen) && screen.includes("24 80"));
    assert.match(screen, /shell=(-?\/bin\/)?bash in=\/tmp mark=in-pty/);
    await sandbox.pty.resize(terminal.pid, { cols: 100, rows: 30 });
    await type("stty size\n");
    await until("the new size", () => screen.includes("30 100"));
    assert.equal(await sandbox.pty.kill(terminal.pid), true);
    await assert.rejects(terminal.wait(), CommandExitError);
  });

  test("pty: Ctrl-C interrupts the running command and the shell prompt takes the next one", async () => {
    let screen = "";
    const decoder = new TextDecoder();
    const terminal = await sandbox.pty.create({ cols: 80, rows: 24, onData: (data) => void (screen += decoder.decode(data, { stream: true })) });
    const type = (text: string) => sandbox.pty.sendInput(terminal.pid, new TextEncoder().encode(text));
    const output = (mark: string) =>
      until(`"${mark}" in the terminal`, () => screen.includes(mark + "\r\n"), 30_000).catch((err: Error) => {
        throw new Error(`${err.message}; the terminal showed ${JSON.stringify(screen)}`);
      });
    // $((...)) keeps the marks out of the echoed command lines: only the shell's answers match.
    await type("echo ready-$((40+2))\n");
    await output("ready-42");
    await type("sleep 100; echo slept-$((2+2))\n");
    await until("sleep to start", () => screen.includes("sleep 100; echo slept"), 30_000);
    await new Promise((resolve) => setTimeout(resolve, 500)); // let the shell hand the terminal to sleep
    await type("\x03");
    await type("echo status-$?\n");
    await output("status-130"); // 128 + SIGINT: sleep was interrupted, and the shell took the next line
    assert.ok(!screen.includes("slept-4"), "a ^C ends the whole command line, as in a terminal");

    // A loop in the shell itself, and a ^C at an idle prompt (it just gives a fresh prompt).
    await type("while true; do sleep 1; done\n");
    await new Promise((resolve) => setTimeout(resolve, 1500));
    await type("\x03");
    await type("\x03");
    await type("echo alive-$((3+4))\n");
    await output("alive-7");

    // Ctrl-Z stops a job, `fg` resumes it in the foreground, where Ctrl-C reaches it again;
    // Ctrl-D at an empty prompt then ends the shell.
    await type("sleep 200\n");
    await new Promise((resolve) => setTimeout(resolve, 1000));
    await type("\x1a");
    await until("the job to stop", () => /Stopped\s+sleep 200/.test(screen), 30_000);
    await type("fg\n");
    await new Promise((resolve) => setTimeout(resolve, 1000));
    await type("\x03");
    await type("echo fg-status-$? jobs-$(jobs | wc -l)\n");
    await output("fg-status-130 jobs-0");
    await type("\x04");
    const end = await terminal.wait();
    assert.equal(end.exitCode, 0);
  });

  test("files: write and read text, bytes, a Blob and a stream", async () => {
    const text = await sandbox.files.write("/home/user/sdk/text.txt", "hello from e2b\n");
    assert.deepEqual({ name: text.name, path: text.path, type: text.type }, { name: "text.txt", path: "/home/user/sdk/text.txt", type: FileType.FILE });
    assert.equal(await sandbox.files.read("/home/user/sdk/text.txt"), "hello from e2b\n");

    const bytes = Uint8Array.from({ length: 256 }, (_, i) => i);
    await sandbox.files.write("/home/user/sdk/bytes.bin", bytes.buffer);
    assert.deepEqual(await sandbox.files.read("/home/user/sdk/bytes.bin", { format: "bytes" }), bytes);

    await sandbox.files.write("/home/user/sdk/blob.txt", new Blob(["from a blob"]));
    assert.equal(await (await sandbox.files.read("/home/user/sdk/blob.txt", { format: "blob" })).text(), "from a blob");

    const large = Buffer.alloc(2 << 20, "wrenn ");
    await sandbox.files.write("/home/user/sdk/stream.txt", new Blob([large]).stream());
    const stream = await sandbox.files.read("/home/user/sdk/stream.txt", { format: "stream" });
    const chunks: Uint8Array[] = [];
    for await (const chunk of stream as unknown as AsyncIterable<Uint8Array>) chunks.push(chunk);
    assert.ok(Buffer.concat(chunks).equals(large), "2 MiB streamed up and down unchanged");
    // Relative paths are the user's home; the sandbox sees what the SDK wrote.
    assert.equal(await sandbox.files.read("sdk/text.txt"), "hello from e2b\n");
    assert.equal((await sandbox.commands.run("stat -c '%U %s' /home/user/sdk/bytes.bin")).stdout, "user 256\n");
    await assert.rejects(sandbox.files.read("/home/user/sdk/missing.txt"), NotFoundError);
  });

  test("files: gzip on the way up and down, and as another user", async () => {
    const text = "compressible ".repeat(50_000);
    await sandbox.files.write("/home/user/sdk/gzip.txt", text, { gzip: true });
    assert.equal(await sandbox.files.read("/home/user/sdk/gzip.txt", { gzip: true }), text);
    assert.equal((await sandbox.commands.run("wc -c < /home/user/sdk/gzip.txt")).stdout.trim(), String(text.length));

    await sandbox.files.write("/root/owned.txt", "root's", { user: "root" });
    const info = await sandbox.files.getInfo("/root/owned.txt", { user: "root" });
    assert.equal(info.owner, "root");
    assert.equal(await sandbox.files.read("/root/owned.txt", { user: "root" }), "root's");
  });

  test("signed uploadUrl/downloadUrl work without any other credential, by the sandbox's host name", async () => {
    // Without sandboxUrl the SDK builds them on https://49983-<id>.localhost; here the API's own
    // port speaks plain HTTP, so only the scheme and port are changed.
    const direct = await Sandbox.connect(sandbox.sandboxId, { apiUrl: sdk.apiUrl, apiKey: sdk.apiKey, requestTimeoutMs: sdk.requestTimeoutMs });
    const onApiPort = (url: string) => {
      const parsed = new URL(url);
      assert.equal(parsed.hostname, `49983-${sandbox.sandboxId}.localhost`);
      assert.ok(parsed.searchParams.get("signature")?.startsWith("v1_"));
      return `http://${parsed.hostname}:${new URL(stack.url).port}${parsed.pathname}${parsed.search}`;
    };
    const upload = await requestByHostName(onApiPort(await direct.uploadUrl("/home/user/signed/up.txt")), {
      method: "POST",
      headers: { "content-type": "application/octet-stream" },
      body: "uploaded by URL",
    });
    assert.equal(upload.status, 200, upload.body);
    const download = await requestByHostName(onApiPort(await direct.downloadUrl("/home/user/signed/up.txt")));
    assert.deepEqual(download, { status: 200, body: "uploaded by URL" });
    const forged = new URL(onApiPort(await direct.downloadUrl("/home/user/signed/up.txt")));
    forged.searchParams.set("path", "/home/user/sdk/text.txt");
    assert.equal((await requestByHostName(forged.toString())).status, 404, "a signature is for its own path only");
  });

  test("files: several files at once with the array form", async () => {
    const written = await sandbox.files.write([
      { path: "/home/user/many/a.txt", data: "a" },
      { path: "/home/user/many/b.bin", data: new Uint8Array([1, 2, 3]).buffer },
      { path: "/home/user/many/deeper/c.txt", data: new Blob(["c"]) },
      { path: "/home/user/many/ünï cödé 😀.txt", data: "named in UTF-8" },
    ]);
    assert.deepEqual(written.map((entry) => entry.path).sort(), ["/home/user/many/a.txt", "/home/user/many/b.bin", "/home/user/many/deeper/c.txt", "/home/user/many/ünï cödé 😀.txt"]);
    assert.equal(await sandbox.files.read("/home/user/many/ünï cödé 😀.txt"), "named in UTF-8");
    assert.equal((await sandbox.commands.run("cat /home/user/many/a.txt /home/user/many/deeper/c.txt; od -An -tu1 /home/user/many/b.bin")).stdout, "ac   1   2   3\n");
  });

  test("files: list, exists, getInfo, makeDir, rename and remove", async () => {
    const base = "/home/user/tree";
    assert.equal(await sandbox.files.makeDir(`${base}/inner`), true);
    assert.equal(await sandbox.files.makeDir(`${base}/inner`), false, "already there");
    await sandbox.files.write(`${base}/file.txt`, "12345");
    await sandbox.files.write(`${base}/inner/deep.txt`, "x");

    const top = await sandbox.files.list(base);
    assert.deepEqual(top.map((entry) => `${entry.name}:${entry.type}`).sort(), ["file.txt:file", "inner:dir"]);
    const deep = await sandbox.files.list(base, { depth: 2 });
    assert.deepEqual(deep.map((entry) => entry.path).sort(), [`${base}/file.txt`, `${base}/inner`, `${base}/inner/deep.txt`]);

    await sandbox.commands.run(`ln -s ${base}/file.txt ${base}/link`);
    const link = await sandbox.files.getInfo(`${base}/link`);
    assert.equal(link.symlinkTarget, `${base}/file.txt`);
    await sandbox.files.remove(`${base}/link`);

    const info = await sandbox.files.getInfo(`${base}/file.txt`);
    assert.equal(info.type, FileType.FILE);
    assert.equal(info.size, 5);
    assert.equal(info.owner, "user");
    assert.match(info.permissions, /^-rw/);
    assert.ok(info.modifiedTime && Date.now() - info.modifiedTime.getTime() < 60_000);
    assert.equal((await sandbox.files.getInfo(`${base}/inner`)).type, FileType.DIR);

    assert.equal(await sandbox.files.exists(`${base}/file.txt`), true);
    assert.equal(await sandbox.files.exists(`${base}/nothing`), false);
    const moved = await sandbox.files.rename(`${base}/file.txt`, `${base}/inner/renamed.txt`);
    assert.equal(moved.path, `${base}/inner/renamed.txt`);
    assert.equal(await sandbox.files.exists(`${base}/file.txt`), false);
    assert.equal(await sandbox.files.read(`${base}/inner/renamed.txt`), "12345");
    await sandbox.files.remove(base);
    assert.equal(await sandbox.files.exists(base), false);
    await sandbox.files.remove(base); // as E2B's envd: what is not there is already removed
    await assert.rejects(sandbox.files.getInfo(base), NotFoundError);
  });

  test("files.watchDir reports a file written into the directory, recursively too", async () => {
    const dir = "/home/user/watched";
    await sandbox.files.makeDir(`${dir}/sub`);
    const events: string[] = [];
    const watcher = await sandbox.files.watchDir(dir, (event) => void events.push(`${event.type}:${event.name}`), { recursive: true });
    try {
      await sandbox.files.write(`${dir}/new.txt`, "x");
      await sandbox.commands.run(`echo y > ${dir}/sub/inner.txt`);
      await until("watch events for both files", () => events.some((e) => e.endsWith(":new.txt")) && events.some((e) => e.endsWith(":sub/inner.txt")));
    } finally {
      await watcher.stop();
    }
    assert.ok(events.some((e) => /^(create|write):new\.txt$/.test(e)), events.join(", "));
  });

  test("getHost(port) names a host that reaches a server started in the sandbox, through the API's port", async () => {
    await sandbox.files.write("/tmp/www/index.html", "served from the sandbox\n");
    // Node (envd's own, in /opt/wrenn) rather than busybox httpd: under gVisor httpd resets about
    // one connection in four before answering, direct from the host as through the proxies.
    const serve = `require("http").createServer((q, s) => s.end(require("fs").readFileSync("/tmp/www" + q.url))).listen(${HTTP_PORT})`;
    const server = await sandbox.commands.run(`${NODE_IN_SANDBOX} -e '${serve}'`, { background: true });
    try {
      const host = sandbox.getHost(HTTP_PORT);
      assert.equal(host, `${HTTP_PORT}-${sandbox.sandboxId}.localhost`);
      const apiPort = new URL(stack.url).port;
      // Unlike E2B's public ports, Wrenn's edge proxy wants the team's key (or the envd token) on every port.
      const reply = await waitFor("the sandbox's web server", async () => {
        const answer = await requestByHostName(`http://${host}:${apiPort}/index.html`, { headers: { "x-api-key": stack.teamA.key } });
        return answer.status === 200 ? answer : undefined;
      });
      assert.equal(reply.body, "served from the sandbox\n");
      // ...or the sandbox's traffic access token, as E2B's restricted ports want (allowPublicTraffic: false).
      assert.equal(typeof sandbox.trafficAccessToken, "string");
      const byTrafficToken = await requestByHostName(`http://${host}:${apiPort}/index.html`, {
        headers: { "e2b-traffic-access-token": sandbox.trafficAccessToken! },
      });
      assert.deepEqual([byTrafficToken.status, byTrafficToken.body], [200, "served from the sandbox\n"]);
      const anonymous = await requestByHostName(`http://${host}:${apiPort}/index.html`);
      assert.equal(anonymous.status, 401, anonymous.body);
    } finally {
      await server.kill();
    }
  });

  test("a paused sandbox is not running; connect resumes it and its envd answers again", async () => {
    assert.equal(await sandbox.pause(), true);
    assert.equal(await sandbox.isRunning(), false);
    const resumed = await Sandbox.connect(sandbox.sandboxId, sdk);
    assert.equal(await resumed.isRunning(), true);
    assert.equal((await sandbox.commands.run("echo back")).stdout, "back\n", "the first handle works again too");
  });

  test("isRunning is true for a running sandbox and false once it is killed; then calls fail as E2B's do", async () => {
    assert.equal(await sandbox.isRunning(), true);
    await sandbox.kill();
    assert.equal(await sandbox.isRunning(), false);
    // The proxy's 502 is what the SDK reads as a sandbox that is gone.
    await assert.rejects(sandbox.commands.run("true"), SandboxNotFoundError);
    await assert.rejects(sandbox.files.read("/etc/passwd"), TimeoutError);
  });
});
