// Hosts running a host agent: registration with a one-time token, heartbeats, health.
import { and, eq, inArray, isNotNull, isNull, lt, or, sql } from "drizzle-orm";
import type { Db } from "./database.js";
import { hostTemplates, hosts, sandboxes, type Host, type HostStatus, type SandboxStatus } from "./schema.js";
import { hashSecret, newSecret } from "./tokens.js";
import { catalogVersion } from "./catalog-version.js";

export const REGISTRATION_TOKEN_PREFIX = "wrn_reg_";
export const HOST_TOKEN_PREFIX = "wrn_host_";

export interface HostCapacity {
  cpu: number;
  memoryMb: number;
  diskMb: number;
  slots: number;
}

/** A ready host as placement sees it: whether it holds the template, and what its sandboxes were given. */
export interface PlacementCandidate {
  host: Host;
  holdsTemplate: boolean;
  /** Sandboxes in the holding statuses on the host, and their memory. */
  sandboxes: number;
  memoryMb: number;
}

export interface HostReport {
  address: string;
  runtimes: string[];
  capacity: HostCapacity;
  /** The agent's port proxy; undefined when the agent reports none. */
  proxyPort?: number;
}

export class HostRepository {
  constructor(private readonly db: Db) {}

  /** A pending host and the one-time token its agent registers with. */
  async create(): Promise<{ host: Host; registrationToken: string }> {
    const registrationToken = newSecret(REGISTRATION_TOKEN_PREFIX);
    const [host] = await this.db
      .insert(hosts)
      .values({ registrationTokenHash: hashSecret(registrationToken) })
      .returning();
    catalogVersion.hostsChanged();
    return { host: host!, registrationToken };
  }

  /** The pending host a registration token was issued for, if it is still unused. */
  async findByRegistrationToken(registrationToken: string): Promise<Host | undefined> {
    if (!registrationToken.startsWith(REGISTRATION_TOKEN_PREFIX)) return undefined;
    const [host] = await this.db
      .select()
      .from(hosts)
      .where(and(eq(hosts.registrationTokenHash, hashSecret(registrationToken)), eq(hosts.status, "pending")));
    return host;
  }

  /**
   * Trades a pending host's registration token for its long-lived token (returned once), and
   * marks it ready. Undefined when the token is unknown or was already used. `agentTokenEncrypted`
   * is the token the control plane will call the agent with, already sealed.
   */
  async register(
    registrationToken: string,
    report: HostReport,
    agentTokenEncrypted?: string,
  ): Promise<{ host: Host; token: string } | undefined> {
    const token = newSecret(HOST_TOKEN_PREFIX);
    const [host] = await this.db
      .update(hosts)
      .set({
        ...reportColumns(report),
        ...(agentTokenEncrypted === undefined ? {} : { agentTokenEncrypted }),
        tokenHash: hashSecret(token),
        registrationTokenHash: null,
        status: "ready",
        lastHeartbeatAt: sql`now()`,
      })
      .where(and(eq(hosts.registrationTokenHash, hashSecret(registrationToken)), eq(hosts.status, "pending")))
      .returning();
    catalogVersion.hostsChanged();
    return host ? { host, token } : undefined;
  }

  /**
   * A host that needs no registration token (its agent runs beside the control plane): created
   * ready with `id` (the id its agent token is sealed to). Fails with a unique violation when a
   * host already has that address.
   */
  async createRegistered(id: string, report: HostReport, agentTokenEncrypted: string): Promise<Host> {
    const [host] = await this.db
      .insert(hosts)
      .values({ id, ...reportColumns(report), agentTokenEncrypted, status: "ready", lastHeartbeatAt: sql`now()` })
      .returning();
    catalogVersion.hostsChanged();
    return host!;
  }

  /** Refreshes what an agent reports and the token to call it with; a pending or unhealthy host becomes ready. */
  async updateAgent(id: string, report: HostReport, agentTokenEncrypted: string): Promise<Host | undefined> {
    const [host] = await this.db
      .update(hosts)
      .set({
        ...reportColumns(report),
        agentTokenEncrypted,
        lastHeartbeatAt: sql`now()`,
        status: sql`CASE WHEN ${hosts.status} = 'draining' THEN 'draining' ELSE 'ready' END`,
      })
      .where(eq(hosts.id, id))
      .returning();
    catalogVersion.hostsChanged();
    return host;
  }

  async findByAddress(address: string): Promise<Host | undefined> {
    const [host] = await this.db.select().from(hosts).where(eq(hosts.address, address));
    return host;
  }

  async findByToken(token: string): Promise<Host | undefined> {
    if (!token.startsWith(HOST_TOKEN_PREFIX)) return undefined;
    const [host] = await this.db.select().from(hosts).where(eq(hosts.tokenHash, hashSecret(token)));
    return host;
  }

  /** Records a heartbeat (and what the agent reports); an unhealthy host that beats again is ready. */
  async heartbeat(id: string, report?: HostReport): Promise<Host | undefined> {
    const [host] = await this.db
      .update(hosts)
      .set({
        ...(report ? reportColumns(report) : {}),
        lastHeartbeatAt: sql`now()`,
        status: sql`CASE WHEN ${hosts.status} = 'unhealthy' THEN 'ready' ELSE ${hosts.status} END`,
      })
      .where(and(eq(hosts.id, id), inArray(hosts.status, ["ready", "unhealthy", "draining"])))
      .returning();
    return host;
  }

  /** Ready hosts silent since `staleBefore` become unhealthy; returns them. */
  async markSilentUnhealthy(staleBefore: Date): Promise<Host[]> {
    const marked = await this.db
      .update(hosts)
      .set({ status: "unhealthy" })
      .where(
        and(
          eq(hosts.status, "ready"),
          or(isNull(hosts.lastHeartbeatAt), lt(hosts.lastHeartbeatAt, staleBefore)),
        ),
      )
      .returning();
    if (marked.length > 0) catalogVersion.hostsChanged();
    return marked;
  }

  /** Compare-and-set of the status, like SandboxRepository.transition. */
  async transition(id: string, change: { from: readonly HostStatus[]; to: HostStatus }): Promise<Host | undefined> {
    if (change.from.length === 0) return undefined;
    const [host] = await this.db
      .update(hosts)
      .set({ status: change.to })
      .where(and(eq(hosts.id, id), inArray(hosts.status, [...change.from])))
      .returning();
    if (host) catalogVersion.hostsChanged();
    return host;
  }

  async get(id: string): Promise<Host | undefined> {
    const [host] = await this.db.select().from(hosts).where(eq(hosts.id, id));
    return host;
  }

  /**
   * Every ready host with, in the same query, whether it holds `hostTemplateName` and the load of
   * its sandboxes in `holding` statuses: placement's whole view in one round trip.
   */
  async placementCandidates(hostTemplateName: string, holding: readonly SandboxStatus[]): Promise<PlacementCandidate[]> {
    const load = this.db
      .select({
        hostId: sandboxes.hostId,
        sandboxes: sql<number>`count(*)::int`.as("load_sandboxes"),
        memoryMb: sql<number>`coalesce(sum(${sandboxes.memoryMb}), 0)::int`.as("load_memory_mb"),
      })
      .from(sandboxes)
      .where(and(holding.length > 0 ? inArray(sandboxes.status, [...holding]) : sql`false`, isNotNull(sandboxes.hostId)))
      .groupBy(sandboxes.hostId)
      .as("load");
    const rows = await this.db
      .select({
        host: hosts,
        holdsTemplate: sql<boolean>`exists (select 1 from ${hostTemplates} where ${hostTemplates.hostId} = ${hosts.id} and ${hostTemplates.name} = ${hostTemplateName})`,
        sandboxes: load.sandboxes,
        memoryMb: load.memoryMb,
      })
      .from(hosts)
      .leftJoin(load, eq(load.hostId, hosts.id))
      .where(eq(hosts.status, "ready"))
      .orderBy(hosts.createdAt, hosts.id);
    return rows.map((row) => ({ host: row.host, holdsTemplate: row.holdsTemplate, sandboxes: row.sandboxes ?? 0, memoryMb: row.memoryMb ?? 0 }));
  }

  async list(statuses?: readonly HostStatus[]): Promise<Host[]> {
    return this.db
      .select()
      .from(hosts)
      .where(statuses ? inArray(hosts.status, [...statuses]) : undefined)
      .orderBy(hosts.createdAt, hosts.id);
  }

  /** Removes the host; its sandboxes and templates keep their rows with host_id cleared. */
  async delete(id: string): Promise<boolean> {
    const rows = await this.db.delete(hosts).where(eq(hosts.id, id)).returning({ id: hosts.id });
    catalogVersion.hostsChanged();
    return rows.length > 0;
  }
}

function reportColumns(report: HostReport) {
  return {
    address: report.address,
    runtimes: report.runtimes,
    cpu: report.capacity.cpu,
    memoryMb: report.capacity.memoryMb,
    diskMb: report.capacity.diskMb,
    slots: report.capacity.slots,
    ...(report.proxyPort === undefined ? {} : { proxyPort: report.proxyPort }),
  };
}
