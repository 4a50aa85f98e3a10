// Sandboxes: rows written by the API and the reconciler; every status change is a compare-and-set.
import { and, desc, eq, inArray, lte, sql, type SQL } from "drizzle-orm";
import { PgDialect } from "drizzle-orm/pg-core";
import { auditInsertFrom, type NewAuditEntry } from "./audit.js";
import { rawRows, type Db, type RawStatement } from "./database.js";
import { sandboxes, type NewSandbox, type Sandbox, type SandboxRuntime, type SandboxStatus } from "./schema.js";

type ChangeableColumns = Omit<NewSandbox, "id" | "teamId" | "status" | "createdAt" | "statusChangedAt">;
/** Columns a transition may set besides the status (the id, team and creation time never change): values, or SQL over the row. */
export type SandboxChanges = { [Column in keyof ChangeableColumns]?: ChangeableColumns[Column] | SQL };

export interface SandboxFilter {
  teamId?: string;
  hostId?: string;
  statuses?: SandboxStatus[];
  /** Every key/value given must be in the sandbox's metadata (jsonb @>). */
  metadata?: Record<string, string>;
}

export interface SandboxPageRequest extends SandboxFilter {
  /** `nextCursor` of the previous page. */
  cursor?: string;
  /** 1..1000, default 100. */
  limit?: number;
}

export interface SandboxPage {
  sandboxes: Sandbox[];
  /** Present when more rows may follow. */
  nextCursor?: string;
}

/** A page as list() gives it, each row already rendered by the database as a JSON text. */
export interface SandboxJsonPage {
  /** A JSON array of the rows, each as the view expression rendered it. */
  json: string;
  nextCursor?: string;
}

export class InvalidCursorError extends Error {
  readonly code = "invalid_argument";
  constructor(cursor: string) {
    super(`invalid pagination cursor ${JSON.stringify(cursor)}`);
    this.name = "InvalidCursorError";
  }
}

const DEFAULT_LIMIT = 100;
const MAX_LIMIT = 1000;

/** What a host answered for a sandbox it created: the columns its `running` mark sets. */
export interface StartedOnHost {
  hostId: string;
  hostIp: string | null;
  envdVersion: string | null;
  runtime: SandboxRuntime | null;
  startedAt: Date;
}

/**
 * The `running` mark that follows every create (markStarted), built once per database handle and
 * prepared by name on each connection: drizzle takes ~0.4 ms of CPU to build an UPDATE's text
 * (measured warm on these machines), spent right when the create's caller sends its next request.
 */
const preparedMarks = new WeakMap<Db, ReturnType<typeof prepareMark>>();

function prepareMark(db: Db) {
  const value = (name: string) => sql`${sql.placeholder(name)}`;
  return db
    .update(sandboxes)
    .set({
      hostId: value("hostId"),
      hostIp: value("hostIp"),
      envdVersion: value("envdVersion"),
      runtime: value("runtime"),
      startedAt: sql`${sql.placeholder("startedAt")}::timestamptz`,
      runningSince: sql`coalesce(${sandboxes.runningSince}, ${sql.placeholder("startedAt")}::timestamptz)`,
      status: "running",
      statusChangedAt: sql`now()`,
    })
    // Evaluated for the matching row only: its commit does not wait for the WAL flush.
    .where(and(eq(sandboxes.id, sql.placeholder("id")), eq(sandboxes.status, "starting"), sql`set_config('synchronous_commit', 'off', true) = 'off'`))
    .returning()
    .prepare("wrenn_mark_started");
}

export class SandboxRepository {
  constructor(private readonly db: Db) {}

  /** Inserts the row; with `audit`, the entry goes into the audit log in the same statement. */
  async create(sandbox: Omit<NewSandbox, "statusChangedAt">, audit?: NewAuditEntry): Promise<Sandbox> {
    const insert = this.db.insert(sandboxes).values(sandbox).returning();
    if (!audit) return (await insert)[0]!;
    const inserted = this.db.$with("inserted").as(insert);
    const audited = this.db.$with("audited", {}).as(auditInsertFrom(audit, sql`${inserted}`));
    const [row] = await this.db.with(inserted, audited).select().from(inserted);
    return row!;
  }

  async get(id: string): Promise<Sandbox | undefined> {
    const [row] = await this.db.select().from(sandboxes).where(eq(sandboxes.id, id));
    return row;
  }

  /** The sandbox only if it belongs to `teamId`: what the API shows a team. */
  async getForTeam(teamId: string, id: string): Promise<Sandbox | undefined> {
    const [row] = await this.db
      .select()
      .from(sandboxes)
      .where(and(eq(sandboxes.id, id), eq(sandboxes.teamId, teamId)));
    return row;
  }

  /** The row, locked until the surrounding transaction ends: for a change that reads before it writes. */
  async getForUpdate(id: string): Promise<Sandbox | undefined> {
    const [row] = await this.db.select().from(sandboxes).where(eq(sandboxes.id, id)).for("update");
    return row;
  }

  /**
   * Moves the sandbox to `to` only if its status is still one of `from`, in one statement, so two
   * writers (an API call and the reconciler) cannot both win. Returns the updated row, or
   * undefined when the sandbox is gone or was in another status. With `unchangedSince`, it also
   * fails when the status changed after that time (a writer acting on an older observation).
   */
  async transition(
    id: string,
    change: { from: readonly SandboxStatus[]; to: SandboxStatus; set?: SandboxChanges; unchangedSince?: Date; audit?: NewAuditEntry; flushLater?: boolean },
  ): Promise<Sandbox | undefined> {
    if (change.from.length === 0) return undefined;
    const update = this.db
      .update(sandboxes)
      .set({ ...change.set, status: change.to, statusChangedAt: sql`now()` })
      .where(
        and(
          eq(sandboxes.id, id),
          inArray(sandboxes.status, [...change.from]),
          change.unchangedSince ? lte(sandboxes.statusChangedAt, change.unchangedSince) : undefined,
          // Evaluated for the matching row only, inside the statement's own transaction.
          change.flushLater ? sql`set_config('synchronous_commit', 'off', true) = 'off'` : undefined,
        ),
      )
      .returning();
    if (!change.audit) return (await update)[0];
    // The audit entry rides on the same statement, written only if the update matched.
    const updated = this.db.$with("updated").as(update);
    const audited = this.db.$with("audited", {}).as(auditInsertFrom(change.audit, sql`${updated}`));
    const [row] = await this.db.with(updated, audited).select().from(updated);
    return row;
  }

  /**
   * `starting` → `running` with what the host answered, committed asynchronously: the same
   * compare-and-set as transition(id, { from: ["starting"], to: "running", set, flushLater: true })
   * with its run segment (`runningSince`) opened when the host started it, one prepared statement.
   */
  async markStarted(id: string, started: StartedOnHost): Promise<Sandbox | undefined> {
    let prepared = preparedMarks.get(this.db);
    if (!prepared) preparedMarks.set(this.db, (prepared = prepareMark(this.db)));
    const [row] = await prepared.execute({ id, ...started, startedAt: started.startedAt.toISOString() });
    return row;
  }

  /** The rows of these ids (any team): for matching what a host reports. */
  async listByIds(ids: readonly string[]): Promise<Sandbox[]> {
    if (ids.length === 0) return [];
    return this.db.select().from(sandboxes).where(inArray(sandboxes.id, [...ids]));
  }

  /**
   * The database server's clock, now (not the transaction's start): the reference the reconciler
   * compares status_changed_at with, so the control plane's own clock never enters the comparison.
   */
  async clock(): Promise<Date> {
    const [row] = await this.db.select({ now: sql<Date | string>`clock_timestamp()` }).from(sql`(SELECT 1) AS one`);
    return new Date(row!.now);
  }

  /** Changes columns other than the status (e.g. the timeout), whatever the status is. */
  async update(id: string, set: SandboxChanges): Promise<Sandbox | undefined> {
    const [row] = await this.db.update(sandboxes).set(set).where(eq(sandboxes.id, id)).returning();
    return row;
  }

  /** Newest first, `limit` at a time. */
  async list(request: SandboxPageRequest = {}): Promise<SandboxPage> {
    const limit = pageLimit(request);
    const rows = await this.db
      .select()
      .from(sandboxes)
      .where(and(...pageConditions(request)))
      .orderBy(desc(sandboxes.createdAt), desc(sandboxes.id))
      .limit(limit + 1);
    if (rows.length <= limit) return { sandboxes: rows };
    const page = rows.slice(0, limit);
    const last = page[page.length - 1]!;
    return { sandboxes: page, nextCursor: encodeCursor(last) };
  }

  /**
   * The page list() would give, each row rendered by PostgreSQL through `view` (an expression over
   * the sandboxes row, e.g. json_build_object(...)) into one JSON text: the API's hottest read
   * then parses, maps and re-serializes no column in the control plane, one query either way.
   */
  async listJson(request: SandboxPageRequest, view: SQL): Promise<SandboxJsonPage> {
    const rows = await rawRows<{ items: string; more: boolean; last_created_at: Date | string | null; last_id: string | null }>(this.db, listStatement(request, view));
    const row = rows[0]!; // an aggregate: always one row
    if (!row.more || row.last_created_at === null || row.last_id === null) return { json: row.items };
    return { json: row.items, nextCursor: encodeCursor({ createdAt: new Date(row.last_created_at), id: row.last_id }) };
  }

  /** Every sandbox matching the filter, unpaginated: for the reconciler's per-host sweep. */
  async listAll(filter: SandboxFilter): Promise<Sandbox[]> {
    return this.db
      .select()
      .from(sandboxes)
      .where(and(...filterConditions(filter)))
      .orderBy(sandboxes.createdAt, sandboxes.id);
  }

  async countByStatus(teamId: string, statuses: readonly SandboxStatus[]): Promise<number> {
    const [row] = await this.db
      .select({ count: sql<number>`count(*)::int` })
      .from(sandboxes)
      .where(and(eq(sandboxes.teamId, teamId), inArray(sandboxes.status, [...statuses])));
    return row?.count ?? 0;
  }
}

function filterConditions(filter: SandboxFilter): SQL[] {
  const conditions: SQL[] = [];
  if (filter.teamId !== undefined) conditions.push(eq(sandboxes.teamId, filter.teamId));
  if (filter.hostId !== undefined) conditions.push(eq(sandboxes.hostId, filter.hostId));
  if (filter.statuses !== undefined) {
    conditions.push(filter.statuses.length > 0 ? inArray(sandboxes.status, filter.statuses) : sql`false`);
  }
  if (filter.metadata !== undefined && Object.keys(filter.metadata).length > 0) {
    conditions.push(sql`${sandboxes.metadata} @> ${JSON.stringify(filter.metadata)}::jsonb`);
  }
  return conditions;
}

const pageLimit = (request: SandboxPageRequest) => Math.min(Math.max(request.limit ?? DEFAULT_LIMIT, 1), MAX_LIMIT);

/** The filter's conditions, and the cursor's: rows after the previous page's last, in (created_at, id) desc order. */
function pageConditions(request: SandboxPageRequest): SQL[] {
  const conditions = filterConditions(request);
  if (request.cursor !== undefined) {
    const { createdAt, id } = decodeCursor(request.cursor);
    conditions.push(sql`(${sandboxes.createdAt}, ${sandboxes.id}) < (${createdAt.toISOString()}::timestamptz, ${id})`);
  }
  return conditions;
}

const renderedViews = new WeakMap<SQL, string>();
/** Statement names by text: one prepared statement per shape of filter. */
const listStatementNames = new Map<string, string>();

/**
 * listJson's statement: the same filter and cursor as pageConditions, as text with `$n`
 * parameters, its view rendered once, run on the driver's own client and prepared by name on
 * PostgreSQL (rawRows). Drizzle building this statement on every request (a view of ~30 columns)
 * was ~23% of the control plane's CPU under read load (perf record over autocannon); this builds
 * it by string concatenation, and PostgreSQL parses it once per connection.
 */
function listStatement(request: SandboxPageRequest, view: SQL): RawStatement {
  let viewText = renderedViews.get(view);
  if (viewText === undefined) {
    const query = new PgDialect().sqlToQuery(view);
    if (query.params.length > 0) throw new Error("the list's view must hold no parameters");
    renderedViews.set(view, (viewText = query.sql));
  }
  const values: unknown[] = [];
  const param = (value: unknown) => `$${values.push(value)}`;
  const where = ["true"];
  if (request.teamId !== undefined) where.push(`"team_id" = ${param(request.teamId)}`);
  if (request.hostId !== undefined) where.push(`"host_id" = ${param(request.hostId)}`);
  if (request.statuses !== undefined) where.push(request.statuses.length > 0 ? `"status" in (${request.statuses.map(param).join(", ")})` : "false");
  if (request.metadata !== undefined && Object.keys(request.metadata).length > 0) where.push(`"metadata" @> ${param(JSON.stringify(request.metadata))}::jsonb`);
  if (request.cursor !== undefined) {
    const { createdAt, id } = decodeCursor(request.cursor);
    where.push(`("created_at", "id") < (${param(createdAt.toISOString())}::timestamptz, ${param(id)})`);
  }
  const limit = pageLimit(request);
  const [more, last] = [param(limit + 1), param(limit)];
  const text = `with page as (
  select ${viewText} as item, "created_at", "id", row_number() over (order by "created_at" desc, "id" desc) as rn
  from "sandboxes" where ${where.join(" and ")}
  order by "created_at" desc, "id" desc limit ${more}
)
select coalesce(json_agg(item order by rn) filter (where rn <= ${last}), '[]')::text as items,
       count(*) > ${last} as more,
       max(created_at) filter (where rn = ${last}) as last_created_at,
       max(id) filter (where rn = ${last}) as last_id
from page`;
  let name = listStatementNames.get(text);
  if (name === undefined) listStatementNames.set(text, (name = `wrenn_list_${listStatementNames.size}`));
  return { name, text, values };
}

// Opaque to clients: base64url of "<created_at ms>:<id>" (ids contain no ':').
function encodeCursor(sandbox: Pick<Sandbox, "createdAt" | "id">): string {
  return Buffer.from(`${sandbox.createdAt.getTime()}:${sandbox.id}`).toString("base64url");
}

function decodeCursor(cursor: string): { createdAt: Date; id: string } {
  const decoded = Buffer.from(cursor, "base64url").toString("utf8");
  const separator = decoded.indexOf(":");
  const millis = Number(decoded.slice(0, separator));
  const id = decoded.slice(separator + 1);
  if (separator <= 0 || !Number.isSafeInteger(millis) || id === "") throw new InvalidCursorError(cursor);
  return { createdAt: new Date(millis), id };
}
