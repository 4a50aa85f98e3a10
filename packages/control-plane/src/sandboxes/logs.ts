// A sandbox's logs: what envd printed inside it (E2B's "sandbox logs"), read from the host that
// runs it (GetSandboxLogs). The host keeps them while the sandbox exists, running or paused; once
// it is stopped they are gone, so a stopped sandbox (or one not on a host yet) has none.
import type { SandboxLogEntry } from "@wrenn/proto/hostagent";
import { WrennError } from "../errors.js";
import { callAgent } from "../hosts/agent-client.js";
import type { HostRegistry } from "../hosts/registry.js";
import type { SandboxService } from "./service.js";

/** E2B's log levels, which the host folds envd's into. */
export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface SandboxLog {
  timestamp: Date;
  level: LogLevel;
  message: string;
  fields: Record<string, string>;
  /** The line as envd printed it. */
  line: string;
}

export interface SandboxLogQuery {
  /** Only entries logged at or after this time (ms since the epoch). */
  start?: number;
  /** The most entries returned, oldest first (the host's default 100, at most 1000). */
  limit?: number;
}

/** Reading a file's tail: anything slower means the host is stuck. */
const LOGS_TIMEOUT_MS = 15_000;

/** The team's sandbox's logs, oldest first; another team's sandbox is not_found. */
export async function sandboxLogs(
  services: { sandboxes: SandboxService; registry: HostRegistry },
  teamId: string,
  sandboxId: string,
  query: SandboxLogQuery = {},
): Promise<SandboxLog[]> {
  const sandbox = await services.sandboxes.get(teamId, sandboxId);
  if ((sandbox.status !== "running" && sandbox.status !== "paused") || !sandbox.hostId) return [];
  const { host, client } = await services.registry.connect(sandbox.hostId);
  try {
    const response = await callAgent(
      client.getSandboxLogs({ sandboxId, startUnixMs: BigInt(query.start ?? 0), limit: query.limit ?? 0 }, { timeoutMs: LOGS_TIMEOUT_MS }),
      host.id,
    );
    return response.entries.map(sandboxLog);
  } catch (err) {
    // Gone from its host since the row was read (the reconciler will mark it stopped): no logs left.
    if (err instanceof WrennError && err.code === "not_found") return [];
    throw err;
  }
}

function sandboxLog(entry: SandboxLogEntry): SandboxLog {
  return {
    timestamp: new Date(Number(entry.timestampUnixMs)),
    level: ((LOG_LEVELS as readonly string[]).includes(entry.level) ? entry.level : "info") as LogLevel,
    message: entry.message,
    fields: entry.fields,
    line: entry.line,
  };
}
