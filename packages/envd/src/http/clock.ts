// Sets the sandbox's clock to the host's. A VM restored from a snapshot or from hibernation wakes
// with the clock it had when it was saved; the host tells envd the time in /init's `timestamp`.
// Node cannot call settimeofday(2): date(1) does (coreutils and busybox both take `-s @<seconds>`).
import { execFile } from "node:child_process";

/** Off by less than this, the clock is left alone. */
const TOLERANCE_MS = 500;

export type ClockOutcome = { changed: false; driftMs: number } | { changed: true; driftMs: number } | { changed: false; driftMs: number; error: string };

export async function syncClock(target: Date): Promise<ClockOutcome> {
  const driftMs = target.getTime() - Date.now();
  if (Math.abs(driftMs) < TOLERANCE_MS) return { changed: false, driftMs };
  // Whole seconds: busybox's date refuses `@<seconds>.<fraction>`.
  const seconds = Math.round((Date.now() + driftMs) / 1000);
  return new Promise((resolve) => {
    execFile("date", ["-u", "-s", `@${seconds}`], { timeout: 5000 }, (err, _stdout, stderr) => {
      if (err) resolve({ changed: false, driftMs, error: (stderr || err.message).trim() });
      else resolve({ changed: true, driftMs });
    });
  });
}
