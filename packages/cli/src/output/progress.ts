// A progress bar on stderr for large transfers, only when stderr is a terminal.
import { Transform } from "node:stream";
import { formatBytes } from "./table.js";

const LARGE_BYTES = 8 * 1024 * 1024;
const REDRAW_MS = 100;

/** A pass-through stream that draws `label [#####     ] 42% 12 MiB/30 MiB` as bytes go through. */
export function progressStream(label: string, totalBytes: number | undefined): Transform {
  const show = process.stderr.isTTY === true && (totalBytes === undefined || totalBytes >= LARGE_BYTES);
  let done = 0;
  let drawnAt = 0;
  const draw = (final: boolean) => {
    if (!show) return;
    const width = Math.max(10, Math.min(40, (process.stderr.columns ?? 80) - label.length - 40));
    const fraction = totalBytes ? Math.min(1, done / totalBytes) : 0;
    const bar = totalBytes ? `[${"#".repeat(Math.round(fraction * width)).padEnd(width)}] ${String(Math.floor(fraction * 100)).padStart(3)}% ` : "";
    process.stderr.write(`\r${label} ${bar}${formatBytes(done)}${totalBytes ? `/${formatBytes(totalBytes)}` : ""}\x1b[K${final ? "\n" : ""}`);
  };
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      done += chunk.length;
      const now = Date.now();
      if (now - drawnAt >= REDRAW_MS) {
        drawnAt = now;
        draw(false);
      }
      callback(null, chunk);
    },
    flush(callback) {
      draw(true);
      callback();
    },
  });
}
