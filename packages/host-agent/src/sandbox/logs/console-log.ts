// A sandbox's console log: envd's stdout and stderr (and tini's, and what runsc says while it
// starts the sandbox), appended by the runtime to <sandboxDir>/bundle/console.log. Reads take
// only its last few MiB; a periodic cap keeps it from growing without bound when envd is chatty.
//
// The cap cannot rename the file away (envd keeps writing to the same open file), so it copies
// the tail to console.log.1 and truncates console.log in place: the writers opened it with
// O_APPEND, so their next line lands at the new end instead of leaving a hole.
import { open, rename, stat, truncate, writeFile } from "node:fs/promises";
import { logger } from "../../logging/logger.js";
import { InvalidRequestError } from "../errors.js";
import { consoleLogOf } from "../runtime/gvisor.js";
import { parseLogLines, type LogEntry } from "./entry.js";

const log = logger.child({ component: "console-log" });

export const DEFAULT_LOG_LIMIT = 100;
export const MAX_LOG_LIMIT = 1000;
/** The most a read looks at, across console.log.1 and console.log. */
export const LOG_READ_MAX_BYTES = 4 * 1024 * 1024;
/** Above this, console.log is capped… */
export const LOG_CAP_BYTES = 8 * 1024 * 1024;
/** …keeping this much of its tail in console.log.1. */
export const LOG_KEEP_BYTES = 2 * 1024 * 1024;

const previousOf = (file: string): string => `${file}.1`;

export interface LogQuery {
  /** Only entries at or after this time (ms since the epoch); 0: from the oldest kept. */
  startMs: number;
  /** 0: DEFAULT_LOG_LIMIT; more than MAX_LOG_LIMIT is cut to it. */
  limit: number;
}

/** The sandbox's log entries from `startMs` on, oldest first, at most `limit` of them. */
export async function readConsoleLog(sandboxDir: string, query: LogQuery): Promise<LogEntry[]> {
  if (!Number.isSafeInteger(query.startMs) || query.startMs < 0) throw new InvalidRequestError(`start must be milliseconds since the epoch (0 or more), got ${query.startMs}`);
  if (!Number.isInteger(query.limit) || query.limit < 0) throw new InvalidRequestError(`limit must be a whole number of at least 0, got ${query.limit}`);
  const limit = Math.min(query.limit || DEFAULT_LOG_LIMIT, MAX_LOG_LIMIT);
  const file = consoleLogOf(sandboxDir);
  const current = await readTail(file, LOG_READ_MAX_BYTES);
  const room = LOG_READ_MAX_BYTES - current.bytes.length;
  const previous = current.cut || room <= 0 ? undefined : await readTail(previousOf(file), room);
  const lines = [...(previous ? linesOf(previous) : []), ...linesOf(current)];
  const modifiedMs = (await stat(file).catch(() => undefined))?.mtimeMs ?? Date.now();
  const entries: LogEntry[] = [];
  for (const entry of parseLogLines(lines, Math.floor(modifiedMs))) {
    if (entry.timestampMs < query.startMs) continue;
    entries.push(entry);
    if (entries.length === limit) break;
  }
  return entries;
}

interface Tail {
  bytes: Buffer;
  /** Whether the file holds more than was read (the first line is then likely partial). */
  cut: boolean;
}

/** The last `maxBytes` of `file`; nothing when it does not exist. */
async function readTail(file: string, maxBytes: number): Promise<Tail> {
  let handle;
  try {
    handle = await open(file, "r");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { bytes: Buffer.alloc(0), cut: false };
    throw err;
  }
  try {
    const { size } = await handle.stat();
    const length = Math.min(size, maxBytes);
    const bytes = Buffer.alloc(length);
    const { bytesRead } = await handle.read(bytes, 0, length, size - length);
    return { bytes: bytes.subarray(0, bytesRead), cut: size > length };
  } finally {
    await handle.close();
  }
}

/** Whole lines of a tail: a cut first line is dropped, as are blank lines. */
function linesOf(tail: Tail): string[] {
  const lines = tail.bytes.toString("utf8").split("\n");
  if (tail.cut) lines.shift();
  return lines.map((line) => line.replace(/\r$/, "")).filter((line) => line.trim() !== "");
}

/**
 * Keeps console.log under LOG_CAP_BYTES: above it, its last LOG_KEEP_BYTES replace console.log.1
 * and console.log starts again empty. A line written between the read and the truncation is lost.
 * Returns whether it capped.
 */
export async function capConsoleLog(sandboxDir: string, limits = { capBytes: LOG_CAP_BYTES, keepBytes: LOG_KEEP_BYTES }): Promise<boolean> {
  const file = consoleLogOf(sandboxDir);
  const size = (await stat(file).catch(() => undefined))?.size ?? 0;
  if (size <= limits.capBytes) return false;
  const tail = await readTail(file, limits.keepBytes);
  await truncate(file, 0);
  const kept = linesOf(tail).join("\n");
  const previous = previousOf(file);
  await writeFile(`${previous}.tmp`, kept ? `${kept}\n` : "", { mode: 0o600 });
  await rename(`${previous}.tmp`, previous);
  return true;
}

/** Caps the console logs of `sandboxes`; a failure is logged and the others still get capped. */
export async function capConsoleLogs(sandboxes: readonly { dir: string; record: { id: string } }[]): Promise<void> {
  for (const sandbox of sandboxes) {
    try {
      if (await capConsoleLog(sandbox.dir)) log.info({ sandboxId: sandbox.record.id, capBytes: LOG_CAP_BYTES }, "console log capped");
    } catch (err) {
      log.warn({ sandboxId: sandbox.record.id, err }, "capping the console log failed");
    }
  }
}
