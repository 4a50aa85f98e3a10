// A real host agent in a child process (so a test can kill it like a crash and start another),
// with its own data dir, address pool and nftables table, and a client that carries the token.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { HostAgentService } from "@wrenn/proto/hostagent";
import { runCommand } from "../src/exec/command.js";
import { TemplateStore } from "../src/sandbox/storage/templates.js";
import { buildBusyboxTemplate } from "./template.js";
import { commandRuns } from "./host-tools.js";

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, "..", "..", "..");
export const agentMain = path.join(here, "..", "src", "main.ts");
export const envdDir = path.join(repoRoot, "build", "opt-wrenn");
export const TEST_TEMPLATE = "busybox";

const hasRunsc = commandRuns("runsc");
/** Why agent tests cannot run here, or false. */
export const skipAgent = process.getuid?.() !== 0 ? "needs root" : !hasRunsc ? "needs runsc (scripts/install-system-deps.sh)" : false;

export interface AgentOptions {
  /** A /24-or-smaller pool no other test uses. */
  pool: string;
  /** Reuse a data dir (restart); otherwise a fresh one with the busybox template. */
  dataDir?: string;
  host?: string;
  args?: string[];
  /** The nftables table; default one per test process (two agents at once need two). */
  table?: string;
}

export interface AgentUnderTest {
  dataDir: string;
  port: number;
  proxyPort: number;
  token: string;
  table: string;
  child: ChildProcess;
  client: Client<typeof HostAgentService>;
  /** A client without the token. */
  anonymous: Client<typeof HostAgentService>;
  /** SIGTERM: the agent stops serving, sandboxes keep running. */
  stop(): Promise<void>;
  /** SIGKILL, like a crash. */
  kill(): Promise<void>;
  log(): string;
}

export async function ensureEnvdBuilt(): Promise<void> {
  if (existsSync(path.join(envdDir, "envd.argv"))) return;
  await runCommand("bash", [path.join(repoRoot, "scripts", "build-envd.sh")], { timeoutMs: 180_000 });
}

export async function newDataDir(): Promise<string> {
  const dataDir = await mkdtemp(path.join(tmpdir(), "wrenn-agent-test-"));
  const store = new TemplateStore(path.join(dataDir, "templates"));
  await store.createFrom(TEST_TEMPLATE, { teamId: "00000000-0000-0000-0000-000000000000", kind: "base", metadata: {} }, buildBusyboxTemplate);
  return dataDir;
}

export async function startAgentProcess(options: AgentOptions): Promise<AgentUnderTest> {
  await ensureEnvdBuilt();
  const dataDir = options.dataDir ?? (await newDataDir());
  const token = "test-token-" + process.pid;
  const table = options.table ?? `wrenn_at${process.pid}`;
  const child = spawn(
    process.execPath,
    [
      "--import", "tsx", agentMain,
      "--data-dir", dataDir,
      "--envd-dir", envdDir,
      "--host", options.host ?? "127.0.0.1",
      "--port", "0",
      "--proxy-port", "0",
      "--pool", options.pool,
      "--firewall-table", table,
      "--dns", "192.0.2.53",
      "--reaper-interval-ms", "200",
      "--metrics-interval-ms", "500",
      ...(options.args ?? []),
    ],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, WRENN_HOST_TOKEN: token, LOG_LEVEL: process.env.LOG_LEVEL ?? "info" } },
  );
  let output = "";
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const ports = await new Promise<{ port: number; proxyPort: number }>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`host agent did not start within 60 s:\n${output}`));
    }, 60_000);
    child.stdout!.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      const match = /host agent listening on port (\d+), port proxy on (\d+)/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve({ port: Number(match[1]), proxyPort: Number(match[2]) });
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`host agent exited with ${code} before listening:\n${output}`));
    });
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const bearer: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const baseUrl = `http://127.0.0.1:${ports.port}`;
  const client = createClient(HostAgentService, createConnectTransport({ baseUrl, httpVersion: "2", interceptors: [bearer] }));
  const anonymous = createClient(HostAgentService, createConnectTransport({ baseUrl, httpVersion: "2" }));
  return {
    dataDir,
    ...ports,
    token,
    table,
    child,
    client,
    anonymous,
    stop: async () => {
      child.kill("SIGTERM");
      await exited;
    },
    kill: async () => {
      child.kill("SIGKILL");
      await exited;
    },
    log: () => output,
  };
}

/** Terminates the agent (it destroys its sandboxes and exits), then removes its data dir and nft table. */
export async function terminateAgent(agent: AgentUnderTest): Promise<void> {
  await agent.client.terminate({}).catch(() => undefined);
  await new Promise<void>((resolve) => (agent.child.exitCode !== null ? resolve() : agent.child.once("exit", () => resolve())));
  await removeDataDir(agent.dataDir, agent.table);
}

/** Removes a test data dir once nothing is mounted in it; also drops the agent's nft table. */
export async function removeDataDir(dataDir: string, table: string): Promise<void> {
  await runCommand("nft", ["delete", "table", "inet", table], { timeoutMs: 5000 }).catch(() => undefined);
  const mounts = (await readFile("/proc/self/mounts", "utf8")).split("\n").filter((line) => line.includes(dataDir));
  if (mounts.length > 0) throw new Error(`still mounted under ${dataDir}:\n${mounts.join("\n")}`);
  await rm(dataDir, { recursive: true, force: true });
}

/** Waits until the agent's warm pool holds `ready` sandboxes of the template. */
export async function waitForWarmPool(agent: AgentUnderTest, template: string, ready: number, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pool = (await agent.client.getHostInfo({})).warmPools.find((p) => p.template === template);
    if (pool?.ready === ready) return;
    if (Date.now() > deadline) throw new Error(`warm pool never had ${ready} ready: ${JSON.stringify(pool)}\n${agent.log().slice(-3000)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The Connect code a call fails with (or "ok"). */
export async function codeOf(call: Promise<unknown>): Promise<string> {
  try {
    await call;
    return "ok";
  } catch (err) {
    return Code[ConnectError.from(err).code] ?? "unknown";
  }
}

export const text = (bytes: Uint8Array): string => Buffer.from(bytes).toString();
