// The control plane runs ahead of the sandboxes in the CPU's queue: on a host that also runs
// sandboxes (`make up`, a one-machine setup), untrusted code busy on every core must not make every
// API call and every proxied call wait for a CPU, as a host's own services go before its workloads.
// On the 2-vCPU benchmark VM the edge proxy's overhead on `commands.run("true")` (gVisor starting
// bash on both cores meanwhile) was 1.7 and 4.5 ms per call at -10, 4.5 and 6.1 ms at 0 (four runs,
// docs/benchmarks.md "Edge proxy" runs 8-10): a hint, within that measure's noise, not a proof.
// Linux keeps niceness per thread: this sets the main thread's, the one that serves requests. Set
// before the embedded PostgreSQL starts, which inherits it. The host agent keeps its priority: the
// sandboxes it starts would inherit a raised one.
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
