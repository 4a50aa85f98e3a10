// Benchmarks the edge proxy (issue 5) against the same calls made straight to envd from the host,
// side by side in one run, with the unmodified e2b SDK on both paths:
// - `commands.run("true")` round trips: SDK → control plane's edge proxy → envd, vs SDK → envd at
//   the sandbox's address (the SDK's `sandboxUrl` pointed at it), vs SDK → a bare Node relay →
//   envd (bare-relay.ts: the floor of any process in the path on this machine), 200 each,
//   interleaved so the machine's drift hits all alike (goal: proxy overhead ≤ 2 ms at p50).
//   The same for a unary envd call (files.getInfo: a Stat), the proxy's cost without a process start.
// - `files.write` / `files.read` of 256 MiB through the proxy vs directly (goal: within 1.5×), the
//   bare relay's ratio beside it, and `cp` of the same file on the host as the floor of moving
//   those bytes here at all.
// Usage: `make bench-proxy`, or `node --import tsx bench/proxy/run.ts [--runs 200] [--mib 256] [--file-runs 3]`.
import { randomBytes } from "node:crypto";
import { execFileSync, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { Sandbox, type SandboxOpts } from "e2b";
import { PLATFORM_TEAM_ID } from "../../packages/control-plane/src/db/schema.js";
import { TemplateStore } from "../../packages/host-agent/src/sandbox/storage/templates.js";
import { newDataDir, removeDataDir, startAgentProcess, type AgentUnderTest } from "../../packages/host-agent/test/agent-harness.js";
import { buildBashTemplate } from "../../packages/host-agent/test/template.js";
import { startControlPlane, startServer, stop, stopControlPlane, summary, type ControlPlaneUnderBench } from "../stack.js";
import { cpuMsOf } from "../proc.js";

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "200" },
    mib: { type: "string", default: "256" },
    "file-runs": { type: "string", default: "3" },
  },
});
const RUNS = Number(values.runs);
const MIB = Number(values.mib);
const FILE_RUNS = Number(values["file-runs"]);
const GOALS = { overheadP50Ms: 2, throughputRatio: 1.5 };
const POOL = "10.243.2.0/24";
const TABLE = `wrenn_bpx${process.pid}`;
/** The e2b SDK runs every command in bash: the tests' busybox template with bash-static. */
const TEMPLATE = "busybox-bash";
const ENVD_PORT = 49983;

const ms = (value: number) => `${value.toFixed(2)} ms`;
const mibPerSec = (bytes: number, elapsedMs: number) => +((bytes / 1024 / 1024) / (elapsedMs / 1000)).toFixed(1);

async function timed(action: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await action();
  return performance.now() - started;
}

interface Paths {
  /** SDK → the control plane's edge proxy → envd. */
  proxy: () => Promise<unknown>;
  /** SDK → a bare Node relay (bare-relay.ts) → envd: the floor of any process in the path. */
  relay: () => Promise<unknown>;
  /** SDK → envd at the sandbox's address. */
  direct: () => Promise<unknown>;
}

/**
 * The same call by the three paths, RUNS times each, in turns (after 10 of each to warm up); the
 * order within a turn rotates so that no path always follows another's wake-ups. Also the CPU
 * the edge proxy and the bare relay spent per call.
 */
async function sideBySide(label: string, paths: Paths, processes: { controlPlane: number; relay: number }) {
  for (let i = 0; i < 10; i++) for (const call of Object.values(paths)) await call();
  const took = { proxy: [] as number[], relay: [] as number[], direct: [] as number[] };
  const order = ["proxy", "relay", "direct"] as const;
  // The control plane's CPU time is read around every call: what it spends while the other two
  // paths run (heartbeats, the reconciler, metrics — more while the sandbox is busy) is its
  // background rate, and what it spends during proxied calls beyond that rate is the proxy's.
  const controlPlane = { proxyMs: 0, proxyElapsedMs: 0, otherMs: 0, otherElapsedMs: 0 };
  const relayBefore = cpuMsOf(processes.relay);
  for (let i = 0; i < RUNS; i++) {
    for (let k = 0; k < order.length; k++) {
      const path = order[(i + k) % order.length]!;
      const cpuBefore = cpuMsOf(processes.controlPlane);
      const elapsed = await timed(paths[path]);
      took[path].push(elapsed);
      const spent = cpuMsOf(processes.controlPlane) - cpuBefore;
      if (path === "proxy") {
        controlPlane.proxyMs += spent;
        controlPlane.proxyElapsedMs += elapsed;
      } else {
        controlPlane.otherMs += spent;
        controlPlane.otherElapsedMs += elapsed;
      }
    }
  }
  const backgroundPerMs = controlPlane.otherMs / controlPlane.otherElapsedMs;
  const cpuPerCallMs = {
    controlPlane: +((controlPlane.proxyMs - backgroundPerMs * controlPlane.proxyElapsedMs) / RUNS).toFixed(2),
    controlPlaneBackgroundMsPerS: +(backgroundPerMs * 1000).toFixed(1),
    relay: +((cpuMsOf(processes.relay) - relayBefore) / RUNS).toFixed(2),
  };
  const stats = { proxy: summary(took.proxy), relay: summary(took.relay), direct: summary(took.direct) };
  // Each turn's own difference: a call that starts a process in gVisor varies by tens of ms from
  // one call to the next, so the difference of two p50s moves by several ms from run to run;
  // the distribution of per-turn differences is a hop's own cost, call by call.
  const against = (path: "proxy" | "relay") => {
    const paired = summary(took[path].map((elapsed, i) => elapsed - took.direct[i]!));
    return { p50: +(stats[path].p50 - stats.direct.p50).toFixed(2), perPairP50: +paired.p50.toFixed(2), perPairP95: +paired.p95.toFixed(2) };
  };
  const overheadMs = against("proxy");
  const relayOverheadMs = against("relay");
  console.log(`${label} p50 / p95: direct to envd ${ms(stats.direct.p50)} / ${ms(stats.direct.p95)}; via the edge proxy ${ms(stats.proxy.p50)} / ${ms(stats.proxy.p95)}; via a bare relay ${ms(stats.relay.p50)} / ${ms(stats.relay.p95)} (n=${RUNS})`);
  console.log(`${label} edge proxy overhead: p50s' difference ${ms(overheadMs.p50)}; per pair p50 ${ms(overheadMs.perPairP50)}, p95 ${ms(overheadMs.perPairP95)}`);
  console.log(`${label} bare relay overhead (floor): p50s' difference ${ms(relayOverheadMs.p50)}; per pair p50 ${ms(relayOverheadMs.perPairP50)}, p95 ${ms(relayOverheadMs.perPairP95)}`);
  console.log(`${label} CPU per call: edge proxy ${cpuPerCallMs.controlPlane} ms (the control plane's, less its background ${cpuPerCallMs.controlPlaneBackgroundMsPerS} ms/s), bare relay ${cpuPerCallMs.relay} ms`);
  return { proxy: stats.proxy, relay: stats.relay, direct: stats.direct, overheadMs, relayOverheadMs, cpuPerCallMs };
}

async function main(): Promise<void> {
  const report: Record<string, unknown> = {};
  let agent: AgentUnderTest | undefined;
  let stack: ControlPlaneUnderBench | undefined;
  let sandbox: Sandbox | undefined;
  let relay: ChildProcess | undefined;
  const scratch = await mkdtemp(path.join(tmpdir(), "wrenn-bench-proxy-"));
  try {
    const dataDir = await newDataDir();
    await new TemplateStore(`${dataDir}/templates`).createFrom(TEMPLATE, { teamId: PLATFORM_TEAM_ID, kind: "base", metadata: {} }, buildBashTemplate);
    agent = await startAgentProcess({ pool: POOL, table: TABLE, dataDir, args: ["--metrics-interval-ms", "5000", "--reaper-interval-ms", "1000"] });
    stack = await startControlPlane(agent);
    const viaProxy: SandboxOpts = { apiUrl: stack.api.url, sandboxUrl: stack.api.url, apiKey: stack.api.key, requestTimeoutMs: 600_000 };
    sandbox = await Sandbox.create(TEMPLATE, { ...viaProxy, timeoutMs: 3_600_000 });
    const hostIp = (await agent.client.listSandboxes({})).sandboxes.find((s) => s.sandboxId === sandbox!.sandboxId)?.hostIp;
    if (!hostIp) throw new Error("the agent does not list the benchmark's sandbox");
    // The same sandbox, the SDK pointed straight at envd on the sandbox's address (the host reaches it).
    const direct = await Sandbox.connect(sandbox.sandboxId, { ...viaProxy, sandboxUrl: `http://${hostIp}:${ENVD_PORT}` });
    // And through the least a process in the path can do, the floor for the proxy's overhead.
    const started = await startServer(["--import", "tsx", path.join(import.meta.dirname, "bare-relay.ts"), hostIp], {}, /^relay (\d+)$/);
    relay = started.child;
    const relayed = await Sandbox.connect(sandbox.sandboxId, { ...viaProxy, sandboxUrl: `http://127.0.0.1:${started.matches[0]![1]}` });
    const processes = { controlPlane: stack.child.pid!, relay: relay.pid! };

    // Round trips, warmed, then alternating: a command, and (the proxy's own cost, free of a
    // process start in gVisor, ~100-300 ms here and noisy) a unary envd call, a filesystem Stat.
    const runCommand = await sideBySide('commands.run("true")', { proxy: () => sandbox!.commands.run("true"), relay: () => relayed.commands.run("true"), direct: () => direct.commands.run("true") }, processes);
    report.commandsRunTrue = { ...runCommand, ratioP50: +(runCommand.proxy.p50 / runCommand.direct.p50).toFixed(3) };
    console.log(`  (goal: overhead ≤ ${GOALS.overheadP50Ms} ms at p50)`);
    report.filesGetInfo = await sideBySide('files.getInfo("/")', { proxy: () => sandbox!.files.getInfo("/"), relay: () => relayed.files.getInfo("/"), direct: () => direct.files.getInfo("/") }, processes);

    // Files: the same bytes up and down both ways, and cp on the host as the floor. In the home
    // directory (the sandbox's disk): /tmp is a tmpfs in gVisor, counted against its memory.
    const bytes = randomBytes(MIB * 1024 * 1024);
    // What the SDK takes: an ArrayBuffer of exactly these bytes.
    const payload = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
    const source = path.join(scratch, "payload");
    await writeFile(source, bytes);
    const samples = { cp: [] as number[], proxyUp: [] as number[], directUp: [] as number[], relayUp: [] as number[], proxyDown: [] as number[], directDown: [] as number[], relayDown: [] as number[] };
    // CPU of the process in the path per transfer: the control plane's on the proxy's (its
    // background, a few ms/s, included), the relay's on the relay's.
    const cpu = { proxyUp: [] as number[], relayUp: [] as number[], proxyDown: [] as number[], relayDown: [] as number[] };
    /** Times `action` into `list`; with `pid`, the CPU that process spent meanwhile into `cpuList`. */
    const transferred = async (action: () => Promise<unknown>, list: number[], pid?: number, cpuList?: number[]) => {
      const before = pid === undefined ? 0 : cpuMsOf(pid);
      list.push(await timed(action));
      if (pid !== undefined) cpuList?.push(cpuMsOf(pid) - before);
    };
    const check = (read: Uint8Array, how: string) => {
      if (read.byteLength !== bytes.byteLength || !Buffer.from(read.buffer, read.byteOffset, read.byteLength).equals(bytes)) throw new Error(`${how}: the file read back differs`);
    };
    for (let i = 0; i < FILE_RUNS; i++) {
      samples.cp.push(await timed(async () => execFileSync("cp", [source, path.join(scratch, "copy")])));
      await rm(path.join(scratch, "copy"));
      // Each path goes first in turn (the first transfer after the writes met the host still
      // flushing them), and the host's dirty pages are written out before each transfer.
      const handles = [
        { name: "proxy", sdk: sandbox, pid: processes.controlPlane, up: samples.proxyUp, down: samples.proxyDown, upCpu: cpu.proxyUp, downCpu: cpu.proxyDown },
        { name: "direct", sdk: direct, pid: undefined, up: samples.directUp, down: samples.directDown, upCpu: undefined, downCpu: undefined },
        { name: "relay", sdk: relayed, pid: processes.relay, up: samples.relayUp, down: samples.relayDown, upCpu: cpu.relayUp, downCpu: cpu.relayDown },
      ] as const;
      const turn = [0, 1, 2].map((k) => handles[(i + k) % handles.length]!);
      for (const { name, sdk, pid, up, upCpu } of turn) {
        execFileSync("sync");
        await transferred(() => sdk.files.write(`/home/user/payload-${name}`, payload), up, pid, upCpu);
      }
      for (const [k, { name, sdk, pid, down, downCpu }] of turn.entries()) {
        // Each reads a file another path wrote.
        const written = turn[(k + 1) % turn.length]!.name;
        execFileSync("sync");
        let read: Uint8Array | undefined;
        await transferred(async () => (read = await sdk.files.read(`/home/user/payload-${written}`, { format: "bytes" })), down, pid, downCpu);
        check(read!, `read by ${name}`);
      }
      await sandbox.commands.run("rm -f /home/user/payload-proxy /home/user/payload-direct /home/user/payload-relay");
    }
    const size = bytes.byteLength;
    const rate = (list: number[]) => mibPerSec(size, summary(list).p50);
    const transfer = (proxy: number[], direct: number[], relay: number[], proxyCpu: number[], relayCpu: number[]) => ({
      proxyMiBps: rate(proxy),
      directMiBps: rate(direct),
      relayMiBps: rate(relay),
      ratio: +(summary(proxy).p50 / summary(direct).p50).toFixed(3),
      relayRatio: +(summary(relay).p50 / summary(direct).p50).toFixed(3),
      cpuMs: { proxy: Math.round(summary(proxyCpu).p50), relay: Math.round(summary(relayCpu).p50) },
    });
    const files = {
      mib: MIB,
      cpMiBps: rate(samples.cp),
      upload: transfer(samples.proxyUp, samples.directUp, samples.relayUp, cpu.proxyUp, cpu.relayUp),
      download: transfer(samples.proxyDown, samples.directDown, samples.relayDown, cpu.proxyDown, cpu.relayDown),
    };
    report.files = files;
    console.log(`cp of ${MIB} MiB on the host (floor): ${files.cpMiBps} MiB/s`);
    console.log(`files.write ${MIB} MiB: direct ${files.upload.directMiBps} MiB/s, via proxy ${files.upload.proxyMiBps} MiB/s → proxy takes ${files.upload.ratio}× as long (goal ≤ ${GOALS.throughputRatio}×); bare relay ${files.upload.relayMiBps} MiB/s, ${files.upload.relayRatio}×; CPU per transfer (p50): edge proxy ${files.upload.cpuMs.proxy} ms, bare relay ${files.upload.cpuMs.relay} ms`);
    console.log(`files.read  ${MIB} MiB: direct ${files.download.directMiBps} MiB/s, via proxy ${files.download.proxyMiBps} MiB/s → proxy takes ${files.download.ratio}× as long (goal ≤ ${GOALS.throughputRatio}×); bare relay ${files.download.relayMiBps} MiB/s, ${files.download.relayRatio}×; CPU per transfer (p50): edge proxy ${files.download.cpuMs.proxy} ms, bare relay ${files.download.cpuMs.relay} ms`);
  } finally {
    await sandbox?.kill().catch(() => undefined);
    await stop(relay);
    await stopControlPlane(stack);
    if (agent) {
      await agent.client.terminate({}).catch(() => undefined);
      await new Promise<void>((resolve) => (agent!.child.exitCode !== null ? resolve() : agent!.child.once("exit", () => resolve())));
      await removeDataDir(agent.dataDir, agent.table);
    }
    await rm(scratch, { recursive: true, force: true });
  }
  console.log(JSON.stringify(report));
}

await main();
