// Which templates each host's disk holds, refreshed from the agents' ListTemplates at heartbeats.
import { and, eq, inArray, notInArray, sql } from "drizzle-orm";
import type { Db } from "./database.js";
import { hostTemplates, type HostTemplate } from "./schema.js";
import { catalogVersion } from "./catalog-version.js";

export interface HostTemplateEntry {
  name: string;
  teamId: string;
  kind: string;
  sizeBytes: number;
}

export class HostTemplateRepository {
  constructor(private readonly db: Db) {}

  /** Makes the host's list exactly `entries` (what its agent just reported). */
  async replace(hostId: string, entries: readonly HostTemplateEntry[]): Promise<void> {
    // Placement's cached view changes only when the host gains or loses a name (every heartbeat replaces).
    const changed = await this.db.transaction(async (tx) => {
      const names = entries.map((entry) => entry.name);
      const removed = await tx
        .delete(hostTemplates)
        .where(and(eq(hostTemplates.hostId, hostId), names.length > 0 ? notInArray(hostTemplates.name, names) : undefined))
        .returning({ name: hostTemplates.name });
      if (entries.length === 0) return removed.length > 0;
      const written = await tx
        .insert(hostTemplates)
        .values(entries.map((entry) => ({ hostId, ...entry })))
        .onConflictDoUpdate({
          target: [hostTemplates.hostId, hostTemplates.name],
          set: {
            teamId: sql`excluded.team_id`,
            kind: sql`excluded.kind`,
            sizeBytes: sql`excluded.size_bytes`,
            syncedAt: sql`now()`,
          },
        })
        // xmax is 0 for a row this statement inserted (not updated): a name new to the host.
        .returning({ inserted: sql<boolean>`xmax = 0` });
      return removed.length > 0 || written.some((row) => row.inserted);
    });
    if (changed) catalogVersion.hostsChanged();
  }

  /** Records one template the control plane just wrote to a host (before the next heartbeat sees it). */
  async add(hostId: string, entry: HostTemplateEntry): Promise<void> {
    await this.db
      .insert(hostTemplates)
      .values({ hostId, ...entry })
      .onConflictDoUpdate({
        target: [hostTemplates.hostId, hostTemplates.name],
        set: { teamId: entry.teamId, kind: entry.kind, sizeBytes: entry.sizeBytes, syncedAt: sql`now()` },
      });
    catalogVersion.hostsChanged();
  }

  async remove(hostId: string, name: string): Promise<void> {
    await this.db.delete(hostTemplates).where(and(eq(hostTemplates.hostId, hostId), eq(hostTemplates.name, name)));
    catalogVersion.hostsChanged();
  }

  /** The ids of the hosts holding `name`, among `hostIds` when given. */
  async hostsHolding(name: string, hostIds?: readonly string[]): Promise<string[]> {
    if (hostIds !== undefined && hostIds.length === 0) return [];
    const rows = await this.db
      .select({ hostId: hostTemplates.hostId })
      .from(hostTemplates)
      .where(and(eq(hostTemplates.name, name), hostIds ? inArray(hostTemplates.hostId, [...hostIds]) : undefined));
    return rows.map((row) => row.hostId);
  }

  async listForHost(hostId: string): Promise<HostTemplate[]> {
    return this.db.select().from(hostTemplates).where(eq(hostTemplates.hostId, hostId)).orderBy(hostTemplates.name);
  }
}
