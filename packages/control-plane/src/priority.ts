// The control plane runs ahead of the sandboxes in the CPU's queue. On a host that also runs
// sandboxes (`make up`, a one-machine setup), untrusted code busy on every core otherwise makes
// every API call and every proxied envd call wait for a CPU: measured on the 2-vCPU benchmark VM,
// the edge proxy's overhead on `commands.run("true")` (gVisor starting bash on both cores) fell
// from 4.5 to 1.7 ms per call at nice -10 (docs/benchmarks.md, edge proxy run 9). Set before the
// embedded PostgreSQL starts, which inherits it. The host agent is left alone: the sandboxes it
// starts would inherit its priority.
import { getPriority, setPriority } from "node:os";
import type { Logger } from "pino";

/** The niceness the control plane asks for unless WRENN_NICE says otherwise (root only: others keep theirs). */
export const DEFAULT_CONTROL_PLANE_NICE = -10;

/** Sets this process's niceness; returns the one it runs at. */
export function applyNice(nice: number, logger: Logger): number {
  try {
    setPriority(nice);
  } catch (err) {
    logger.info({ nice, reason: (err as Error).message }, "keeping the inherited CPU priority (raising it needs root)");
  }
  return getPriority();
}
