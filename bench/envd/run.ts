// Benchmarks envd against the floor the same machine gives in the same run: a bare spawn for a
// command round-trip, `cp` for file throughput. These machines are noisy, so only the ratios are
// comparable between runs. Usage: `make bench`, or `node --import tsx bench/envd/run.ts [--sources]`.
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { createReadStream, createWriteStream, existsSync, readdirSync, statSync } from "node:fs";
import { mkdtemp, open, readFile, rm, stat } from "node:fs/promises";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { randomBytes } from "node:crypto";
import { pipeline } from "node:stream/promises";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { Process } from "@wrenn/proto/envd/process";
import { startEnvdProcess, type EnvdUnderTest } from "../../packages/envd/test/harness.js";
import { cpuMsOf, descendants } from "../proc.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const builtEnvd = path.join(repoRoot, "build", "opt-wrenn", "bin", "envd");

const ROUND_TRIP_WARMUP = 20;
const ROUND_TRIP_RUNS = 200;
const FILE_BYTES = 256 * 1024 * 1024;
const FILE_RUNS = 3;
/** Client-side read/write chunk: large, so the benchmark process spends little CPU beside envd. */
const CLIENT_CHUNK = 1024 * 1024;
const SETTLE_MS = 2000;

const GOALS = { roundTripRatio: 3, throughputRatio: 2, idleRssMB: 60 };

// ---------------------------------------------------------------------------------------------
// Which envd, and its real process

interface EnvdBuild {
  label: string;
  command?: string[];
}

function newestSourceMs(): number {
  const sources = path.join(repoRoot, "packages", "envd", "src");
  const files = readdirSync(sources, { recursive: true, withFileTypes: true }).filter((entry) => entry.isFile());
  return Math.max(0, ...files.map((entry) => statSync(path.join(entry.parentPath, entry.name)).mtimeMs));
}

/** The shipped build when it exists (that is what runs in sandboxes), else the sources. */
function chooseEnvd(forceSources: boolean): EnvdBuild {
  if (!forceSources && existsSync(builtEnvd)) {
    const built = statSync(builtEnvd).mtimeMs;
    const stale = newestSourceMs() > built ? "; OLDER than packages/envd/src, run 'make envd'" : "";
    return { label: `built ${path.relative(repoRoot, builtEnvd)} (${new Date(built).toISOString()}${stale})`, command: [builtEnvd] };
  }
  const why = forceSources ? "--sources" : `${path.relative(repoRoot, builtEnvd)} not found; run 'make envd'`;
  return { label: `TypeScript sources via tsx (${why})` };
}

/** The node process that runs envd: the started pid itself, or its descendant running the bundle or main.ts. */
async function findEnvdNodePid(pid: number): Promise<number> {
  for (const candidate of [pid, ...descendants(pid)]) {
    const cmdline = await readFile(`/proc/${candidate}/cmdline`, "utf8").catch(() => "");
    if (/envd\.mjs|main\.ts/.test(cmdline)) return candidate;
  }
  return pid;
}

/** VmRSS and VmHWM of a process, in MB (10^6 bytes). */
async function memoryOf(pid: number): Promise<{ rssMB: number; peakMB: number }> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kB = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN);
  return { rssMB: (kB("VmRSS") * 1024) / 1e6, peakMB: (kB("VmHWM") * 1024) / 1e6 };
}

// ---------------------------------------------------------------------------------------------
// 1. Command round-trip

interface Latency {
  p50: number;
  p95: number;
}

function summarise(samples: number[]): Latency {
  const sorted = [...samples].sort((a, b) => a - b);
  const percentile = (p: number): number => sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)]!;
  return { p50: percentile(0.5), p95: percentile(0.95) };
}

async function envdRunTrue(client: Client<typeof Process>): Promise<number> {
  const started = performance.now();
  let exitCode: number | undefined;
  for await (const response of client.start({ process: { cmd: "true", args: [] }, stdin: false })) {
    if (response.event?.event.case === "end") exitCode = response.event.event.value.exitCode;
  }
  const elapsed = performance.now() - started;
  if (exitCode !== 0) throw new Error(`envd: "true" ended with exit code ${exitCode}`);
  return elapsed;
}

/** The floor: what envd itself does per command (spawn with piped output, wait for the pipes to close). */
async function bareRunTrue(): Promise<number> {
  const started = performance.now();
  const child = spawn("true", [], { stdio: ["ignore", "pipe", "pipe"], detached: true });
  const [code] = (await once(child, "close")) as [number | null];
  const elapsed = performance.now() - started;
  if (code !== 0) throw new Error(`bare spawn: "true" exited with ${code}`);
  return elapsed;
}

async function measureRoundTrip(client: Client<typeof Process>, envdPid: number) {
  for (let i = 0; i < ROUND_TRIP_WARMUP; i++) {
    await envdRunTrue(client);
    await bareRunTrue();
  }
  const envdSamples: number[] = [];
  const bareSamples: number[] = [];
  const cpuBefore = await cpuMsOf(envdPid);
  // Interleaved, so a noisy neighbour hits both sides alike.
  for (let i = 0; i < ROUND_TRIP_RUNS; i++) {
    envdSamples.push(await envdRunTrue(client));
    bareSamples.push(await bareRunTrue());
  }
  const envdCpuMsPerCall = ((await cpuMsOf(envdPid)) - cpuBefore) / ROUND_TRIP_RUNS;
  return { envd: summarise(envdSamples), bare: summarise(bareSamples), envdCpuMsPerCall };
}

// ---------------------------------------------------------------------------------------------
// 2. File throughput

async function writeRandomFile(file: string, bytes: number): Promise<void> {
  const handle = await open(file, "w");
  try {
    for (let written = 0; written < bytes; written += CLIENT_CHUNK) {
      await handle.write(randomBytes(Math.min(CLIENT_CHUNK, bytes - written)));
    }
  } finally {
    await handle.close();
  }
}

function filesUrl(baseUrl: string, file: string): URL {
  const url = new URL("/files", baseUrl);
  url.searchParams.set("path", file);
  url.searchParams.set("username", "root");
  return url;
}

async function readAll(res: http.IncomingMessage): Promise<string> {
  let text = "";
  for await (const chunk of res) text += chunk;
  return text;
}

/**
 * POSTs a body streamed from disk with `http.request` (a fixed Content-Length, no chunking), and
 * reads the answer. Measured faster than `fetch` with a ReadableStream body, which spends more of
 * the client's CPU (shared with envd on a small machine) and sends the body chunked.
 */
async function postStreaming(url: URL, headers: http.OutgoingHttpHeaders, body: AsyncIterable<Buffer>): Promise<void> {
  const req = http.request(url, { method: "POST", headers, agent: false });
  const answer = once(req, "response") as Promise<[http.IncomingMessage]>;
  await pipeline(body, req);
  const [res] = await answer;
  const text = await readAll(res);
  if (res.statusCode !== 200) throw new Error(`POST ${url.pathname}: HTTP ${res.statusCode} ${text}`);
}

async function* fileChunks(file: string): AsyncGenerator<Buffer> {
  yield* createReadStream(file, { highWaterMark: CLIENT_CHUNK });
}

function uploadOctetStream(baseUrl: string, source: string, target: string): Promise<void> {
  const headers = { "content-type": "application/octet-stream", "content-length": FILE_BYTES };
  return postStreaming(filesUrl(baseUrl, target), headers, fileChunks(source));
}

function uploadMultipart(baseUrl: string, source: string, target: string): Promise<void> {
  const boundary = `wrenn-bench-${randomBytes(8).toString("hex")}`;
  const head = Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${path.basename(target)}"\r\n` +
      "Content-Type: application/octet-stream\r\n\r\n",
  );
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  async function* body(): AsyncGenerator<Buffer> {
    yield head;
    yield* fileChunks(source);
    yield tail;
  }
  const headers = { "content-type": `multipart/form-data; boundary=${boundary}`, "content-length": head.length + FILE_BYTES + tail.length };
  return postStreaming(filesUrl(baseUrl, target), headers, body());
}

/** Downloads without Accept-Encoding (`http.get` sends none), so the bytes come as they are, not gzipped. */
async function download(baseUrl: string, source: string, target: string): Promise<void> {
  const req = http.get(filesUrl(baseUrl, source), { agent: false });
  const [res] = (await once(req, "response")) as [http.IncomingMessage];
  if (res.statusCode !== 200) throw new Error(`GET /files: HTTP ${res.statusCode} ${await readAll(res)}`);
  await pipeline(res, createWriteStream(target, { highWaterMark: CLIENT_CHUNK }));
}

async function copyWithCp(source: string, target: string): Promise<void> {
  const child = spawn("cp", [source, target], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const [code] = (await once(child, "close")) as [number | null];
  if (code !== 0) throw new Error(`cp exited with ${code}: ${stderr}`);
}

/**
 * Context, not a goal: a copy through user space, `dd bs=1M` (plain read/write). On ext4, `cp`
 * and coreutils' `cat` both use copy_file_range, an in-kernel page-cache copy no byte of which
 * crosses into a process: no transfer over a socket can match that floor.
 */
async function copyWithDd(source: string, target: string): Promise<void> {
  const child = spawn("dd", [`if=${source}`, `of=${target}`, "bs=1M", "status=none"], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const [code] = (await once(child, "close")) as [number | null];
  if (code !== 0) throw new Error(`dd exited with ${code}: ${stderr}`);
}

/**
 * Context, not a goal: the same streaming job (`pipeline` between the request and the file, Node's
 * default buffer sizes) in a bare Node HTTP server, in its own process like envd. Shows how much of
 * the distance to `cp` is Node's HTTP and streams rather than envd.
 */
const NODE_HTTP_FLOOR = `
import http from "node:http";
import { createReadStream, createWriteStream } from "node:fs";
import { stat } from "node:fs/promises";
import { pipeline } from "node:stream/promises";
const server = http.createServer(async (req, res) => {
  const file = new URL(req.url, "http://floor").searchParams.get("path");
  try {
    if (req.method === "POST") {
      await pipeline(req, createWriteStream(file));
      res.end("[]");
    } else {
      res.writeHead(200, { "content-length": (await stat(file)).size });
      await pipeline(createReadStream(file), res);
    }
  } catch (err) {
    if (!res.headersSent) res.writeHead(500);
    res.end();
  }
});
server.listen(0, "127.0.0.1", () => console.log("listening on port " + server.address().port));
`;

async function startNodeHttpFloor(): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, ["--input-type=module", "-e", NODE_HTTP_FLOOR], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  for await (const chunk of child.stdout!) {
    out += chunk;
    const port = /listening on port (\d+)/.exec(out)?.[1];
    if (port) {
      child.stdout!.resume();
      return { url: `http://127.0.0.1:${port}`, child };
    }
  }
  throw new Error(`the Node HTTP floor server exited before listening: ${out}`);
}

interface TransferKind {
  name: string;
  run: (source: string, target: string) => Promise<void>;
  /** Set for transfers envd serves: their envd CPU time is recorded. */
  envd?: boolean;
}

interface TransferResult {
  mbps: number;
  envdCpuMsPerGB?: number;
}

/**
 * Median MB/s of FILE_RUNS runs of every kind, interleaved so noise hits all alike. Each result's
 * size is checked, then the file removed (untimed). The page cache stays warm: nothing is dropped.
 */
async function measureTransfers(kinds: TransferKind[], source: string, target: string, envdPid: number): Promise<Map<string, TransferResult>> {
  const rates = new Map<string, number[]>(kinds.map((kind) => [kind.name, []]));
  const cpuMs = new Map<string, number>();
  for (let run = 0; run < FILE_RUNS; run++) {
    for (const kind of kinds) {
      const cpuBefore = kind.envd ? await cpuMsOf(envdPid) : 0;
      const started = performance.now();
      await kind.run(source, target);
      const seconds = (performance.now() - started) / 1000;
      if (kind.envd) cpuMs.set(kind.name, (cpuMs.get(kind.name) ?? 0) + (await cpuMsOf(envdPid)) - cpuBefore);
      const size = (await stat(target)).size;
      if (size !== FILE_BYTES) throw new Error(`${kind.name}: ${target} holds ${size} bytes, expected ${FILE_BYTES}`);
      await rm(target, { force: true });
      rates.get(kind.name)!.push(FILE_BYTES / 1e6 / seconds);
    }
  }
  const results = new Map<string, TransferResult>();
  for (const kind of kinds) {
    const sorted = rates.get(kind.name)!.sort((a, b) => a - b);
    const cpu = cpuMs.get(kind.name);
    results.set(kind.name, {
      mbps: sorted[Math.floor(sorted.length / 2)]!,
      envdCpuMsPerGB: cpu === undefined ? undefined : cpu / ((FILE_RUNS * FILE_BYTES) / 1e9),
    });
  }
  return results;
}

// ---------------------------------------------------------------------------------------------
// Report

const verdict = (pass: boolean): string => (pass ? "PASS" : "MISS");
const round = (n: number, digits = 2): number => Number(n.toFixed(digits));
const ms = (n: number): string => `${n.toFixed(2)} ms`;
const mbps = (n: number): string => `${n.toFixed(0)} MB/s`;
const times = (n: number): string => `${n.toFixed(2)}x`;

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, col) => Math.max(...rows.map((row) => row[col]!.length)));
  return rows.map((row) => row.map((cell, col) => cell.padEnd(widths[col]!)).join("  ").trimEnd()).join("\n");
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { sources: { type: "boolean", default: false } } });
  const build = chooseEnvd(values.sources ?? false);
  const machine = { cores: os.cpus().length, cpu: os.cpus()[0]?.model.trim(), node: process.version, kernel: os.release() };
  console.log(`envd under test: ${build.label}`);
  console.log(`machine: ${machine.cores} cores (${machine.cpu}), Node ${machine.node}, Linux ${machine.kernel}`);

  // Whatever a step creates is undone in reverse order, also on error or Ctrl-C.
  const cleanups: (() => Promise<unknown>)[] = [];
  const cleanUp = async (): Promise<void> => {
    for (const undo of cleanups.reverse()) await undo().catch(() => undefined);
    cleanups.length = 0;
  };
  const onSignal = (): void => void cleanUp().finally(() => process.exit(130));
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    const dir = await mkdtemp(path.join(os.tmpdir(), "wrenn-bench-"));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const envd: EnvdUnderTest = await startEnvdProcess(build.command ? { command: build.command } : {});
    cleanups.push(() => envd.stop());
    const envdPid = await findEnvdNodePid(envd.pid);
    const client = createClient(Process, createConnectTransport({ baseUrl: envd.url, httpVersion: "1.1", useBinaryFormat: true }));

    // Idle: one warm-up request, then let it settle.
    await envdRunTrue(client);
    await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
    const idle = await memoryOf(envdPid);

    console.log(`command round-trip: ${ROUND_TRIP_RUNS} runs of \`true\` each way, interleaved ...`);
    const roundTrip = await measureRoundTrip(client, envdPid);

    console.log(`file throughput: ${FILE_BYTES / 2 ** 20} MiB of random bytes, median of ${FILE_RUNS}, interleaved ...`);
    const floor = await startNodeHttpFloor();
    cleanups.push(async () => {
      floor.child.kill();
      if (floor.child.exitCode === null && floor.child.signalCode === null) await once(floor.child, "exit");
    });
    const source = path.join(dir, "source.bin");
    await writeRandomFile(source, FILE_BYTES);
    const transfers = await measureTransfers(
      [
        { name: "cp", run: copyWithCp },
        { name: "dd", run: copyWithDd },
        { name: "upload, octet-stream", run: (s, t) => uploadOctetStream(envd.url, s, t), envd: true },
        { name: "upload, multipart", run: (s, t) => uploadMultipart(envd.url, s, t), envd: true },
        { name: "download", run: (s, t) => download(envd.url, s, t), envd: true },
        { name: "node http upload", run: (s, t) => uploadOctetStream(floor.url, s, t) },
        { name: "node http download", run: (s, t) => download(floor.url, s, t) },
      ],
      source,
      path.join(dir, "target.bin"),
      envdPid,
    );
    const loaded = await memoryOf(envdPid);

    const rt = GOALS.roundTripRatio;
    const tp = GOALS.throughputRatio;
    const cp = transfers.get("cp")!.mbps;
    const dd = transfers.get("dd")!.mbps;
    const roundTripRows = (["p50", "p95"] as const).map((p) => {
      const ratio = roundTrip.envd[p] / roundTrip.bare[p];
      return { p, envd: roundTrip.envd[p], bare: roundTrip.bare[p], ratio, pass: ratio <= rt };
    });
    const fileRows = (["upload, octet-stream", "upload, multipart", "download"] as const).map((name) => {
      const result = transfers.get(name)!;
      const nodeFloor = transfers.get(name === "download" ? "node http download" : "node http upload")!.mbps;
      const ratio = cp / result.mbps;
      return { name, ...result, ratio, pass: ratio <= tp, nodeFloor };
    });
    const idlePass = idle.rssMB < GOALS.idleRssMB;

    console.log("");
    console.log(
      table([
        ["measure", "envd", "floor", "ratio", "goal", ""],
        ...roundTripRows.map((row) => [`run \`true\`, ${row.p}`, ms(row.envd), `${ms(row.bare)} spawn`, times(row.ratio), `<= ${rt}x`, verdict(row.pass)]),
        ...fileRows.map((row) => [row.name, mbps(row.mbps), `${mbps(cp)} cp`, times(row.ratio), `<= ${tp}x`, verdict(row.pass)]),
        ["idle RSS", `${idle.rssMB.toFixed(1)} MB`, "", "", `< ${GOALS.idleRssMB} MB`, verdict(idlePass)],
        ["RSS after load, peak", `${loaded.rssMB.toFixed(1)} MB, ${loaded.peakMB.toFixed(1)} MB`, "", "", "", ""],
      ]),
    );
    console.log("");
    console.log(`context (no goals): envd CPU ${roundTrip.envdCpuMsPerCall.toFixed(2)} ms per command`);
    console.log(
      table([
        ["transfer", "envd", "dd bs=1M (user-space copy)", "dd/envd", "bare node http", "node/envd", "envd CPU"],
        ...fileRows.map((row) => [
          row.name,
          mbps(row.mbps),
          mbps(dd),
          times(dd / row.mbps),
          mbps(row.nodeFloor),
          times(row.nodeFloor / row.mbps),
          `${row.envdCpuMsPerGB!.toFixed(0)} ms/GB`,
        ]),
      ]),
    );
    console.log(
      JSON.stringify({
        benchmark: "envd",
        date: new Date().toISOString(),
        machine,
        envd: build.label,
        roundTripMs: {
          runs: ROUND_TRIP_RUNS,
          goalRatio: rt,
          envdCpuMsPerCall: round(roundTrip.envdCpuMsPerCall),
          ...Object.fromEntries(
            roundTripRows.map((row) => [row.p, { envd: round(row.envd, 3), bareSpawn: round(row.bare, 3), ratio: round(row.ratio), pass: row.pass }]),
          ),
        },
        throughputMBps: {
          fileBytes: FILE_BYTES,
          runs: FILE_RUNS,
          goalRatio: tp,
          cp: round(cp, 1),
          dd: round(dd, 1),
          ...Object.fromEntries(
            fileRows.map((row) => [
              row.name,
              {
                envd: round(row.mbps, 1),
                ratio: round(row.ratio),
                pass: row.pass,
                bareNodeHttp: round(row.nodeFloor, 1),
                envdCpuMsPerGB: round(row.envdCpuMsPerGB!, 0),
              },
            ]),
          ),
        },
        rssMB: { idle: round(idle.rssMB, 1), afterLoad: round(loaded.rssMB, 1), peak: round(loaded.peakMB, 1), goalIdle: GOALS.idleRssMB, pass: idlePass },
      }),
    );
  } finally {
    await cleanUp();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

await main();
