// The audit log: who did what to which resource, append-only.
import { and, desc, eq, lt, or, sql, type SQL } from "drizzle-orm";
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

/**
 * An entry a request will write when it succeeds, handed to the code that does the request's work
 * so it is written off the request's path: in the statement of the request's change, or beside a
 * slow call (an exec), taken back (AuditRepository.withdraw) if the request then fails. Whoever
 * writes it calls `written()` once the request succeeded, and the request's own recording then
 * writes nothing.
 */
export interface PendingAudit {
  entryFor(resourceId: string): NewAuditEntry;
  written(): void;
}

/** The columns an entry fills, in the order auditInsertFrom() writes them. */
const ENTRY_COLUMNS = [
  auditLog.teamId,
  auditLog.actorType,
  auditLog.actorId,
  auditLog.action,
  auditLog.resourceType,
  auditLog.resourceId,
  auditLog.sourceIp,
  auditLog.details,
].map((column) => sql.identifier(column.name));

/**
 * `INSERT INTO audit_log … SELECT … FROM <source>`: the entry once per row of `source` (a CTE of
 * the change it records), so it is written only if the change happened, in the same statement.
 */
export function auditInsertFrom(entry: NewAuditEntry, source: SQL): SQL {
  const values = [
    sql`${entry.teamId}::uuid`,
    sql`${entry.actorType}`,
    sql`${entry.actorId ?? null}`,
    sql`${entry.action}`,
    sql`${entry.resourceType}`,
    sql`${entry.resourceId ?? null}`,
    sql`${entry.sourceIp ?? null}`,
    sql`${JSON.stringify(entry.details ?? {})}::jsonb`,
  ];
  return sql`insert into ${auditLog} (${sql.join(ENTRY_COLUMNS, sql`, `)}) select ${sql.join(values, sql`, `)} from ${source}`;
}

export class AuditRepository {
  constructor(private readonly db: Db) {}

  async record(entry: NewAuditEntry): Promise<AuditEntry> {
    const [row] = await this.db.insert(auditLog).values(entry).returning();
    return row!;
  }

  /**
   * Takes back entries written ahead of the outcome they record (an exec's, written while the
   * command runs; a create's, written with its row) when that outcome did not come: by id, or the
   * entries of `action` on one resource.
   */
  async withdraw(which: { id: number } | { action: string; resourceType: string; resourceId: string }): Promise<void> {
    const where =
      "id" in which
        ? eq(auditLog.id, which.id)
        : and(eq(auditLog.action, which.action), eq(auditLog.resourceType, which.resourceType), eq(auditLog.resourceId, which.resourceId));
    await this.db.delete(auditLog).where(where);
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
