// Daily usage per team, accumulated as sandboxes run (billing and quotas read it).
import { and, asc, between, eq, sql } from "drizzle-orm";
import type { Db } from "./database.js";
import { usageDaily, type UsageDay } from "./schema.js";

export interface UsageIncrement {
  sandboxSeconds?: number;
  vcpuSeconds?: number;
  memoryGibSeconds?: number;
  diskGibSeconds?: number;
}

export class UsageRepository {
  constructor(private readonly db: Db) {}

  /** Adds to the team's row for `day` ('YYYY-MM-DD', UTC), creating it on first use, atomically. */
  async add(teamId: string, day: string, increment: UsageIncrement): Promise<UsageDay> {
    const values = {
      sandboxSeconds: increment.sandboxSeconds ?? 0,
      vcpuSeconds: increment.vcpuSeconds ?? 0,
      memoryGibSeconds: increment.memoryGibSeconds ?? 0,
      diskGibSeconds: increment.diskGibSeconds ?? 0,
    };
    const [row] = await this.db
      .insert(usageDaily)
      .values({ teamId, day, ...values })
      .onConflictDoUpdate({
        target: [usageDaily.teamId, usageDaily.day],
        set: {
          sandboxSeconds: sql`${usageDaily.sandboxSeconds} + excluded.sandbox_seconds`,
          vcpuSeconds: sql`${usageDaily.vcpuSeconds} + excluded.vcpu_seconds`,
          memoryGibSeconds: sql`${usageDaily.memoryGibSeconds} + excluded.memory_gib_seconds`,
          diskGibSeconds: sql`${usageDaily.diskGibSeconds} + excluded.disk_gib_seconds`,
        },
      })
      .returning();
    return row!;
  }

  /** The team's days from `from` to `to` inclusive, oldest first. */
  async list(teamId: string, from: string, to: string): Promise<UsageDay[]> {
    return this.db
      .select()
      .from(usageDaily)
      .where(and(eq(usageDaily.teamId, teamId), between(usageDaily.day, from, to)))
      .orderBy(asc(usageDaily.day));
  }
}

/** The UTC day of `at` as usage rows key it. */
export function usageDay(at: Date): string {
  return at.toISOString().slice(0, 10);
}
