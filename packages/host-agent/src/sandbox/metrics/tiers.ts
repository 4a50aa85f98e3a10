// One sandbox's metrics history in three tiers of fixed size, so memory per sandbox is bounded no
// matter how long it runs. The control plane reads a tier for charts and flushes all three to its
// database before a pause or destroy.
import { RingBuffer } from "./ring-buffer.js";

/** One sample or one average. `timestampUnix` is in seconds; cpuPct is relative to one CPU. */
export interface MetricPoint {
  timestampUnix: number;
  cpuPct: number;
  memBytes: number;
  diskBytes: number;
}

export const METRICS_RANGES = ["10m", "2h", "24h"] as const;
export type MetricsRange = (typeof METRICS_RANGES)[number];

export type MetricsByRange = Record<MetricsRange, MetricPoint[]>;

/** A range other than "10m", "2h" or "24h" was asked for; the edge answers InvalidArgument. */
export class InvalidMetricsRangeError extends Error {
  constructor(readonly range: string) {
    super(`invalid metrics range "${range}": expected one of ${METRICS_RANGES.join(", ")}`);
    this.name = "InvalidMetricsRangeError";
  }
}

export function isMetricsRange(value: string): value is MetricsRange {
  return (METRICS_RANGES as readonly string[]).includes(value);
}

// Tier sizes (with the sampler's 5 s interval):
//   "10m": every sample as taken,      120 points × 5 s    = 10 minutes
//   "2h":  one average per minute,     120 points × 1 min  = 2 hours
//   "24h": one average per 10 minutes, 144 points × 10 min = 24 hours
// Averages are aligned to wall-clock buckets (the point carries the bucket's start), not to
// sample counts, so missed or late samples never shift the buckets.
interface TierSize {
  /** 0 keeps every sample as it is. */
  bucketSeconds: number;
  capacity: number;
}

const TIER_SIZES: Record<MetricsRange, TierSize> = {
  "10m": { bucketSeconds: 0, capacity: 120 },
  "2h": { bucketSeconds: 60, capacity: 120 },
  "24h": { bucketSeconds: 600, capacity: 144 },
};

/** The samples of the bucket still filling up. */
interface OpenBucket {
  start: number;
  count: number;
  cpuPctSum: number;
  memBytesSum: number;
  diskBytes: number;
}

/** cpuPct and memBytes are averaged; diskBytes only grows or shrinks slowly, so the latest stands. */
function averageOf(bucket: OpenBucket): MetricPoint {
  return {
    timestampUnix: bucket.start,
    cpuPct: bucket.cpuPctSum / bucket.count,
    memBytes: Math.round(bucket.memBytesSum / bucket.count),
    diskBytes: bucket.diskBytes,
  };
}

/** One tier: closed buckets in a ring buffer plus the bucket still open. */
class Tier {
  private readonly bucketSeconds: number;
  private readonly closed: RingBuffer<MetricPoint>;
  private open: OpenBucket | undefined;

  constructor({ bucketSeconds, capacity }: TierSize) {
    this.bucketSeconds = bucketSeconds;
    this.closed = new RingBuffer(capacity);
  }

  record(point: MetricPoint): void {
    if (this.bucketSeconds === 0) {
      this.closed.push({ ...point });
      return;
    }
    const start = Math.floor(point.timestampUnix / this.bucketSeconds) * this.bucketSeconds;
    if (this.open && this.open.start !== start) {
      this.closed.push(averageOf(this.open));
      this.open = undefined;
    }
    this.open ??= { start, count: 0, cpuPctSum: 0, memBytesSum: 0, diskBytes: 0 };
    this.open.count += 1;
    this.open.cpuPctSum += point.cpuPct;
    this.open.memBytesSum += point.memBytes;
    this.open.diskBytes = point.diskBytes;
  }

  /**
   * Oldest first. The open bucket is included as the newest point (an average so far), so a
   * flush before pause loses nothing; the tier never returns more than its capacity.
   */
  points(): MetricPoint[] {
    const points = this.closed.toArray();
    if (this.open) points.push(averageOf(this.open));
    return points.length > this.closed.capacity ? points.slice(-this.closed.capacity) : points;
  }

  clear(): void {
    this.closed.clear();
    this.open = undefined;
  }
}

export class SandboxMetrics {
  private readonly tiers: Record<MetricsRange, Tier> = {
    "10m": new Tier(TIER_SIZES["10m"]),
    "2h": new Tier(TIER_SIZES["2h"]),
    "24h": new Tier(TIER_SIZES["24h"]),
  };

  /** Adds one sample to every tier. Samples are expected in time order. */
  record(point: MetricPoint): void {
    for (const range of METRICS_RANGES) this.tiers[range].record(point);
  }

  /** The points of one tier, oldest first; throws InvalidMetricsRangeError for an unknown range. */
  points(range: string): MetricPoint[] {
    if (!isMetricsRange(range)) throw new InvalidMetricsRangeError(range);
    return this.tiers[range].points();
  }

  /** Every tier's points, then empties them all (the caller persists what it got). */
  flush(): MetricsByRange {
    const flushed = { "10m": this.points("10m"), "2h": this.points("2h"), "24h": this.points("24h") };
    for (const range of METRICS_RANGES) this.tiers[range].clear();
    return flushed;
  }
}
