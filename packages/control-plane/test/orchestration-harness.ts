// The orchestration layer over an in-memory PGlite, with real host agents (child processes from
// the host agent's own harness) added as local hosts.
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import http from "node:http";
import { pino } from "pino";
import { WrennError } from "../src/errors.js";
import { openDatabase, type Database } from "../src/db/database.js";
import { createRepositories, type Repositories } from "../src/db/repositories.js";
import type { Team } from "../src/db/schema.js";
import type { PublicHost } from "../src/hosts/registry.js";
import { createOrchestration, type Orchestration, type OrchestrationOptions } from "../src/orchestration/orchestrator.js";
import type { SandboxServiceHooks } from "../src/sandboxes/service.js";
import { TemplateStore, PLATFORM_TEAM_ID } from "../../host-agent/src/sandbox/storage/templates.js";
import { newDataDir, removeDataDir, skipAgent, startAgentProcess, type AgentUnderTest } from "../../host-agent/test/agent-harness.js";
import { BASH_STATIC, buildBashTemplate } from "../../host-agent/test/template.js";

export { skipAgent, TEST_TEMPLATE } from "../../host-agent/test/agent-harness.js";
export type { AgentUnderTest };

export interface ControlPlaneUnderTest {
  database: Database;
  repos: Repositories;
  orchestration: Orchestration;
  /** Mutable: a test sets a hook for the duration of one case. */
  hooks: SandboxServiceHooks;
  newTeam(): Promise<Team>;
  close(): Promise<void>;
}

export async function startControlPlane(
  options: Partial<Omit<OrchestrationOptions, "db" | "secretKey" | "logger" | "hooks">> = {},
): Promise<ControlPlaneUnderTest> {
  const database = await openDatabase({});
  const repos = createRepositories(database.db);
  const hooks: SandboxServiceHooks = {};
  const orchestration = createOrchestration({
    db: database.db,
    secretKey: randomBytes(32),
    logger: pino({ level: process.env.WRENN_LOG_LEVEL ?? "silent" }),
    hooks: {
      afterMarkPaused: (operation, sandbox) => hooks.afterMarkPaused?.(operation, sandbox) ?? Promise.resolve(),
    },
    ...options,
  });
  let teams = 0;
  return {
    database,
    repos,
    orchestration,
    hooks,
    newTeam: () => repos.teams.create({ name: "Test team", slug: `team-${process.pid}-${++teams}-${randomBytes(3).toString("hex")}` }),
    async close() {
      await orchestration.stop();
      await database.close();
    },
  };
}

/** One agent for a test file: its own pool (inside 10.240.0.0/16) and nftables table. */
export interface ManagedAgent {
  agent: AgentUnderTest;
  pool: string;
  table: string;
  address: string;
}

export async function startManagedAgent(pool: string, table: string, port?: number, dataDir?: string): Promise<ManagedAgent> {
  const agent = await startAgentProcess({ pool, table, dataDir, args: port ? ["--port", String(port)] : [] });
  return { agent, pool, table, address: `127.0.0.1:${agent.port}` };
}

/**
 * The tests' busybox template with Debian's bash-static as /bin/bash: the e2b SDK runs every
 * command in bash (`bash -l -c`) and its terminal as `bash -i -l`.
 */
export const BASH_TEMPLATE = "busybox-bash";
export const skipBash = skipAgent || (!existsSync(BASH_STATIC) ? `needs ${BASH_STATIC} (make system-deps: Debian's bash-static)` : false);

/** An agent whose data dir holds BASH_TEMPLATE as a platform template (removeAgent takes the dir along). */
export async function startBashAgent(pool: string, table: string): Promise<ManagedAgent> {
  const dataDir = await newDataDir();
  try {
    await new TemplateStore(`${dataDir}/templates`).createFrom(BASH_TEMPLATE, { teamId: PLATFORM_TEAM_ID, kind: "base", metadata: {} }, buildBashTemplate);
    return await startManagedAgent(pool, table, undefined, dataDir);
  } catch (err) {
    await removeDataDir(dataDir, table);
    throw err;
  }
}

export async function addAgent(controlPlane: ControlPlaneUnderTest, managed: ManagedAgent): Promise<PublicHost> {
  return controlPlane.orchestration.hosts.addLocalHost(managed.address, managed.agent.token);
}

/** A new agent process on the same data dir and port (the old one must have exited). */
export async function restartAgent(managed: ManagedAgent): Promise<ManagedAgent> {
  return startManagedAgent(managed.pool, managed.table, managed.agent.port, managed.agent.dataDir);
}

const exited = (agent: AgentUnderTest) =>
  new Promise<void>((resolve) => (agent.child.exitCode !== null || agent.child.signalCode !== null ? resolve() : agent.child.once("exit", () => resolve())));

/**
 * Destroys everything the agent ran (restarting it first if it was killed, so its sandboxes are
 * found again) and removes its data dir and nftables table.
 */
export async function removeAgent(managed: ManagedAgent): Promise<void> {
  let { agent } = managed;
  if (agent.child.exitCode !== null || agent.child.signalCode !== null) {
    agent = (await restartAgent(managed)).agent;
  }
  await agent.client.terminate({}).catch(() => undefined);
  await exited(agent);
  await removeDataDir(agent.dataDir, agent.table);
}

/** A control plane with one agent added as its host, and a team: what a file of one-host tests starts with. */
export interface OneHost {
  cp: ControlPlaneUnderTest;
  managed: ManagedAgent;
  hostId: string;
  team: Team;
}

export async function startOneHost(pool: string, table: string): Promise<OneHost> {
  const cp = await startControlPlane();
  try {
    const managed = await startManagedAgent(pool, table);
    const hostId = (await addAgent(cp, managed)).id;
    return { cp, managed, hostId, team: await cp.newTeam() };
  } catch (err) {
    await cp.close();
    throw err;
  }
}

/** Closes what startOneHost started (either may be missing when the start failed). */
export async function stopOneHost(cp: ControlPlaneUnderTest | undefined, managed: ManagedAgent | undefined): Promise<void> {
  await cp?.close();
  if (managed) await removeAgent(managed);
}

/** Polls `check` until it returns a value other than undefined/false. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export const text = (bytes: Uint8Array): string => Buffer.from(bytes).toString();

/** The WrennError code a service call fails with (or "ok"); anything else is rethrown. */
export async function codeOf(call: Promise<unknown>): Promise<string> {
  try {
    await call;
    return "ok";
  } catch (err) {
    if (err instanceof WrennError) return err.code;
    throw err;
  }
}

/** Process.Start of `sh -c <command>` as a Connect JSON server stream to 127.0.0.1:`port` (the API's: `headers` route it); the response, unread. */
export function startProcessRequest(port: number, headers: Record<string, string>, command: string): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: "127.0.0.1",
        port,
        method: "POST",
        path: "/process.Process/Start",
        headers: { ...headers, "content-type": "application/connect+json", "connect-protocol-version": "1" },
        agent: false,
      },
      resolve,
    );
    req.on("error", reject);
    req.end(connectEnvelope({ process: { cmd: "/bin/sh", args: ["-c", command] }, stdin: false }));
  });
}

/** A Connect stream request body with one JSON message: one envelope (flags 0, big-endian length, JSON). */
export function connectEnvelope(message: unknown): Buffer {
  const json = Buffer.from(JSON.stringify(message));
  const head = Buffer.alloc(5);
  head.writeUInt32BE(json.length, 1);
  return Buffer.concat([head, json]);
}
