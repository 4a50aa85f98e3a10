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

    // Round trips: warm both, then alternate.
    for (let i = 0; i < 10; i++) {
      await sandbox.commands.run("true");
      await direct.commands.run("true");
    }
    const proxied: number[] = [];
    const straight: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      proxied.push(await timed(() => sandbox!.commands.run("true")));
      straight.push(await timed(() => direct.commands.run("true")));
    }
    const proxiedStats = summary(proxied);
    const directStats = summary(straight);
    const overhead = { p50: +(proxiedStats.p50 - directStats.p50).toFixed(2), p95: +(proxiedStats.p95 - directStats.p95).toFixed(2) };
    report.commandsRunTrue = { proxy: proxiedStats, direct: directStats, overheadMs: overhead, ratioP50: +(proxiedStats.p50 / directStats.p50).toFixed(3) };
    console.log(`commands.run("true") direct to envd:   p50 ${ms(directStats.p50)}, p95 ${ms(directStats.p95)} (n=${RUNS})`);
    console.log(`commands.run("true") via edge proxy:  p50 ${ms(proxiedStats.p50)}, p95 ${ms(proxiedStats.p95)} (n=${RUNS})`);
    console.log(`proxy overhead: p50 ${ms(overhead.p50)}, p95 ${ms(overhead.p95)} (goal ≤ ${GOALS.overheadP50Ms} ms at p50)`);

    // The proxy's own cost, free of a process start in gVisor (~100-300 ms here, noisy): a unary
    // envd call (filesystem Stat), the same way.
    const statProxied: number[] = [];
    const statDirect: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      statProxied.push(await timed(() => sandbox!.files.getInfo("/")));
      statDirect.push(await timed(() => direct.files.getInfo("/")));
    }
    const statProxiedStats = summary(statProxied);
    const statDirectStats = summary(statDirect);
    const statOverhead = { p50: +(statProxiedStats.p50 - statDirectStats.p50).toFixed(2), p95: +(statProxiedStats.p95 - statDirectStats.p95).toFixed(2) };
    report.filesGetInfo = { proxy: statProxiedStats, direct: statDirectStats, overheadMs: statOverhead };
    console.log(`files.getInfo("/") direct: p50 ${ms(statDirectStats.p50)}, via proxy: p50 ${ms(statProxiedStats.p50)}; overhead p50 ${ms(statOverhead.p50)}, p95 ${ms(statOverhead.p95)}`);

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
