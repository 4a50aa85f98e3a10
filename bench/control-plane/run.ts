// Benchmarks the control plane against floors measured in the same run:
// - REST `POST /v1/sandboxes` → `POST /v1/sandboxes/:id/exec` (echo) vs the host agent's own
//   CreateSandbox → Exec on the same agent, interleaved run for run: the difference is the
//   control plane's overhead (goal < 10 ms at p50). Each REST pair is followed by two JSON POSTs
//   to a bare Fastify server: the HTTP floor any API in front of the agent costs its client here;
//   and by the same create → exec through a bare forwarder (bare-forwarder.ts: Fastify passing
//   both calls to the agent with the control plane's agent client, nothing else), measured the
//   same way: the floor of any control plane in front of the agent on this machine.
// - `GET /v1/sandboxes` under autocannon (50 connections, 10 s) vs a bare Fastify server answering
//   a constant JSON the same way (goal ≥ 2000 req/s; the control plane is one Node process, one core).
//   Each load also reports the server's requests per CPU-second (its own process's user+system
//   time, children excluded): what one core of it serves, whatever else shares the machine.
//   With two CPUs or more the server under load is pinned to CPU 0 and the rest (its PostgreSQL,
//   autocannon) to CPU 1: one core for the server, as the goal reads.
//   The control plane runs on its default embedded database (the private PostgreSQL cluster); the
//   reads are measured again on a second control plane over PGlite, for comparison.
// Both servers run as child processes; autocannon runs as its own process too.
// Usage: `make bench-control-plane`, or `node --import tsx bench/control-plane/run.ts [--runs 30] [--warmup 5] [--duration 10]`.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { request } from "undici";
import { openDatabase } from "../../packages/control-plane/src/db/database.js";
import { createRepositories } from "../../packages/control-plane/src/db/repositories.js";
import { cpuMsOf, descendants } from "../proc.js";
import { embeddedPostgresUnavailable } from "../../packages/control-plane/src/db/embedded-postgres.js";
import { TEST_TEMPLATE, removeDataDir, repoRoot, startAgentProcess, text, type AgentUnderTest } from "../../packages/host-agent/test/agent-harness.js";
import { rest, startControlPlane, startServer, stop, stopControlPlane, summary, type Api, type ControlPlaneUnderBench } from "../stack.js";

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "30" },
    warmup: { type: "string", default: "5" },
    duration: { type: "string", default: "10" },
    connections: { type: "string", default: "50" },
  },
});
const RUNS = Number(values.runs);
const WARMUP = Number(values.warmup);
const DURATION_SEC = Number(values.duration);
const CONNECTIONS = Number(values.connections);
const GOALS = { overheadP50Ms: 10, readsPerSec: 2000 };
/**
 * The page read under load: 34 of the benchmark's sandboxes (stopped by then) and the 3 running
 * ones, as in every run before (the warm-up's sandboxes make more than 34; the rest are the next page).
 */
const LIST_PATH = "/v1/sandboxes?state=running,stopped&limit=34";
const POOL = "10.243.0.0/24";
const TABLE = `wrenn_bcp${process.pid}`;
// The direct measurements run on an agent of their own: the control plane's reconciler destroys
// sandboxes its agent runs that its database does not know.
const DIRECT_POOL = "10.243.1.0/24";
const DIRECT_TABLE = `wrenn_bcd${process.pid}`;

const ms = (value: number) => `${value.toFixed(1)} ms`;

/** A duration the response reports in its Server-Timing header (ms): `agent` or `total`. */
function serverTiming(header: string | string[] | undefined, name: "agent" | "total"): number {
  const match = new RegExp(`${name};dur=([\\d.]+)`).exec(String(header ?? ""));
  if (!match) throw new Error(`no Server-Timing ${name} duration in the answer`);
  return Number(match[1]);
}

/**
 * A JSON POST with undici's `request` (the HTTP client under Node's fetch, without the WHATWG
 * Request/Response layers): measured here, fetch alone cost its client ~3 ms more per request on
 * this VM, which is the client's cost, not the API's. The HTTP floor below uses the same client.
 */
async function post(base: string, url: string, key: string, body: unknown): Promise<{ status: number; raw: string; serverTiming: string | string[] | undefined }> {
  const response = await request(`${base}${url}`, { method: "POST", headers: { "x-api-key": key, "content-type": "application/json" }, body: JSON.stringify(body) });
  const raw = await response.body.text();
  return { status: response.statusCode, raw, serverTiming: response.headers["server-timing"] };
}

async function restCall(api: Api, url: string, body: unknown): Promise<{ body: Record<string, unknown>; agentMs: number; serverMs: number }> {
  const response = await post(api.url, url, api.key, body);
  if (response.status < 200 || response.status > 299) throw new Error(`POST ${url}: ${response.status} ${response.raw}`);
  return { body: JSON.parse(response.raw) as Record<string, unknown>, agentMs: serverTiming(response.serverTiming, "agent"), serverMs: serverTiming(response.serverTiming, "total") };
}

/**
 * REST create then exec; `overhead` is the client's time minus what the control plane says it
 * waited on the agent (Server-Timing): the control plane's own cost, free of the boot's noise.
 */
async function restCreateThenExec(api: Api): Promise<{ elapsed: number; overhead: number; inServer: number; id: string }> {
  const started = performance.now();
  const sandbox = await restCall(api, "/v1/sandboxes", { template: TEST_TEMPLATE, timeoutSec: 0 });
  const id = sandbox.body.id as string;
  const result = await restCall(api, `/v1/sandboxes/${id}/exec`, { cmd: "/bin/echo", args: ["ready"] });
  const elapsed = performance.now() - started;
  if (String(result.body.stdout).trim() !== "ready") throw new Error(`REST exec printed ${JSON.stringify(result.body)}`);
  // inServer: the part of the overhead spent inside the control plane (the rest is HTTP and the client).
  return { elapsed, overhead: elapsed - sandbox.agentMs - result.agentMs, inServer: sandbox.serverMs - sandbox.agentMs + result.serverMs - result.agentMs, id };
}

async function agentCreateThenExec(agent: AgentUnderTest, sandboxId: string): Promise<number> {
  const started = performance.now();
  await agent.client.createSandbox({ sandboxId, template: TEST_TEMPLATE });
  const result = await agent.client.exec({ sandboxId, cmd: "/bin/echo", args: ["ready"] });
  const elapsed = performance.now() - started;
  if (text(result.stdout).trim() !== "ready") throw new Error(`agent exec printed ${JSON.stringify(text(result.stdout))}`);
  return elapsed;
}

interface LoadResult {
  requestsPerSec: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
  non2xx: number;
  errors: number;
  /** The server process's CPU time during the load, and requests served per CPU-second of it. */
  serverCpuSec?: number;
  requestsPerCpuSec?: number;
}

/**
 * "On one core": with two CPUs or more, the server under load runs on CPU 0 alone and everything
 * else it needs (its database server's processes, the load generator) on CPU 1. Children started
 * later (PostgreSQL's backends) inherit their parent's CPU.
 */
const PIN = availableParallelism() >= 2;

/** Puts the server on CPU 0 and its descendants (an embedded PostgreSQL) on CPU 1. */
function pinServer(server: ChildProcess): void {
  if (!PIN || !server.pid) return;
  execFileSync("taskset", ["-a", "-p", "-c", "0", String(server.pid)], { stdio: "ignore" });
  for (const pid of descendants(server.pid)) execFileSync("taskset", ["-a", "-p", "-c", "1", String(pid)], { stdio: "ignore" });
}

/** autocannon in its own process, JSON out; with `server`, also that process's requests per CPU-second. */
async function load(url: string, headers: Record<string, string>, server?: ChildProcess): Promise<LoadResult> {
  if (server) pinServer(server);
  const cpuBefore = server?.pid ? cpuMsOf(server.pid) : 0;
  const args = [path.join(repoRoot, "node_modules", "autocannon", "autocannon.js"), "-c", String(CONNECTIONS), "-d", String(DURATION_SEC), "-j"];
  for (const [name, value] of Object.entries(headers)) args.push("-H", `${name}=${value}`);
  args.push(url);
  const child = PIN ? spawn("taskset", ["-c", "1", process.execPath, ...args], { stdio: ["ignore", "pipe", "pipe"] }) : spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
  await new Promise((resolve) => child.once("exit", resolve));
  const json = JSON.parse(out) as { requests: { average: number; total: number }; latency: { p50: number; p99: number }; non2xx: number; errors: number };
  const cpu = server?.pid ? (cpuMsOf(server.pid) - cpuBefore) / 1000 : 0;
  return {
    requestsPerSec: Math.round(json.requests.average),
    latencyP50Ms: json.latency.p50,
    latencyP99Ms: json.latency.p99,
    non2xx: json.non2xx,
    errors: json.errors,
    ...(cpu > 0 ? { serverCpuSec: +cpu.toFixed(2), requestsPerCpuSec: Math.round(json.requests.total / cpu) } : {}),
  };
}

const FLOOR_SERVER = `
import Fastify from "fastify";
const app = Fastify({ logger: false });
const body = { sandboxes: [], nextCursor: null };
app.get("/v1/sandboxes", async () => body);
app.post("/hop", async () => ({ ok: true }));
await app.listen({ host: "127.0.0.1", port: 0 });
console.log("floor listening on " + app.server.address().port);
`;

/**
 * The same read load on a control plane over PGlite, for comparison (no agent: the rows are
 * written straight into its database while it is stopped, as many as the main run listed).
 */
async function readsOnPglite(rows: number): Promise<LoadResult> {
  let child: ChildProcess | undefined;
  const dataDir = await mkdtemp(path.join(tmpdir(), "wrenn-bench-cp-pglite-"));
  const env = { WRENN_DATA_DIR: dataDir, WRENN_PORT: "0", WRENN_EMBEDDED_DB: "pglite" };
  const main = path.join(repoRoot, "packages", "control-plane", "src", "main.ts");
  try {
    // First start: the admin team and key; then the rows, written while it is stopped (PGlite has one user).
    const first = await startServer(["--import", "tsx", main], env, /^API(?: key)?: (\S+)$/, 2);
    const team = await rest({ url: first.matches[0]![1]!, key: first.matches[1]![1]! }, "GET", "/v1/teams/current");
    await stop(first.child);
    const database = await openDatabase({ dataDir, embedded: "pglite" });
    const repos = createRepositories(database.db);
    for (let i = 0; i < rows; i++) {
      await repos.sandboxes.create({ id: `benchpgl${i}`, teamId: team.id as string, template: TEST_TEMPLATE, vcpus: 1, memoryMb: 512, diskSizeMb: 5120, timeoutSec: 0, metadata: {}, allowOut: [], denyOut: [], status: "running" });
    }
    await database.close();
    const started = await startServer(["--import", "tsx", main], env, /^API(?: key)?: (\S+)$/, 2);
    child = started.child;
    const api: Api = { url: started.matches[0]![1]!, key: started.matches[1]![1]! };
    await load(`${api.url}${LIST_PATH}`, { "x-api-key": api.key }, child); // JIT warm-up, as for the others
    return await load(`${api.url}${LIST_PATH}`, { "x-api-key": api.key }, child);
  } finally {
    await stop(child);
    await rm(dataDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const report: Record<string, unknown> = { host: { cpus: availableParallelism(), node: process.version } };
  let agent: AgentUnderTest | undefined;
  let directAgent: AgentUnderTest | undefined;
  let stack: ControlPlaneUnderBench | undefined;
  let floor: ChildProcess | undefined;
  let forwarder: ChildProcess | undefined;
  try {
    const agentArgs = ["--metrics-interval-ms", "5000", "--reaper-interval-ms", "1000"];
    agent = await startAgentProcess({ pool: POOL, table: TABLE, args: agentArgs });
    directAgent = await startAgentProcess({ pool: DIRECT_POOL, table: DIRECT_TABLE, args: agentArgs });
    stack = await startControlPlane(agent);
    const { api, child: controlPlane } = stack;
    const unavailable = embeddedPostgresUnavailable(stack.dataDir);
    if (unavailable) console.log(`note: the control plane falls back to PGlite here: ${unavailable}`);
    report.embeddedDatabase = unavailable ? "pglite" : "postgres";

    // The HTTP floor: two JSON POSTs to a bare Fastify server answering at once, right after each
    // REST create+exec, i.e. what any HTTP API in front of the agent costs its client on this machine.
    const floorStarted = await startServer(["--input-type=module", "-e", FLOOR_SERVER], {}, /^floor listening on (\d+)$/);
    floor = floorStarted.child;
    const floorBase = `http://127.0.0.1:${floorStarted.matches[0]![1]!}`;
    const twoHops = async () => {
      const started = performance.now();
      for (let i = 0; i < 2; i++) await post(floorBase, "/hop", api.key, { cmd: "/bin/echo" });
      return performance.now() - started;
    };
    // The bare forwarder, on the direct agent (no reconciler there to destroy what it makes).
    const forwarderStarted = await startServer(
      ["--import", "tsx", path.join(repoRoot, "bench", "control-plane", "bare-forwarder.ts"), `127.0.0.1:${directAgent.port}`, directAgent.token],
      {},
      /^forwarder (\d+)$/,
    );
    forwarder = forwarderStarted.child;
    const forwarderApi: Api = { url: `http://127.0.0.1:${forwarderStarted.matches[0]![1]!}`, key: "" };
    /** One round, every path in turn: REST create+exec, the HTTP floor, the bare forwarder, the agent itself. */
    const round = async (directId: string) => {
      const viaApi = await restCreateThenExec(api);
      const hop = await twoHops();
      const forwarded = await restCreateThenExec(forwarderApi);
      await rest(forwarderApi, "DELETE", `/v1/sandboxes/${forwarded.id}`);
      await rest(api, "DELETE", `/v1/sandboxes/${viaApi.id}`);
      const agentOnly = await agentCreateThenExec(directAgent!, directId);
      await directAgent!.client.destroySandbox({ sandboxId: directId });
      return { viaApi, hop, forwarded, agentOnly };
    };
    // Warm-up: the same rounds as measured, untimed, so that every server runs JIT-compiled code
    // as it does in service (one round left the control plane's request path ~1 ms slower than
    // warm). Then interleave so drift on a noisy machine hits every path alike.
    for (let i = 0; i < WARMUP; i++) await round(`warmup${i}`);
    const viaRest: number[] = [];
    const ownCost: number[] = [];
    const inServer: number[] = [];
    const direct: number[] = [];
    const hops: number[] = [];
    const forwarderCost: number[] = [];
    const forwarderInServer: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const { viaApi, hop, forwarded, agentOnly } = await round(`direct${i}`);
      viaRest.push(viaApi.elapsed);
      ownCost.push(viaApi.overhead);
      inServer.push(viaApi.inServer);
      hops.push(hop);
      forwarderCost.push(forwarded.overhead);
      forwarderInServer.push(forwarded.inServer);
      direct.push(agentOnly);
    }
    const restStats = summary(viaRest);
    const directStats = summary(direct);
    const overhead = { p50: +(restStats.p50 - directStats.p50).toFixed(1), p95: +(restStats.p95 - directStats.p95).toFixed(1) };
    const ownStats = summary(ownCost);
    const inServerStats = summary(inServer);
    const hopStats = summary(hops);
    const forwarderStats = summary(forwarderCost);
    const forwarderInServerStats = summary(forwarderInServer);
    report.createToFirstExec = {
      rest: restStats,
      agent: directStats,
      overheadMs: overhead,
      ownCostMs: { p50: +ownStats.p50.toFixed(1), p95: +ownStats.p95.toFixed(1) },
      inServerMs: { p50: +inServerStats.p50.toFixed(1), p95: +inServerStats.p95.toFixed(1) },
      httpFloorTwoRequestsMs: { p50: hopStats.p50, p95: hopStats.p95 },
      ownCostOverHttpFloor: +(ownStats.p50 / hopStats.p50).toFixed(2),
      bareForwarderMs: { p50: forwarderStats.p50, p95: forwarderStats.p95, inServerP50: forwarderInServerStats.p50 },
      ownCostOverBareForwarder: +(ownStats.p50 / forwarderStats.p50).toFixed(2),
    };
    console.log(`agent CreateSandbox → Exec:       p50 ${ms(directStats.p50)}, p95 ${ms(directStats.p95)} (n=${RUNS})`);
    console.log(`REST POST /v1/sandboxes → exec:   p50 ${ms(restStats.p50)}, p95 ${ms(restStats.p95)} (n=${RUNS})`);
    console.log(`difference of the two p50s / p95s: ${ms(overhead.p50)} / ${ms(overhead.p95)} (noise of two boots)`);
    console.log(`control-plane overhead per create+exec (client time − agent time, Server-Timing): p50 ${ms(ownStats.p50)}, p95 ${ms(ownStats.p95)} (goal < ${GOALS.overheadP50Ms} ms at p50)`);
    console.log(`  of which inside the control plane (Server-Timing total − agent): p50 ${ms(inServerStats.p50)}, p95 ${ms(inServerStats.p95)}; the rest is HTTP and the client`);
    console.log(`  floor: two JSON POSTs to a bare Fastify server right after each create+exec: p50 ${ms(hopStats.p50)}, p95 ${ms(hopStats.p95)} (own cost = ${(ownStats.p50 / hopStats.p50).toFixed(2)}× that floor)`);
    console.log(
      `  floor: a bare forwarder (Fastify + the agent client, no auth or database) doing the same create+exec: p50 ${ms(forwarderStats.p50)}, p95 ${ms(forwarderStats.p95)}, ` +
        `inside it p50 ${ms(forwarderInServerStats.p50)} (own cost = ${(ownStats.p50 / forwarderStats.p50).toFixed(2)}× that floor)`,
    );

    // Reads: a few running sandboxes, so the list is not empty.
    const running = [];
    for (let i = 0; i < 3; i++) running.push((await restCreateThenExec(api)).id);
    const listed = await rest(api, "GET", LIST_PATH);
    const floorUrl = `${floorBase}/v1/sandboxes`;
    await load(floorUrl, {}, floor); // warm both servers' JIT the same way
    await load(`${api.url}${LIST_PATH}`, { "x-api-key": api.key }, controlPlane);
    const apiReads = await load(`${api.url}${LIST_PATH}`, { "x-api-key": api.key }, controlPlane);
    const floorReads = await load(floorUrl, {}, floor);
    for (const id of running) await rest(api, "DELETE", `/v1/sandboxes/${id}`);
    const listedCount = (listed.sandboxes as unknown[]).length;
    report.readsPinned = PIN;
    if (PIN) console.log("reads: each server on CPU 0 alone; its PostgreSQL and autocannon on CPU 1");
    const perCpu = (result: LoadResult) => (result.requestsPerCpuSec ? `, ${result.requestsPerCpuSec} req per CPU-second of the server` : "");
    report.reads = { sandboxesListed: listedCount, api: apiReads, floor: floorReads, ratio: +(apiReads.requestsPerSec / floorReads.requestsPerSec).toFixed(3) };
    console.log(`bare Fastify constant JSON:       ${floorReads.requestsPerSec} req/s, p50 ${floorReads.latencyP50Ms} ms, p99 ${floorReads.latencyP99Ms} ms${perCpu(floorReads)}`);
    console.log(
      `GET /v1/sandboxes (${listedCount} listed, ${report.embeddedDatabase}): ${apiReads.requestsPerSec} req/s, p50 ${apiReads.latencyP50Ms} ms, p99 ${apiReads.latencyP99Ms} ms, ` +
        `non-2xx ${apiReads.non2xx}${perCpu(apiReads)} (${(100 * apiReads.requestsPerSec / floorReads.requestsPerSec).toFixed(1)}% of the floor; goal ≥ ${GOALS.readsPerSec} req/s)`,
    );
    const pglite = await readsOnPglite(listedCount);
    report.readsOnPglite = { api: pglite, ratio: +(pglite.requestsPerSec / floorReads.requestsPerSec).toFixed(3) };
    console.log(`GET /v1/sandboxes on PGlite (${listedCount} rows): ${pglite.requestsPerSec} req/s, p50 ${pglite.latencyP50Ms} ms, p99 ${pglite.latencyP99Ms} ms, non-2xx ${pglite.non2xx}${perCpu(pglite)}`);
  } finally {
    await stop(floor);
    await stop(forwarder);
    await stopControlPlane(stack);
    for (const running of [agent, directAgent]) {
      if (!running) continue;
      await running.client.terminate({}).catch(() => undefined);
      await new Promise<void>((resolve) => (running.child.exitCode !== null ? resolve() : running.child.once("exit", () => resolve())));
      await removeDataDir(running.dataDir, running.table);
    }
  }
  console.log(JSON.stringify(report));
}

await main();
