// Template builds and their logs, written as a build runs so its status and log outlive the
// control plane process that ran it. A log is one row per event, appended in batches; `seq` orders it.
import { and, desc, eq, ne, notInArray, sql } from "drizzle-orm";
import type { Db } from "./database.js";
import { templateBuildEvents, templateBuilds, type TemplateBuildRow } from "./schema.js";

export type BuildLogEvent = Record<string, unknown>;

export interface NewTemplateBuild {
  id: string;
  teamId: string;
  name: string;
  baseTemplate: string;
  steps: string[];
  templateId: string;
  startedAt?: Date;
}

export interface BuildOutcome {
  status: "ready" | "failed";
  error?: string | null;
  /** When it ended, as its runner saw it (the database's clock when absent). */
  finishedAt?: Date;
  /** The build's last event, written with the outcome (recovery adds the `failed` line this way). */
  lastEvent?: BuildLogEvent;
}

const DEFAULT_LIST_LIMIT = 100;

export class TemplateBuildRepository {
  constructor(private readonly db: Db) {}

  async create(build: NewTemplateBuild): Promise<TemplateBuildRow> {
    const [row] = await this.db.insert(templateBuilds).values(build).returning();
    return row!;
  }

  /** The team's build, or undefined (another team's is undefined too). */
  async get(teamId: string, id: string): Promise<TemplateBuildRow | undefined> {
    const [row] = await this.db
      .select()
      .from(templateBuilds)
      .where(and(eq(templateBuilds.teamId, teamId), eq(templateBuilds.id, id)));
    return row;
  }

  /** The team's builds, newest first. */
  async listForTeam(teamId: string, limit = DEFAULT_LIST_LIMIT): Promise<TemplateBuildRow[]> {
    return this.db
      .select()
      .from(templateBuilds)
      .where(eq(templateBuilds.teamId, teamId))
      .orderBy(desc(templateBuilds.startedAt), desc(templateBuilds.id))
      .limit(limit);
  }

  /** Every build still marked building, oldest first. */
  async listBuilding(): Promise<TemplateBuildRow[]> {
    return this.db.select().from(templateBuilds).where(eq(templateBuilds.status, "building")).orderBy(templateBuilds.startedAt);
  }

  async setSandbox(id: string, sandboxId: string): Promise<void> {
    await this.db.update(templateBuilds).set({ sandboxId }).where(eq(templateBuilds.id, id));
  }

  /** Appends events `firstSeq`, `firstSeq + 1`, …; a batch written twice (a retry) is written once. */
  async appendEvents(buildId: string, firstSeq: number, events: readonly BuildLogEvent[]): Promise<void> {
    if (events.length === 0) return;
    await this.db
      .insert(templateBuildEvents)
      .values(events.map((event, index) => ({ buildId, seq: firstSeq + index, event })))
      .onConflictDoNothing();
  }

  /** The build's log, in order. */
  async events(buildId: string): Promise<BuildLogEvent[]> {
    const rows = await this.db
      .select({ event: templateBuildEvents.event })
      .from(templateBuildEvents)
      .where(eq(templateBuildEvents.buildId, buildId))
      .orderBy(templateBuildEvents.seq);
    return rows.map((row) => row.event);
  }

  /**
   * Ends a build that is still building (compare-and-set: a build ends once), with `lastEvent`
   * appended after its log. Returns undefined when it had already ended.
   */
  async finish(id: string, outcome: BuildOutcome): Promise<TemplateBuildRow | undefined> {
    return this.db.transaction(async (tx) => {
      const [row] = await tx
        .update(templateBuilds)
        .set({ status: outcome.status, error: outcome.error ?? null, finishedAt: outcome.finishedAt ?? sql`now()` })
        .where(and(eq(templateBuilds.id, id), eq(templateBuilds.status, "building")))
        .returning();
      if (!row || !outcome.lastEvent) return row;
      const [{ next }] = (await tx
        .select({ next: sql<number>`coalesce(max(${templateBuildEvents.seq}) + 1, 0)::int` })
        .from(templateBuildEvents)
        .where(eq(templateBuildEvents.buildId, id))) as [{ next: number }];
      await tx.insert(templateBuildEvents).values({ buildId: id, seq: next, event: outcome.lastEvent });
      return row;
    });
  }

  /** Deletes the team's finished builds (and their logs) beyond the newest `keep`; returns how many. */
  async pruneFinished(teamId: string, keep: number): Promise<number> {
    const kept = this.db
      .select({ id: templateBuilds.id })
      .from(templateBuilds)
      .where(and(eq(templateBuilds.teamId, teamId), ne(templateBuilds.status, "building")))
      .orderBy(desc(templateBuilds.startedAt), desc(templateBuilds.id))
      .limit(keep);
    const removed = await this.db
      .delete(templateBuilds)
      .where(and(eq(templateBuilds.teamId, teamId), ne(templateBuilds.status, "building"), notInArray(templateBuilds.id, kept)))
      .returning({ id: templateBuilds.id });
    return removed.length;
  }
}
