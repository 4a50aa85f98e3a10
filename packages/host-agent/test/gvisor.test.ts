// A real gVisor sandbox: netns + veth, an overlayfs rootfs over a busybox template, envd under
// tini, driven through envd's Connect API; then pause/resume and a destroy that leaves nothing, and
// stops of sandboxes running, paused, already dead, and stopped twice.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { Process } from "@wrenn/proto/envd/process";
import { runCommand } from "../src/exec/command.js";
import { Cleanup } from "../src/sandbox/cleanup.js";
import { SlotAllocator } from "../src/sandbox/network/slots.js";
import { createNetwork, linkExists, listNamespaces, type SandboxNetwork } from "../src/sandbox/network/namespace.js";
import { mountRootfs, mountsUnder } from "../src/sandbox/storage/rootfs.js";
import { containerId, DEFAULT_LIMITS, GvisorRuntime } from "../src/sandbox/runtime/gvisor.js";
import { ENVD_PORT } from "../src/sandbox/runtime/driver.js";
import { buildBusyboxTemplate } from "./template.js";
import { commandRuns } from "./host-tools.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const envdDir = path.join(repoRoot, "build", "opt-wrenn");
const isRoot = process.getuid?.() === 0;
const hasRunsc = commandRuns("runsc");
const skip = !isRoot ? "needs root" : !hasRunsc ? "needs runsc (scripts/install-system-deps.sh)" : false;

const basicAuth = (user: string) => ({ authorization: "Basic " + Buffer.from(`${user}:`).toString("base64") });

/** This test's own addresses, away from the agent tests' pools. */
const testPool = new SlotAllocator("10.201.250.0/24");

/** A slot whose /30 no interface on this host already uses. */
async function freeSlot(): Promise<number> {
  const addresses = JSON.parse(await runCommand("ip", ["-json", "addr", "show"], { timeoutMs: 5000 })) as { addr_info: { local: string }[] }[];
  const used = new Set(addresses.flatMap((link) => link.addr_info.map((a) => a.local)));
  for (let slot = 0; slot < testPool.total; slot++) {
    const { hostAddress, sandboxAddress } = testPool.addresses(slot);
    if (!used.has(hostAddress) && !used.has(sandboxAddress)) return slot;
  }
  throw new Error("no free test slot in 10.201.250.0/24");
}

async function health(baseUrl: string, timeoutMs: number): Promise<number | undefined> {
  try {
    const res = await fetch(`${baseUrl}/health`, { signal: AbortSignal.timeout(timeoutMs) });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return undefined;
  }
}

async function run(
  client: Client<typeof Process>,
  cmd: string,
  args: string[],
  user = "root",
): Promise<{ stdout: string; stderr: string; exitCode: number | undefined }> {
  let stdout = "";
  let stderr = "";
  let exitCode: number | undefined;
  for await (const { event } of client.start({ process: { cmd, args, envs: {} }, stdin: false }, { headers: basicAuth(user) })) {
    if (event?.event.case === "data") {
      const output = event.event.value.output;
      if (output.case === "stdout") stdout += Buffer.from(output.value).toString();
      if (output.case === "stderr") stderr += Buffer.from(output.value).toString();
    }
    if (event?.event.case === "end") exitCode = event.event.value.exitCode;
  }
  return { stdout, stderr, exitCode };
}

describe("a gVisor sandbox running envd", { skip }, () => {
  const sandboxId = `wt${process.pid}`;
  const cleanup = new Cleanup();
  let workDir: string;
  let runtime: GvisorRuntime;
  let network: SandboxNetwork;
  let baseUrl: string;
  let client: Client<typeof Process>;
  const limits = { vcpus: 1.5, memoryMb: 384, pidsLimit: 2048 };

  before(async () => {
    if (!existsSync(path.join(envdDir, "envd.argv"))) {
      await runCommand("bash", ["scripts/build-envd.sh"], { timeoutMs: 120_000 }).catch((err: unknown) => {
        throw new Error(`building build/opt-wrenn failed: ${String(err)}`);
      });
    }
    workDir = await mkdtemp(path.join(tmpdir(), "wrenn-gvisor-test-"));
    cleanup.defer(`remove ${workDir}`, () => rm(workDir, { recursive: true, force: true }));
    const templateDir = path.join(workDir, "template");
    await buildBusyboxTemplate(templateDir);
    runtime = new GvisorRuntime({ stateDir: path.join(workDir, "runsc"), envdDir, pidsLimit: limits.pidsLimit });
    ({ network, baseUrl } = await cleanup.undoOnFailure(() =>
      startSandbox(runtime, sandboxId, { workDir, templateDir, cleanup, vcpus: limits.vcpus, memoryMb: limits.memoryMb }),
    ));
    client = createClient(Process, createConnectTransport({ baseUrl, httpVersion: "1.1" }));
  });

  after(async () => {
    await cleanup.run();
  });

  test("runs a command and returns its output and exit code", async () => {
    assert.deepEqual(await run(client, "/bin/busybox", ["echo", "hi"]), { stdout: "hi\n", stderr: "", exitCode: 0 });
  });

  test("runs a command as the user the Basic auth header names", async () => {
    const result = await run(client, "id", ["-u"], "user");
    assert.equal(result.stdout, "1000\n", result.stderr);
    assert.equal(result.exitCode, 0);
  });

  test("a PTY process sees the terminal size it was started with", async () => {
    const abort = new AbortController();
    const stream = client.start(
      { process: { cmd: "/bin/sh", args: [], envs: {} }, pty: { size: { cols: 80, rows: 24 } } },
      { headers: basicAuth("root"), signal: abort.signal },
    );
    let output = "";
    let pid: number | undefined;
    try {
      for await (const { event } of stream) {
        if (event?.event.case === "start") {
          pid = event.event.value.pid;
          await client.sendInput({ process: { selector: { case: "pid", value: pid } }, input: { input: { case: "pty", value: Buffer.from("stty size\n") } } });
        }
        if (event?.event.case === "data" && event.event.value.output.case === "pty") {
          output += Buffer.from(event.event.value.output.value).toString();
          if (/24 80/.test(output)) break;
        }
        if (event?.event.case === "end") break;
      }
    } finally {
      if (pid !== undefined) {
        await client.sendSignal({ process: { selector: { case: "pid", value: pid } }, signal: 9 }).catch(() => undefined);
      }
      abort.abort();
    }
    assert.match(output, /24 80/);
  });

  test("files go up and come back down through /files", async () => {
    const target = "/home/user/hello.txt";
    const up = await fetch(`${baseUrl}/files?${new URLSearchParams({ path: target, username: "user" })}`, {
      method: "POST",
      headers: { "content-type": "application/octet-stream" },
      body: "hello from the host\n",
    });
    assert.equal(up.status, 200, await up.text());
    const down = await fetch(`${baseUrl}/files?${new URLSearchParams({ path: target, username: "user" })}`);
    assert.equal(down.status, 200);
    assert.equal(await down.text(), "hello from the host\n");
    const owner = await run(client, "stat", ["-c", "%u", target]);
    assert.equal(owner.stdout, "1000\n");
  });

  test("a process inside sees only the sandbox's own processes", async () => {
    const listing = await run(client, "ls", ["/proc"]);
    const pids = listing.stdout.split(/\s+/).filter((name) => /^\d+$/.test(name)).map(Number);
    assert.ok(pids.length > 0 && pids.length < 10, `pids inside: ${pids.join(" ")}`);
    assert.ok(pids.includes(1));
    const ps = await run(client, "ps", ["-o", "pid,comm"]);
    assert.doesNotMatch(ps.stdout, /runsc|systemd|sshd/, ps.stdout);
    const status = await run(client, "cat", ["/proc/2/status"]);
    const rss = /VmRSS:\s+(\d+ kB)/.exec(status.stdout)?.[1];
    console.log(`envd (pid 2 inside) VmRSS as gVisor reports it: ${rss ?? "not reported"}`);
    const hostRss = await sandboxHostRssKiB(path.join(workDir, "runsc"));
    console.log(`host RSS of the sandbox's runsc processes (sentry + gofer): ${Math.round(hostRss / 1024)} MiB`);
  });

  test("the cpu, memory and pids limits land in the host cgroup, and the memory limit is the MemTotal inside", async () => {
    const cgroupFile = async (file: string) => (await readFile(`/sys/fs/cgroup/${file}`, "utf8")).trim();
    const v1 = existsSync("/sys/fs/cgroup/memory");
    if (v1) {
      assert.equal(await cgroupFile(`cpu/wrenn/${sandboxId}/cpu.cfs_quota_us`), "150000");
      assert.equal(await cgroupFile(`cpu/wrenn/${sandboxId}/cpu.cfs_period_us`), "100000");
      assert.equal(await cgroupFile(`memory/wrenn/${sandboxId}/memory.limit_in_bytes`), String(limits.memoryMb * 1024 * 1024));
      assert.equal(await cgroupFile(`pids/wrenn/${sandboxId}/pids.max`), String(limits.pidsLimit));
    } else {
      assert.equal(await cgroupFile(`wrenn/${sandboxId}/cpu.max`), "150000 100000");
      assert.equal(await cgroupFile(`wrenn/${sandboxId}/memory.max`), String(limits.memoryMb * 1024 * 1024));
      assert.equal(await cgroupFile(`wrenn/${sandboxId}/pids.max`), String(limits.pidsLimit));
    }
    const meminfo = await run(client, "cat", ["/proc/meminfo"]);
    assert.match(meminfo.stdout, new RegExp(`^MemTotal:\\s+${limits.memoryMb * 1024} kB$`, "m"), meminfo.stdout);
  });

  test("a paused sandbox does not answer, and answers again once resumed", async () => {
    let started = performance.now();
    await runtime.pause(sandboxId);
    console.log(`runsc pause: ${Math.round(performance.now() - started)} ms`);
    assert.equal((await runtime.list()).find((c) => c.id === sandboxId)?.status, "paused");
    assert.equal(await health(baseUrl, 500), undefined, "a paused sandbox answered /health");
    started = performance.now();
    await runtime.resume(sandboxId);
    const resumed = performance.now();
    assert.equal(await health(baseUrl, 10_000), 204);
    console.log(`runsc resume: ${Math.round(resumed - started)} ms; /health 204 ${Math.round(performance.now() - started)} ms after resume began`);
  });

  test("destroying a paused sandbox leaves no netns, veth, mount, container, cgroup or process behind", async () => {
    await runtime.pause(sandboxId);
    const hostPids = await sandboxHostPids(sandboxId);
    assert.ok(hostPids.length >= 2, `sentry and gofer in the cgroup: ${hostPids.join(" ")}`);
    const started = performance.now();
    await cleanup.run();
    console.log(`destroy (stop, unmount, netns, remove dir) of a paused sandbox: ${Math.round(performance.now() - started)} ms`);
    assert.ok(!(await listNamespaces()).includes(network.namespace), "netns left behind");
    assert.ok(!(await linkExists(network.hostInterface)), "veth left behind");
    assert.deepEqual(await mountsUnder(workDir), []);
    assert.ok(!existsSync(workDir), "work dir left behind");
    await assertStopLeftNothing(runtime, sandboxId, path.join(workDir, "runsc"), hostPids);
  });

  test("stopping a sandbox that is already stopped is a no-op", async () => {
    await runtime.stop(sandboxId);
    assert.deepEqual(await runtime.list(), []);
  });
});

describe("stopping a gVisor sandbox", { skip }, () => {
  let workDir: string;
  let templateDir: string;
  let runtime: GvisorRuntime;
  let stateDir: string;

  before(async () => {
    workDir = await mkdtemp(path.join(tmpdir(), "wrenn-gvisor-stop-test-"));
    templateDir = path.join(workDir, "template");
    await buildBusyboxTemplate(templateDir);
    stateDir = path.join(workDir, "runsc");
    runtime = new GvisorRuntime({ stateDir, envdDir });
  });

  after(async () => {
    await rm(workDir, { recursive: true, force: true });
  });

  /** Boots a sandbox of its own for one test; the cleanup stops it and takes its network and rootfs. */
  async function withSandbox(name: string, check: (sandboxId: string) => Promise<void>): Promise<void> {
    const sandboxId = `ws${process.pid}${name}`;
    const cleanup = new Cleanup();
    try {
      await cleanup.undoOnFailure(() => startSandbox(runtime, sandboxId, { workDir: path.join(workDir, name), templateDir, cleanup }));
      await check(sandboxId);
    } finally {
      await cleanup.run();
    }
  }

  test("stopping a running sandbox kills all its host processes and removes its cgroup and runsc state", async () => {
    await withSandbox("run", async (sandboxId) => {
      const hostPids = await sandboxHostPids(sandboxId);
      const started = performance.now();
      await runtime.stop(sandboxId);
      console.log(`stop of a running sandbox: ${Math.round(performance.now() - started)} ms`);
      await assertStopLeftNothing(runtime, sandboxId, stateDir, hostPids);
    });
  });

  test("stopping a paused sandbox whose sentry already died (as after an OOM kill) removes what is left", async () => {
    await withSandbox("dead", async (sandboxId) => {
      await runtime.pause(sandboxId);
      const hostPids = await sandboxHostPids(sandboxId);
      const sentry = (await runtime.containers()).find((c) => c.id === containerId(sandboxId));
      assert.ok(sentry && sentry.pid > 0, "runsc reports the sandbox's pid");
      process.kill(sentry.pid, "SIGKILL");
      await runtime.stop(sandboxId);
      await assertStopLeftNothing(runtime, sandboxId, stateDir, hostPids);
      await runtime.stop(sandboxId);
    });
  });
});

/** Boots `sandboxId` over the template with its own netns and overlay rootfs, and waits for envd's /health. */
async function startSandbox(
  runtime: GvisorRuntime,
  sandboxId: string,
  options: { workDir: string; templateDir: string; cleanup: Cleanup; vcpus?: number; memoryMb?: number },
): Promise<{ network: SandboxNetwork; baseUrl: string }> {
  const { workDir, templateDir, cleanup } = options;
  const network = await createNetwork(sandboxId, await freeSlot(), testPool, cleanup);
  const sandboxDir = path.join(workDir, "sandbox");
  await mkdir(sandboxDir, { recursive: true });
  const rootfs = await mountRootfs([templateDir], sandboxDir, path.join(sandboxDir, "rootfs"), cleanup);
  const baseUrl = `http://${network.sandboxAddress}:${ENVD_PORT}`;
  const started = performance.now();
  const boot = { sandboxId, sandboxDir, rootfs: { kind: "directory" as const, path: rootfs.dir }, netnsPath: network.namespacePath, sandboxAddress: network.sandboxAddress };
  await runtime.boot({ ...boot, vcpus: options.vcpus ?? DEFAULT_LIMITS.vcpus, memoryMb: options.memoryMb ?? DEFAULT_LIMITS.memoryMb }, cleanup);
  const runDone = performance.now();
  while ((await health(baseUrl, 500)) !== 204) {
    if (performance.now() - started > 60_000) {
      const consoleLog = await readFile(path.join(sandboxDir, "bundle", "console.log"), "utf8").catch(() => "");
      throw new Error(`envd did not answer /health within 60 s; console:\n${consoleLog}`);
    }
    await sleep(10);
  }
  const healthy = performance.now();
  console.log(`runsc run returned after ${Math.round(runDone - started)} ms; envd healthy ${Math.round(healthy - started)} ms after runsc run began`);
  return { network, baseUrl };
}

/** Every host process of the sandbox (sentry, gofer, ptrace stubs): what its cgroup holds. */
async function sandboxHostPids(sandboxId: string): Promise<number[]> {
  const v2 = existsSync("/sys/fs/cgroup/cgroup.controllers");
  const procs = await readFile(v2 ? `/sys/fs/cgroup/wrenn/${sandboxId}/cgroup.procs` : `/sys/fs/cgroup/pids/wrenn/${sandboxId}/cgroup.procs`, "utf8");
  return procs.split("\n").filter(Boolean).map(Number);
}

/**
 * No live host process of the sandbox (one may linger as a zombie until its parent, PID 1,
 * reaps it: it holds nothing but its pid), no cgroup in any hierarchy, no runsc container or state file.
 */
async function assertStopLeftNothing(runtime: GvisorRuntime, sandboxId: string, stateDir: string, hostPids: number[]): Promise<void> {
  for (const pid of hostPids) {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => undefined);
    const state = stat?.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    assert.ok(state === undefined || state === "Z", `host process ${pid} of the sandbox is still alive (state ${state})`);
  }
  const processes = await runCommand("ps", ["-eo", "args"], { timeoutMs: 5000 });
  assert.doesNotMatch(processes, new RegExp(`--root=${stateDir}\\b`), "a runsc process outlived the sandbox");
  const hierarchies = ["", ...(await readdir("/sys/fs/cgroup"))];
  for (const hierarchy of hierarchies) {
    const dir = path.join("/sys/fs/cgroup", hierarchy, "wrenn", sandboxId);
    assert.ok(!existsSync(dir), `cgroup ${dir} left behind`);
  }
  assert.ok(!(await runtime.list()).some((c) => c.id === sandboxId), "runsc still lists the container");
  const stateFiles = (await readdir(stateDir).catch(() => [])).filter((name) => name.includes(containerId(sandboxId)));
  assert.deepEqual(stateFiles, [], "runsc state files left behind");
}

/** RSS of the host processes serving this sandbox: runsc's sandbox and gofer (both carry its --root) and their children. */
async function sandboxHostRssKiB(stateDir: string): Promise<number> {
  const table = await runCommand("ps", ["-eo", "pid=,ppid=,rss=,args="], { timeoutMs: 5000 });
  const rows = table.trim().split("\n").map((line) => {
    const [pid, ppid, rss, ...args] = line.trim().split(/\s+/);
    return { pid: Number(pid), ppid: Number(ppid), rss: Number(rss), args: args.join(" ") };
  });
  const family = new Set(rows.filter((row) => row.args.includes(`--root=${stateDir}`)).map((row) => row.pid));
  for (let grew = true; grew; ) {
    grew = false;
    for (const row of rows) if (family.has(row.ppid) && !family.has(row.pid)) (family.add(row.pid), (grew = true));
  }
  return rows.filter((row) => family.has(row.pid)).reduce((sum, row) => sum + row.rss, 0);
}
