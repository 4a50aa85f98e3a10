// One line of a sandbox's console as a log entry. envd logs with pino (one JSON object a line:
// numeric `level`, `time` in ms, `msg`, then its own fields); anything else it, tini or runsc
// print is kept as a plain line. Levels are folded into E2B's four so both APIs read the same.

export type LogLevel = "debug" | "info" | "warn" | "error";

export interface LogEntry {
  /** Milliseconds since the epoch. */
  timestampMs: number;
  level: LogLevel;
  message: string;
  /** The line's other fields, each a string (objects as JSON). */
  fields: Record<string, string>;
  /** The line as printed (cut at MAX_LINE_CHARS). */
  line: string;
}

/** A longer line (a runaway dump) is cut: one entry must not fill a whole response. */
export const MAX_LINE_CHARS = 16 * 1024;

/** pino's numeric levels (10 trace … 60 fatal) and its labels, folded into E2B's four. */
function levelOf(value: unknown): LogLevel {
  if (typeof value === "number") return value >= 50 ? "error" : value >= 40 ? "warn" : value >= 30 ? "info" : "debug";
  if (typeof value === "string") {
    const label = value.toLowerCase();
    if (label === "fatal" || label === "error") return "error";
    if (label === "warn" || label === "warning") return "warn";
    if (label === "debug" || label === "trace") return "debug";
  }
  return "info";
}

function timeOf(value: unknown): number | undefined {
  if (typeof value === "number" && Number.isFinite(value)) return value;
  if (typeof value === "string") {
    const parsed = Date.parse(value);
    if (!Number.isNaN(parsed)) return parsed;
  }
  return undefined;
}

type Parsed = Omit<LogEntry, "timestampMs"> & { timestampMs: number | undefined };

/** A structured line when it is a JSON object carrying a pino level or time; otherwise plain. */
function parseLine(raw: string): Parsed {
  const line = raw.length > MAX_LINE_CHARS ? `${raw.slice(0, MAX_LINE_CHARS)}…` : raw;
  if (raw.startsWith("{") && raw.length <= MAX_LINE_CHARS) {
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch {
      value = undefined;
    }
    if (value && typeof value === "object" && !Array.isArray(value) && ("level" in value || "time" in value)) {
      const { level, time, msg, ...rest } = value as Record<string, unknown>;
      const fields: Record<string, string> = {};
      for (const [key, field] of Object.entries(rest)) fields[key] = typeof field === "string" ? field : JSON.stringify(field);
      return { timestampMs: timeOf(time), level: levelOf(level), message: typeof msg === "string" ? msg : "", fields, line };
    }
  }
  return { timestampMs: undefined, level: "info", message: line, fields: {}, line };
}

/**
 * Entries of `lines`, in order. A line without a time of its own takes the time of the closest
 * timed line before it (after it when none is before; `fallbackMs` when no line has one), so a
 * start filter keeps it next to what envd logged around it.
 */
export function parseLogLines(lines: readonly string[], fallbackMs: number): LogEntry[] {
  const parsed = lines.map(parseLine);
  const firstTimed = parsed.find((entry) => entry.timestampMs !== undefined)?.timestampMs ?? fallbackMs;
  let last = firstTimed;
  return parsed.map((entry) => {
    last = entry.timestampMs ?? last;
    return { ...entry, timestampMs: last };
  });
}
