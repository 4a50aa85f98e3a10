// What the benchmarks that run the whole stack share: a control plane started as its own process
// (`node --import tsx packages/control-plane/src/main.ts`, as `make up` runs it) over an agent the
// benchmark started, stopped cleanly, and its REST API called the way a client would.
import { spawn, type ChildProcess } from "node:child_process";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { repoRoot, type AgentUnderTest } from "../packages/host-agent/test/agent-harness.js";

export interface Api {
  url: string;
  key: string;
}

export const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
export const summary = (samples: number[]) => {
  const sorted = [...samples].sort((a, b) => a - b);
  return { p50: +quantile(sorted, 0.5).toFixed(2), p95: +quantile(sorted, 0.95).toFixed(2), n: samples.length };
};

/** Starts `node <args>` and resolves with the first `lines` matches of `pattern` on its stdout (the rest is drained). */
export function startServer(args: string[], env: NodeJS.ProcessEnv, pattern: RegExp, lines = 1): Promise<{ child: ChildProcess; matches: RegExpExecArray[] }> {
  const child = spawn(process.execPath, args, { cwd: repoRoot, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let errors = "";
  child.stderr!.on("data", (chunk: Buffer) => (errors = (errors + chunk.toString()).slice(-4000)));
  return new Promise((resolve, reject) => {
    const matches: RegExpExecArray[] = [];
    const timer = setTimeout(() => reject(new Error(`${args.join(" ")} did not start in 90 s:\n${errors}`)), 90_000);
    createInterface({ input: child.stdout! }).on("line", (line) => {
      const match = pattern.exec(line);
      if (!match || matches.length >= lines) return;
      matches.push(match);
      if (matches.length === lines) {
        clearTimeout(timer);
        resolve({ child, matches });
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${args.join(" ")} exited with ${code}:\n${errors}`));
    });
  });
}

/** SIGTERM, and wait until it exited. */
export async function stop(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  await exited;
}

/** A REST call; the answer's JSON (empty object for none), or an error with the status and body. */
export async function rest(api: Api, method: string, url: string, body?: unknown): Promise<Record<string, unknown>> {
  const response = await fetch(`${api.url}${url}`, {
    method,
    headers: { "x-api-key": api.key, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const raw = await response.text();
  if (!response.ok) throw new Error(`${method} ${url}: ${response.status} ${raw}`);
  return raw ? (JSON.parse(raw) as Record<string, unknown>) : {};
}

export interface ControlPlaneUnderBench {
  child: ChildProcess;
  api: Api;
  dataDir: string;
}

/** A control plane on its default embedded database in a fresh data dir, with `agent` as its local host. */
export async function startControlPlane(agent: AgentUnderTest, env: NodeJS.ProcessEnv = {}): Promise<ControlPlaneUnderBench> {
  const dataDir = await mkdtemp(path.join(tmpdir(), "wrenn-bench-cp-"));
  // The embedded PostgreSQL server runs as the postgres user, which must pass through to its dir.
  await chmod(dataDir, 0o711);
  const tokenFile = path.join(dataDir, "agent-token");
  await writeFile(tokenFile, agent.token, { mode: 0o600 });
  const started = await startServer(
    ["--import", "tsx", path.join(repoRoot, "packages", "control-plane", "src", "main.ts")],
    { WRENN_DATA_DIR: dataDir, WRENN_PORT: "0", WRENN_LOCAL_AGENT: `127.0.0.1:${agent.port}`, WRENN_LOCAL_AGENT_TOKEN_FILE: tokenFile, ...env },
    /^API(?: key)?: (\S+)$/,
    2,
  ).catch(async (err: unknown) => {
    await rm(dataDir, { recursive: true, force: true }); // a control plane that did not start leaves no data dir
    throw err;
  });
  return { child: started.child, api: { url: started.matches[0]![1]!, key: started.matches[1]![1]! }, dataDir };
}

export async function stopControlPlane(controlPlane: ControlPlaneUnderBench | undefined): Promise<void> {
  if (!controlPlane) return;
  await stop(controlPlane.child);
  await rm(controlPlane.dataDir, { recursive: true, force: true });
}
