// The audit log: who did what to which resource, append-only.
import { and, desc, eq, lt, or } from "drizzle-orm";
import type { Db } from "./database.js";
import { auditLog, type ActorType, type AuditEntry } from "./schema.js";

export interface NewAuditEntry {
  teamId: string | null;
  actorType: ActorType;
  actorId?: string | null;
  action: string;
  resourceType: string;
  resourceId?: string | null;
  sourceIp?: string | null;
  details?: Record<string, unknown>;
}

export class AuditRepository {
  constructor(private readonly db: Db) {}

  async record(entry: NewAuditEntry): Promise<AuditEntry> {
    const [row] = await this.db.insert(auditLog).values(entry).returning();
    return row!;
  }

  /**
   * The team's entries newest first, optionally only one action or resource type; pass the last
   * entry seen as `before` for the next page.
   */
  async list(
    teamId: string,
    page: { limit?: number; before?: Pick<AuditEntry, "createdAt" | "id">; action?: string; resourceType?: string } = {},
  ): Promise<AuditEntry[]> {
    const limit = Math.min(Math.max(page.limit ?? 100, 1), 1000);
    const before = page.before;
    return this.db
      .select()
      .from(auditLog)
      .where(
        and(
          eq(auditLog.teamId, teamId),
          page.action === undefined ? undefined : eq(auditLog.action, page.action),
          page.resourceType === undefined ? undefined : eq(auditLog.resourceType, page.resourceType),
          before
            ? or(lt(auditLog.createdAt, before.createdAt), and(eq(auditLog.createdAt, before.createdAt), lt(auditLog.id, before.id)))
            : undefined,
        ),
      )
      .orderBy(desc(auditLog.createdAt), desc(auditLog.id))
      .limit(limit);
  }
}
