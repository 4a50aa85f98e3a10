// wrenn logs <id>: what envd printed in the sandbox.
import { integer, parse, usageError } from "../command-line/args.js";
import { sandboxHandle } from "../connection/sandbox-handle.js";
import { printJson } from "../output/table.js";

const USAGE = "wrenn logs <id> [--limit N] [--since ISO-TIME] [--follow] [--json]";
const FOLLOW_INTERVAL_MS = 2000;

export async function logs(argv: string[]): Promise<void> {
  const { values, positionals } = parse(
    argv,
    { limit: { type: "string", short: "n" }, since: { type: "string" }, follow: { type: "boolean", short: "f" }, json: { type: "boolean" } },
    USAGE,
    { min: 1, max: 1 },
  );
  let start = values.since === undefined ? 0 : Date.parse(values.since);
  if (Number.isNaN(start)) throw usageError(`--since takes a time such as 2026-01-31T12:00:00Z, got "${values.since}"`, USAGE);
  const limit = integer(values.limit, "limit", USAGE) ?? 1000;
  const sandbox = await sandboxHandle(positionals[0]!);
  let stop = false;
  process.once("SIGINT", () => (stop = true));
  do {
    const result = await sandbox.logs({ start, limit });
    // Following, JSON is one entry per line (NDJSON), as a stream of documents must be.
    if (values.json && values.follow) for (const entry of result.logs) process.stdout.write(JSON.stringify(entry) + "\n");
    else if (values.json) printJson(result);
    else for (const { timestamp, line } of result.logs) process.stdout.write(`${timestamp} ${line}\n`);
    const last = result.logs.at(-1);
    // The next poll starts after the newest line shown (the API's times are milliseconds).
    if (last) start = Date.parse(last.timestamp) + 1;
    if (values.follow) for (let waited = 0; waited < FOLLOW_INTERVAL_MS && !stop; waited += 100) await new Promise((resolve) => setTimeout(resolve, 100));
  } while (values.follow && !stop);
}
