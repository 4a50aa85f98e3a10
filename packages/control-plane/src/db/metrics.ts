// Sandbox metrics flushed from host agents' ring buffers, kept per tier ("10m", "2h", "24h").
import { and, asc, eq, gte, lt } from "drizzle-orm";
import type { Db } from "./database.js";
import { sandboxMetrics, type MetricTier, type SandboxMetric } from "./schema.js";

export interface MetricPoint {
  ts: Date;
  cpuPercent: number;
  memoryBytes: number;
  diskBytes: number;
}

export class MetricsRepository {
  constructor(private readonly db: Db) {}

  /** Stores points; a point already stored (same sandbox, tier, time) is skipped, so a retried flush is harmless. */
  async insert(sandboxId: string, tier: MetricTier, points: readonly MetricPoint[]): Promise<number> {
    if (points.length === 0) return 0;
    const rows = await this.db
      .insert(sandboxMetrics)
      .values(points.map((point) => ({ sandboxId, tier, ...point })))
      .onConflictDoNothing()
      .returning({ ts: sandboxMetrics.ts });
    return rows.length;
  }

  /** One tier's points in time order, from `since` on when given. */
  async list(sandboxId: string, tier: MetricTier, since?: Date): Promise<SandboxMetric[]> {
    return this.db
      .select()
      .from(sandboxMetrics)
      .where(
        and(
          eq(sandboxMetrics.sandboxId, sandboxId),
          eq(sandboxMetrics.tier, tier),
          since ? gte(sandboxMetrics.ts, since) : undefined,
        ),
      )
      .orderBy(asc(sandboxMetrics.ts));
  }

  /** Drops points older than `before` (retention); returns how many. */
  async deleteOlderThan(before: Date): Promise<number> {
    const rows = await this.db
      .delete(sandboxMetrics)
      .where(lt(sandboxMetrics.ts, before))
      .returning({ ts: sandboxMetrics.ts });
    return rows.length;
  }
}
