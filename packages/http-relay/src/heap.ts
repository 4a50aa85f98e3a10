// How a relaying process's V8 heap grows. Every chunk a proxy reads from a socket is a new 64 KiB
// Buffer whose memory lives outside the V8 heap but is counted against the old generation's limit
// once it has lived through a scavenge (a chunk waiting for a slow client). V8 sets that limit
// from the live heap times a growing factor it picks from GC and mutator speed; in the control
// plane (~40 MB live) it picked ~1.1 after its heap settled, leaving a few MB of room: a 256 MiB
// download through the edge proxy then ran a full mark-compact every ~16 MiB (16 per transfer,
// --trace-gc), 0.8-1.2 s of CPU where a bare relay spent 0.2-0.4 s, and moved 1.6x slower than
// the relay beside it (docs/benchmarks.md, Edge proxy, run 18). A fixed factor of 2 (old
// generation up to twice the live heap: ~40 MB more here) leaves room for the chunks in flight:
// no mark-compacts in the same transfers, and the relay's CPU and speed.
import { setFlagsFromString } from "node:v8";

/** The old generation may grow to (1 + this / 100) times the heap live after a full GC. */
const RELAY_HEAP_GROWING_PERCENT = 100;

/**
 * Fixes V8's heap growing factor for a process that relays bulk traffic. Call first thing in
 * main: V8 reads the flag at every full GC, so it holds from the next one on.
 */
export function growHeapForRelaying(): void {
  setFlagsFromString(`--heap-growing-percent=${RELAY_HEAP_GROWING_PERCENT}`);
}
