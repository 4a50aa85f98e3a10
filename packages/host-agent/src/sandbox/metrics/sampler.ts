// Samples every tracked sandbox's cgroup and disk on a timer and records the points into that
// sandbox's tiers. A sampling failure is logged and skipped: it never reaches the timer.
import { availableParallelism } from "node:os";
import { logger } from "../../logging/logger.js";
import { readCgroupUsage } from "./cgroup.js";
import { SandboxMetrics } from "./tiers.js";

const log = logger.child({ component: "metrics" });

export interface MetricsSource {
  /** The sandbox's host cgroup, e.g. "/wrenn/<sandboxId>". */
  cgroupPath: string;
  /** Bytes the sandbox has written to its disk. */
  diskBytes: () => Promise<number>;
}

export interface MetricsSamplerOptions {
  intervalMs?: number;
  cpuCount?: number;
}

interface Tracked {
  source: MetricsSource;
  metrics: SandboxMetrics;
  /** The previous CPU reading: CPU % is a rate, so it needs two. */
  previous?: { cpuUsageNs: number; wallNs: bigint };
  lastDiskBytes: number;
}

export class MetricsSampler {
  private readonly intervalMs: number;
  private readonly cpuCount: number;
  private readonly tracked = new Map<string, Tracked>();
  private timer: NodeJS.Timeout | undefined;
  private pass: Promise<void> = Promise.resolve();
  private passRunning = false;

  constructor({ intervalMs = 5000, cpuCount = availableParallelism() }: MetricsSamplerOptions = {}) {
    this.intervalMs = intervalMs;
    this.cpuCount = cpuCount;
  }

  /** Starts sampling `sandboxId`; tracking it again replaces its source and keeps its history. */
  track(sandboxId: string, source: MetricsSource): void {
    const existing = this.tracked.get(sandboxId);
    if (existing) {
      if (existing.source.cgroupPath !== source.cgroupPath) existing.previous = undefined;
      existing.source = source;
    } else this.tracked.set(sandboxId, { source, metrics: new SandboxMetrics(), lastDiskBytes: 0 });
  }

  /** Stops sampling and drops the history: flush it first if it is to be kept. */
  untrack(sandboxId: string): void {
    this.tracked.delete(sandboxId);
  }

  metrics(sandboxId: string): SandboxMetrics | undefined {
    return this.tracked.get(sandboxId)?.metrics;
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      // A pass slower than the interval (a slow disk walk) is not stacked up behind.
      if (!this.passRunning) void this.sampleNow();
    }, this.intervalMs);
    // The sampler alone must not keep the process alive.
    this.timer.unref();
  }

  /** Stops the timer; resolves once a pass already under way has recorded what it read. */
  stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    return this.pass;
  }

  /** Samples every tracked sandbox once, after any pass already running. Never rejects. */
  sampleNow(): Promise<void> {
    this.pass = this.pass.then(async () => {
      this.passRunning = true;
      try {
        await Promise.all([...this.tracked].map(([sandboxId, entry]) => this.sample(sandboxId, entry)));
      } finally {
        this.passRunning = false;
      }
    });
    return this.pass;
  }

  private async sample(sandboxId: string, entry: Tracked): Promise<void> {
    try {
      const [{ usage, wallNs }, diskBytes] = await Promise.all([
        // The wall clock is read with the CPU counter, not after a slow disk walk.
        readCgroupUsage(entry.source.cgroupPath).then((usage) => ({ usage, wallNs: process.hrtime.bigint() })),
        entry.source.diskBytes().catch((err: unknown) => {
          log.warn({ sandboxId, err }, "reading disk usage failed; keeping the last value");
          return entry.lastDiskBytes;
        }),
      ]);
      if (this.tracked.get(sandboxId) !== entry) return; // untracked while reading
      entry.lastDiskBytes = diskBytes;
      const timestampUnix = Math.floor(Date.now() / 1000);

      if (!usage) {
        // No cgroup: the sandbox is checkpointed (paused) or stopping. It holds no CPU or memory
        // on this host, and it still gets a point so its charts have no hole.
        entry.previous = undefined;
        entry.metrics.record({ timestampUnix, cpuPct: 0, memBytes: 0, diskBytes });
        return;
      }

      const previous = entry.previous;
      entry.previous = { cpuUsageNs: usage.cpuUsageNs, wallNs };
      // The first reading (or one after the cgroup was recreated, when the counter restarts) has
      // nothing to take a rate against: it only sets the baseline.
      if (!previous || usage.cpuUsageNs < previous.cpuUsageNs) return;
      entry.metrics.record({
        timestampUnix,
        cpuPct: this.cpuPercent(usage.cpuUsageNs - previous.cpuUsageNs, wallNs - previous.wallNs),
        memBytes: usage.memBytes,
        diskBytes,
      });
    } catch (err) {
      log.warn({ sandboxId, err }, "sampling sandbox metrics failed; skipping this sample");
    }
  }

  /**
   * CPU time over wall time, in percent of ONE CPU: a sandbox keeping two CPUs busy reads 200%.
   * That is what `docker stats` and `top` show, and it does not change meaning when the sandbox's
   * CPU limit or the host's CPU count changes; the control plane can divide by the vCPU count.
   * Capped at every host CPU busy, since anything above is timer jitter between the two reads.
   */
  private cpuPercent(cpuDeltaNs: number, wallDeltaNs: bigint): number {
    if (wallDeltaNs <= 0n) return 0;
    const percent = (cpuDeltaNs / Number(wallDeltaNs)) * 100;
    return Math.min(percent, this.cpuCount * 100);
  }
}
