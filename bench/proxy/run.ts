// Benchmarks the edge proxy (issue 5) against the same calls made straight to envd from the host,
// side by side in one run, with the unmodified e2b SDK on both paths:
// - `commands.run("true")` round trips: SDK → control plane's edge proxy → host's port proxy →
//   envd, vs SDK → envd at the sandbox's address (the SDK's `sandboxUrl` pointed at it), 200 each,
//   interleaved so the machine's drift hits both alike (goal: proxy overhead ≤ 2 ms at p50).
//   The same for a unary envd call (files.getInfo: a Stat), the proxy's cost without a process start.
// - `files.write` / `files.read` of 256 MiB through the proxy vs directly (goal: within 1.5×), and
//   `cp` of the same file on the host as the floor of moving those bytes here at all.
// Usage: `make bench-proxy`, or `node --import tsx bench/proxy/run.ts [--runs 200] [--mib 256] [--file-runs 3]`.
import { randomBytes } from "node:crypto";
import { execFileSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { Sandbox, type SandboxOpts } from "e2b";
import { PLATFORM_TEAM_ID } from "../../packages/control-plane/src/db/schema.js";
import { TemplateStore } from "../../packages/host-agent/src/sandbox/storage/templates.js";
import { newDataDir, removeDataDir, startAgentProcess, type AgentUnderTest } from "../../packages/host-agent/test/agent-harness.js";
import { buildBashTemplate } from "../../packages/host-agent/test/template.js";
import { startControlPlane, stopControlPlane, summary, type ControlPlaneUnderBench } from "../stack.js";

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

/** The same call through the proxy and straight to envd, RUNS times each, alternating (after 10 of each to warm up). */
async function sideBySide(label: string, proxied: () => Promise<unknown>, direct: () => Promise<unknown>) {
  for (let i = 0; i < 10; i++) {
    await proxied();
    await direct();
  }
  const viaProxy: number[] = [];
  const straight: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    // Which goes first alternates, so neither side always follows the other's wake-ups.
    if (i % 2 === 0) {
      viaProxy.push(await timed(proxied));
      straight.push(await timed(direct));
    } else {
      straight.push(await timed(direct));
      viaProxy.push(await timed(proxied));
    }
  }
  const proxy = summary(viaProxy);
  const directStats = summary(straight);
  const overheadMs = { p50: +(proxy.p50 - directStats.p50).toFixed(2), p95: +(proxy.p95 - directStats.p95).toFixed(2) };
  // Each pair's own difference: a call that starts a process in gVisor varies by tens of ms from
  // one call to the next, so the difference of two p50s moves by several ms from run to run;
  // the distribution of per-pair differences is the proxy's own cost, call by call.
  const paired = summary(viaProxy.map((took, i) => took - straight[i]!));
  const pairedOverheadMs = { p50: +paired.p50.toFixed(2), p95: +paired.p95.toFixed(2) };
  console.log(`${label} direct to envd: p50 ${ms(directStats.p50)}, p95 ${ms(directStats.p95)}; via the edge proxy: p50 ${ms(proxy.p50)}, p95 ${ms(proxy.p95)} (n=${RUNS})`);
  console.log(`${label} proxy overhead: p50s' difference ${ms(overheadMs.p50)}, p95s' ${ms(overheadMs.p95)}; per pair: p50 ${ms(pairedOverheadMs.p50)}, p95 ${ms(pairedOverheadMs.p95)}`);
  return { proxy, direct: directStats, overheadMs, pairedOverheadMs };
}

async function main(): Promise<void> {
  const report: Record<string, unknown> = {};
  let agent: AgentUnderTest | undefined;
  let stack: ControlPlaneUnderBench | undefined;
  let sandbox: Sandbox | undefined;
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

    // Round trips, warmed, then alternating: a command, and (the proxy's own cost, free of a
    // process start in gVisor, ~100-300 ms here and noisy) a unary envd call, a filesystem Stat.
    const runCommand = await sideBySide('commands.run("true")', () => sandbox!.commands.run("true"), () => direct.commands.run("true"));
    report.commandsRunTrue = { ...runCommand, ratioP50: +(runCommand.proxy.p50 / runCommand.direct.p50).toFixed(3) };
    console.log(`  (goal: overhead ≤ ${GOALS.overheadP50Ms} ms at p50)`);
    report.filesGetInfo = await sideBySide('files.getInfo("/")', () => sandbox!.files.getInfo("/"), () => direct.files.getInfo("/"));

    // Files: the same bytes up and down both ways, and cp on the host as the floor. In the home
    // directory (the sandbox's disk): /tmp is a tmpfs in gVisor, counted against its memory.
    const bytes = randomBytes(MIB * 1024 * 1024);
    // What the SDK takes: an ArrayBuffer of exactly these bytes.
    const payload = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
    const source = path.join(scratch, "payload");
    await writeFile(source, bytes);
    const samples = { cp: [] as number[], proxyUp: [] as number[], directUp: [] as number[], proxyDown: [] as number[], directDown: [] as number[] };
    const check = (read: Uint8Array, how: string) => {
      if (read.byteLength !== bytes.byteLength || !Buffer.from(read.buffer, read.byteOffset, read.byteLength).equals(bytes)) throw new Error(`${how}: the file read back differs`);
    };
    for (let i = 0; i < FILE_RUNS; i++) {
      samples.cp.push(await timed(async () => execFileSync("cp", [source, path.join(scratch, "copy")])));
      await rm(path.join(scratch, "copy"));
      samples.proxyUp.push(await timed(() => sandbox!.files.write("/home/user/payload-proxy", payload)));
      samples.directUp.push(await timed(() => direct.files.write("/home/user/payload-direct", payload)));
      let read: Uint8Array | undefined;
      samples.proxyDown.push(await timed(async () => (read = await sandbox!.files.read("/home/user/payload-direct", { format: "bytes" }))));
      check(read!, "via the proxy");
      samples.directDown.push(await timed(async () => (read = await direct.files.read("/home/user/payload-proxy", { format: "bytes" }))));
      check(read!, "directly");
      await sandbox.commands.run("rm -f /home/user/payload-proxy /home/user/payload-direct");
    }
    const size = bytes.byteLength;
    const rate = (list: number[]) => mibPerSec(size, summary(list).p50);
    const files = {
      mib: MIB,
      cpMiBps: rate(samples.cp),
      upload: { proxyMiBps: rate(samples.proxyUp), directMiBps: rate(samples.directUp), ratio: +(summary(samples.proxyUp).p50 / summary(samples.directUp).p50).toFixed(3) },
      download: { proxyMiBps: rate(samples.proxyDown), directMiBps: rate(samples.directDown), ratio: +(summary(samples.proxyDown).p50 / summary(samples.directDown).p50).toFixed(3) },
    };
    report.files = files;
    console.log(`cp of ${MIB} MiB on the host (floor): ${files.cpMiBps} MiB/s`);
    console.log(`files.write ${MIB} MiB: direct ${files.upload.directMiBps} MiB/s, via proxy ${files.upload.proxyMiBps} MiB/s → proxy takes ${files.upload.ratio}× as long (goal ≤ ${GOALS.throughputRatio}×)`);
    console.log(`files.read  ${MIB} MiB: direct ${files.download.directMiBps} MiB/s, via proxy ${files.download.proxyMiBps} MiB/s → proxy takes ${files.download.ratio}× as long (goal ≤ ${GOALS.throughputRatio}×)`);
  } finally {
    await sandbox?.kill().catch(() => undefined);
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
