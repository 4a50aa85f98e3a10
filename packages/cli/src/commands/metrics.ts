// wrenn metrics <id>: CPU, memory and disk; on a terminal a live view with sparklines.
import type { MetricPoint, MetricsRange } from "@wrenn/sdk";
import { parse, usageError } from "../command-line/args.js";
import { sandboxHandle } from "../connection/sandbox-handle.js";
import { formatBytes, formatTable, printJson } from "../output/table.js";

const USAGE = "wrenn metrics <id> [--range 10m|2h|24h] [--once] [--json]";
const BLOCKS = "▁▂▃▄▅▆▇█";
const REFRESH_MS = 5000;

export function sparkline(values: number[], width: number): string {
  const shown = values.slice(-width);
  const max = Math.max(...shown, 1e-9);
  return shown.map((v) => BLOCKS[Math.min(BLOCKS.length - 1, Math.floor((v / max) * (BLOCKS.length - 1)))]).join("");
}

export async function metrics(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, { range: { type: "string" }, once: { type: "boolean" }, json: { type: "boolean" } }, USAGE, { min: 1, max: 1 });
  const range = (values.range ?? "10m") as MetricsRange;
  if (!["10m", "2h", "24h"].includes(range)) throw usageError(`--range is 10m, 2h or 24h`, USAGE);
  const sandbox = await sandboxHandle(positionals[0]!);
  if (values.json) return printJson(await sandbox.metrics({ range }));
  if (values.once || !process.stdout.isTTY) {
    const { points } = await sandbox.metrics({ range });
    process.stdout.write(
      formatTable(
        ["TIME", "CPU", "MEMORY", "DISK"],
        points.map((p) => [p.timestamp, `${p.cpuPercent.toFixed(1)}%`, formatBytes(p.memoryBytes), formatBytes(p.diskBytes)]),
      ),
    );
    return;
  }
  let stop = false;
  process.once("SIGINT", () => (stop = true));
  process.stdout.write("\x1b[?25l"); // hide the cursor while redrawing
  try {
    while (!stop) {
      const { points } = await sandbox.metrics({ range });
      process.stdout.write("\x1b[H\x1b[2J" + render(positionals[0]!, range, points) + "\nCtrl-C to quit\n");
      for (let waited = 0; waited < REFRESH_MS && !stop; waited += 100) await new Promise((resolve) => setTimeout(resolve, 100));
    }
  } finally {
    process.stdout.write("\x1b[?25h\n"); // the cursor back, on a line of its own after the ^C echo
  }
}

function render(id: string, range: string, points: MetricPoint[]): string {
  const width = Math.max(10, (process.stdout.columns || 80) - 30);
  const last = points.at(-1);
  if (!last) return `${id} (${range}): no samples yet\n`;
  const row = (name: string, values: number[], now: string) => `${name.padEnd(7)} ${now.padStart(10)}  ${sparkline(values, width)}\n`;
  return (
    `${id} (${range}, ${points.length} samples, last ${last.timestamp})\n\n` +
    row("cpu", points.map((p) => p.cpuPercent), `${last.cpuPercent.toFixed(1)}%`) +
    row("memory", points.map((p) => p.memoryBytes), formatBytes(last.memoryBytes)) +
    row("disk", points.map((p) => p.diskBytes), formatBytes(last.diskBytes))
  );
}
