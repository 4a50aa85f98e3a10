// `make up` end to end, the way a user runs it: the real Makefile target on a temporary data dir
// builds the `base` template (progress shown), starts the agent and the control plane, prints the
// API URL and admin key, and the three `export E2B_…` lines with which the unmodified e2b SDK
// creates a `base` sandbox, runs Python and moves files in it; a sandbox made through the API runs
// Python, and one from `base` on the qemu runtime (a microVM) too; the dashboard's URL, user and
// password are printed and sign in; Ctrl-C (SIGINT to make's
// process group, as a terminal sends it) stops everything cleanly; a second `make up` on the same
// data dir prints the same key and dashboard password and takes the sandbox back.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, test } from "node:test";
import { Sandbox } from "e2b";
import { e2bKeyFor } from "../src/db/api-keys.js";
import { commandRuns } from "../../host-agent/test/host-tools.js";
import { removeDataDir, repoRoot, startAgentProcess } from "../../host-agent/test/agent-harness.js";
import { skipAgent, waitFor } from "./orchestration-harness.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const POOL = "10.244.8.0/22";
const TABLE = "wrenn_h3_up";
/** The first run builds the base template (mmdebstrap) and boots the agent's warm pool. Generous: another test file may be running beside this one. */
const FIRST_START_MS = 400_000;
const START_MS = 180_000;
const STOP_MS = 60_000;

const skip = skipAgent || (!commandRuns("make") ? "needs make" : !commandRuns("mmdebstrap") ? "needs mmdebstrap (make system-deps)" : false);

/** A TCP port nothing listens on right now (the OS's choice). */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function portIsFree(port: number): Promise<boolean> {
  const server = net.createServer();
  const free = await new Promise<boolean>((resolve) => server.once("error", () => resolve(false)).listen(port, "127.0.0.1", () => resolve(true)));
  if (free) await new Promise((resolve) => server.close(resolve));
  return free;
}

/** Every process below `root` (by parent pid), from /proc. */
async function descendants(root: number): Promise<Array<{ pid: number; args: string }>> {
  const parents = new Map<number, number>();
  const args = new Map<number, string>();
  for (const entry of await readdir("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    try {
      const stat = await readFile(`/proc/${pid}/stat`, "utf8");
      parents.set(pid, Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
      args.set(pid, (await readFile(`/proc/${pid}/cmdline`, "utf8")).replaceAll("\0", " ").trim());
    } catch {
      // gone meanwhile
    }
  }
  const found: Array<{ pid: number; args: string }> = [];
  const queue = [root];
  while (queue.length > 0) {
    const parent = queue.shift()!;
    for (const [pid, ppid] of parents) {
      if (ppid !== parent) continue;
      found.push({ pid, args: args.get(pid) ?? "" });
      queue.push(pid);
    }
  }
  return found;
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** One `make up` run: its output as lines (stdout and stderr, in arrival order). */
interface UpRun {
  make: ChildProcess;
  lines: string[];
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves with the first line matching `pattern` (already seen or still to come). */
  line(pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray>;
  output(): string;
}

describe("make up", { skip }, () => {
  let dataDir: string;
  let apiPort: number;
  let agentPort: number;
  let proxyPort: number;
  let current: UpRun | undefined;

  /** This environment as a user's shell would have it: no outer make's state (under `make test`), our API port. */
  function userEnvironment(): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = { ...process.env, WRENN_PORT: String(apiPort), NO_COLOR: "1" };
    for (const name of ["MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"]) delete env[name];
    return env;
  }

  function makeUp(): UpRun {
    const flags = `--pool ${POOL} --firewall-table ${TABLE} --port ${agentPort} --proxy-port ${proxyPort} --dns 192.0.2.53`;
    // Its own process group, like a job in a terminal: SIGINT to the group is what Ctrl-C sends.
    const make = spawn("make", ["--no-print-directory", "up", `WRENN_DATA_DIR=${dataDir}`, `UP_AGENT_FLAGS=${flags}`], {
      cwd: repoRoot,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
      env: userEnvironment(),
    });
    const lines: string[] = [];
    const waiters = new Set<() => void>();
    for (const stream of [make.stdout!, make.stderr!]) {
      createInterface({ input: stream, crlfDelay: Infinity }).on("line", (line) => {
        lines.push(line);
        if (process.env.WRENN_TEST_VERBOSE) console.log(line);
        for (const wake of waiters) wake();
      });
    }
    const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => make.once("exit", (code, signal) => resolve({ code, signal })));
    const output = () => lines.join("\n");
    const line = (pattern: RegExp, timeoutMs: number) =>
      new Promise<RegExpExecArray>((resolve, reject) => {
        const check = () => {
          for (const seen of lines) {
            const match = pattern.exec(seen);
            if (match) return finish(() => resolve(match));
          }
          if (make.exitCode !== null || make.signalCode !== null) finish(() => reject(new Error(`make up ended before printing ${pattern}:\n${output().slice(-6000)}`)));
        };
        const timer = setTimeout(() => finish(() => reject(new Error(`no ${pattern} within ${timeoutMs / 1000} s:\n${output().slice(-6000)}`))), timeoutMs);
        const finish = (settle: () => void) => {
          clearTimeout(timer);
          waiters.delete(check);
          make.off("exit", check);
          settle();
        };
        waiters.add(check);
        make.on("exit", check);
        check();
      });
    current = { make, lines, exit, line, output };
    return current;
  }

  /** Waits for the two lines a user copies; returns the URL and key. */
  async function ready(run: UpRun, timeoutMs: number): Promise<{ url: string; key: string }> {
    const url = (await run.line(/^API: (http:\/\/\S+)$/, timeoutMs))[1]!;
    const key = (await run.line(/^API key: (wrn_\S+)$/, timeoutMs))[1]!;
    return { url, key };
  }

  /** The `export E2B_…=…` lines `make up` prints for the e2b SDK, each alone on its line. */
  async function e2bExports(run: UpRun, timeoutMs: number): Promise<Record<"E2B_API_URL" | "E2B_SANDBOX_URL" | "E2B_API_KEY", string>> {
    const value = async (name: string) => (await run.line(new RegExp(`^export ${name}=(\\S+)$`), timeoutMs))[1]!;
    return { E2B_API_URL: await value("E2B_API_URL"), E2B_SANDBOX_URL: await value("E2B_SANDBOX_URL"), E2B_API_KEY: await value("E2B_API_KEY") };
  }

  /** The three dashboard lines (`Dashboard: <url>/`, `Dashboard user: …`, `Dashboard password: …`), each alone on its line. */
  async function dashboardLines(run: UpRun, timeoutMs: number): Promise<{ url: string; user: string; password: string }> {
    const value = async (label: string) => (await run.line(new RegExp(`^${label}: (\\S+)$`), timeoutMs))[1]!;
    return { url: await value("Dashboard"), user: await value("Dashboard user"), password: await value("Dashboard password") };
  }

  /** Runs `body` with exactly these E2B_* variables in the environment (as a user's shell after pasting them). */
  async function withEnvironment<T>(variables: Record<string, string>, body: () => Promise<T>): Promise<T> {
    const saved = Object.fromEntries(Object.keys(process.env).filter((name) => name.startsWith("E2B_")).map((name) => [name, process.env[name]]));
    for (const name of Object.keys(saved)) delete process.env[name];
    Object.assign(process.env, variables);
    try {
      return await body();
    } finally {
      for (const name of Object.keys(variables)) delete process.env[name];
      Object.assign(process.env, saved);
    }
  }

  /** Ctrl-C: SIGINT to make's process group; resolves once make has gone. */
  async function interrupt(run: UpRun): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    process.kill(-run.make.pid!, "SIGINT");
    const timer = setTimeout(() => process.kill(-run.make.pid!, "SIGKILL"), STOP_MS);
    const result = await run.exit;
    clearTimeout(timer);
    return result;
  }

  /** The launcher and its children (not the detached runsc sandboxes, which outlive `make up` by design). */
  const stackProcesses = async (run: UpRun) => (await descendants(run.make.pid!)).filter((p) => !p.args.includes("runsc"));
  /** Any process working in the data dir but a sandbox (say a database server the control plane started). */
  const usingDataDir = async () => (await descendants(1)).filter((p) => p.args.includes(dataDir) && !p.args.includes("runsc"));

  /** The launcher waits for the agent and the control plane, so they are gone with make; their helpers follow. */
  async function allGone(processes: Array<{ pid: number; args: string }>): Promise<void> {
    const running = () => processes.filter((p) => alive(p.pid));
    // tsx's esbuild service exits when its parent's pipe closes, a moment after the parent.
    const isHelper = (p: { args: string }) => p.args.includes("/esbuild --service");
    assert.deepEqual(running().filter((p) => !isHelper(p)), [], "the launcher, the agent and the control plane are gone");
    await waitFor("their helper processes to exit", async () => running().length === 0, 30_000);
    assert.deepEqual(await usingDataDir(), [], "nothing else of the stack is left running");
  }

  before(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), "wrenn-make-up-"));
    // As traversable as a checkout's .data: whatever the control plane runs as another user (an
    // embedded PostgreSQL) may enter it, as it would for a user.
    await chmod(dataDir, 0o755);
    const ports = new Set<number>();
    while (ports.size < 3) ports.add(await freePort());
    [apiPort, agentPort, proxyPort] = [...ports] as [number, number, number];
  });

  after(async () => {
    if (current && current.make.exitCode === null && current.make.signalCode === null) await interrupt(current).catch(() => undefined);
    // Whatever the runs left (the warm pool, a sandbox a failed case did not delete): an agent on
    // the same data dir takes them back, and Terminate destroys them all.
    const agentDataDir = path.join(dataDir, "agent");
    if (existsSync(path.join(agentDataDir, "sandboxes"))) {
      const agent = await startAgentProcess({ pool: POOL, table: TABLE, dataDir: agentDataDir });
      await agent.client.terminate({});
      await new Promise<void>((resolve) => (agent.child.exitCode !== null || agent.child.signalCode !== null ? resolve() : agent.child.once("exit", () => resolve())));
    }
    if (existsSync(agentDataDir)) await removeDataDir(agentDataDir, TABLE);
    const leftovers = (await descendants(1)).filter((p) => p.args.includes(dataDir));
    await rm(dataDir, { recursive: true, force: true });
    assert.deepEqual(leftovers, [], "no process of the stack outlives the test");
  });

  test("builds the base template, serves the API with an admin key, stops on Ctrl-C and takes its sandbox back on the next run", { timeout: 600_000 }, async () => {
    // First run: everything is made.
    const first = makeUp();
    const { url, key } = await ready(first, FIRST_START_MS);
    assert.equal(url, `http://127.0.0.1:${apiPort}`);
    const output = first.output();
    assert.match(output, /^build-base-template: building base from:$/m, "the base template build says what it does");
    assert.match(output, /^build-base-template: built .*\/agent\/templates\/base \(\d+ MiB\) in \d+ s$/m, "and when it is done");
    assert.match(output, /^I: /m, "mmdebstrap's progress is shown");
    assert.match(output, /^\[agent\] \[\d\d:\d\d:\d\d\.\d{3}\] INFO: /m, "agent logs are readable and prefixed");
    assert.match(output, /^\[api\] {3}\[\d\d:\d\d:\d\d\.\d{3}\] INFO: /m, "control plane logs are readable and prefixed");
    assert.doesNotMatch(output, /^\[(agent|api)\]\s+\{/m, "no raw JSON logs");

    // The lines a user pastes to point the e2b SDK here: the API serves envd too (edge proxy), the key is the admin key's e2b alias.
    const exports = await e2bExports(first, 5_000);
    assert.deepEqual(exports, { E2B_API_URL: url, E2B_SANDBOX_URL: url, E2B_API_KEY: e2bKeyFor(key) });

    // The dashboard's lines: its URL, the first admin user and a password that signs in to the admin team.
    const dashboard = await dashboardLines(first, 5_000);
    assert.equal(dashboard.url, `${url}/`);
    assert.equal(dashboard.user, "admin@wrenn.local");
    assert.match(dashboard.password, /^[A-Za-z0-9]{20}$/);
    const signIn = await fetch(`${url}/v1/auth/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ email: dashboard.user, password: dashboard.password }),
    });
    const session = (await signIn.json()) as Json;
    assert.equal(signIn.status, 200, JSON.stringify(session));
    assert.equal(session.team.isAdmin, true);
    await withEnvironment(exports, async () => {
      const sandbox = await Sandbox.create(); // no template: the SDK asks for `base`, which make up built
      try {
        const info = await sandbox.getInfo();
        assert.equal(info.name, "base");
        assert.equal(info.state, "running");
        const run = await sandbox.commands.run("python3 -c 'print(6*7)'");
        assert.equal(run.exitCode, 0, run.stderr);
        assert.equal(run.stdout, "42\n");
        await sandbox.files.write("/home/user/hello.txt", "hello from e2b");
        assert.equal(await sandbox.files.read("/home/user/hello.txt"), "hello from e2b");
      } finally {
        assert.equal(await sandbox.kill(), true);
      }
      assert.equal(await sandbox.isRunning(), false);
      assert.equal(await Sandbox.kill(sandbox.sandboxId), false, "gone: killing it again finds nothing");
    });

    const call = async (method: string, route: string, body?: unknown): Promise<{ status: number; body: Json }> => {
      const response = await fetch(url + route, {
        method,
        headers: { "x-api-key": key, ...(body === undefined ? {} : { "content-type": "application/json" }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const raw = await response.text();
      return { status: response.status, body: raw ? (JSON.parse(raw) as Json) : {} };
    };
    const created = await call("POST", "/v1/sandboxes", { template: "base", timeoutSec: 0 });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.equal(created.body.state, "running");
    const sandbox = `/v1/sandboxes/${created.body.id as string}`;
    const python = await call("POST", `${sandbox}/exec`, { cmd: "python3", args: ["-c", "print(1+1)"] });
    assert.deepEqual(python.body, { stdout: "2\n", stderr: "", exitCode: 0 });

    // The base template boots as a microVM too (make up builds the VM guest): its own kernel, Debian's python.
    const vm = await call("POST", "/v1/sandboxes", { template: "base", runtime: "qemu", timeoutSec: 0 });
    assert.equal(vm.status, 201, JSON.stringify(vm.body));
    try {
      const inVm = await call("POST", `/v1/sandboxes/${vm.body.id as string}/exec`, { cmd: "/bin/sh", args: ["-c", "uname -r; python3 -c 'print(6*7)'"] });
      assert.match(inVm.body.stdout, /cloud-amd64\n42\n$/, JSON.stringify(inVm.body));
    } finally {
      assert.equal((await call("DELETE", `/v1/sandboxes/${vm.body.id as string}`)).status, 200);
    }
    // Its first boot is saved for the next (templates/base/vm-boot), from a VM of the agent's own,
    // which is gone once saved: no VM may outlive this run's Ctrl-C (a sandbox's would, by design).
    const bootDir = path.join(dataDir, "agent", "templates", "base", "vm-boot");
    await waitFor("the base template's boot snapshot", async () => (await readdir(bootDir).catch(() => [] as string[])).some((name) => !name.includes(".saving-") && existsSync(path.join(bootDir, name, "vm.json"))), 300_000);
    await waitFor("the VM it was saved from to go", async () => !(await descendants(1)).some((p) => p.args.includes("qemu-system") && p.args.includes(dataDir)), 30_000);
    // A mark that only this very sandbox holds, to recognise it after the restart.
    const mark = await call("POST", `${sandbox}/exec`, { cmd: "/bin/sh", args: ["-c", "echo first-run > /tmp/mark"] });
    assert.equal(mark.body.exitCode, 0, JSON.stringify(mark.body));

    const processes = await stackProcesses(first);
    assert.ok(processes.some((p) => p.args.includes("scripts/up.ts")), JSON.stringify(processes));
    assert.ok(processes.some((p) => p.args.includes("host-agent/src/main.ts")), JSON.stringify(processes));
    assert.ok(processes.some((p) => p.args.includes("control-plane/src/main.ts")), JSON.stringify(processes));

    // Ctrl-C: make reports the interrupt (it always does); the launcher says it stopped cleanly.
    const stopped = await interrupt(first);
    assert.ok(stopped.signal === "SIGINT" || stopped.code === 0, `make ended with ${JSON.stringify(stopped)}`);
    assert.match(first.output(), /^\[up\] {4}stopped cleanly; /m, first.output().slice(-3000));
    await allGone(processes);
    for (const port of [apiPort, agentPort, proxyPort]) assert.ok(await portIsFree(port), `port ${port} is free again`);

    // Second run: nothing is rebuilt, the same key, the same sandbox.
    const second = makeUp();
    const again = await ready(second, START_MS);
    assert.deepEqual(again, { url, key });
    assert.deepEqual(await dashboardLines(second, 5_000), dashboard, "the same dashboard lines, password included");
    assert.match(second.output(), /^build-base-template: .*\/agent\/templates\/base already built$/m);
    const state = await waitFor("the sandbox to be running again", async () => {
      const got = await call("GET", sandbox);
      return got.body.state === "running" ? got.body.state : undefined;
    }, 30_000);
    assert.equal(state, "running");
    const kept = await call("POST", `${sandbox}/exec`, { cmd: "cat", args: ["/tmp/mark"] });
    assert.deepEqual(kept.body, { stdout: "first-run\n", stderr: "", exitCode: 0 }, "the very sandbox of the first run");
    const pythonAgain = await call("POST", `${sandbox}/exec`, { cmd: "python3", args: ["-c", "print(1+1)"] });
    assert.equal(pythonAgain.body.stdout, "2\n");

    const deleted = await call("DELETE", sandbox);
    assert.equal(deleted.status, 200, JSON.stringify(deleted.body));
    assert.equal(deleted.body.state, "stopped");
    const secondProcesses = await stackProcesses(second);
    const stoppedAgain = await interrupt(second);
    assert.ok(stoppedAgain.signal === "SIGINT" || stoppedAgain.code === 0, `make ended with ${JSON.stringify(stoppedAgain)}`);
    assert.match(second.output(), /^\[up\] {4}stopped cleanly; /m, second.output().slice(-3000));
    await allGone(secondProcesses);
    for (const port of [apiPort, agentPort, proxyPort]) assert.ok(await portIsFree(port), `port ${port} is free again`);
  });
});
