// Where a sandbox runs, for the edge proxy: its row (team, status, tokens) and its host's
// port proxy, kept in memory for a few seconds so a busy sandbox costs no database read per
// request. Only running sandboxes are kept (a paused or stopped one is read afresh each time, so
// it answers as soon as it runs again); an entry is dropped early when the host shows it stale.
import { LRUCache } from "lru-cache";
import type { SandboxRepository } from "../db/sandboxes.js";
import type { SandboxStatus } from "../db/schema.js";
import type { HostRegistry } from "../hosts/registry.js";

export const SANDBOX_LOCATION_TTL_MS = 3_000;

/** A host's port proxy, as http.request takes it, with the token it wants. */
export interface HostProxy {
  hostname: string;
  port: number;
  token: string;
}

export interface SandboxLocation {
  sandboxId: string;
  teamId: string;
  status: SandboxStatus;
  envdAccessToken: string | null;
  /** Opens the sandbox's own ports (not envd's); null (a sandbox made before it existed) opens none. */
  trafficAccessToken: string | null;
  /** Set when the sandbox runs and its host has a port proxy. */
  hostProxy?: HostProxy;
  /** Why hostProxy is missing although the sandbox runs (its host has no agent or proxy). */
  unreachable?: string;
}

export class SandboxLocator {
  private readonly entries: LRUCache<string, SandboxLocation>;
  /** Lookups in flight, so a burst of requests for one sandbox costs one read. */
  private readonly pending = new Map<string, Promise<SandboxLocation | undefined>>();

  constructor(
    private readonly options: { sandboxes: SandboxRepository; registry: HostRegistry; ttlMs?: number },
  ) {
    this.entries = new LRUCache({ max: 50_000, ttl: options.ttlMs ?? SANDBOX_LOCATION_TTL_MS });
  }

  /** The sandbox (any team's: the caller checks) or undefined when there is none. */
  find(sandboxId: string): Promise<SandboxLocation | undefined> | SandboxLocation {
    const cached = this.entries.get(sandboxId);
    if (cached) return cached;
    let lookup = this.pending.get(sandboxId);
    if (!lookup) {
      lookup = this.lookup(sandboxId).finally(() => this.pending.delete(sandboxId));
      this.pending.set(sandboxId, lookup);
    }
    return lookup;
  }

  /** The next request reads the sandbox afresh (its host no longer has it, or cannot be reached). */
  forget(sandboxId: string): void {
    this.entries.delete(sandboxId);
  }

  private async lookup(sandboxId: string): Promise<SandboxLocation | undefined> {
    const row = await this.options.sandboxes.get(sandboxId);
    if (!row) return undefined;
    const location: SandboxLocation = {
      sandboxId: row.id,
      teamId: row.teamId,
      status: row.status,
      envdAccessToken: row.envdAccessToken,
      trafficAccessToken: row.trafficAccessToken,
    };
    if (row.status !== "running") return location;
    if (!row.hostId) return { ...location, unreachable: "it has no host" };
    try {
      const { host } = await this.options.registry.connect(row.hostId);
      const { baseUrl, token } = this.options.registry.proxyEndpoint(host);
      const url = new URL(baseUrl);
      location.hostProxy = { hostname: url.hostname.replace(/^\[(.*)\]$/, "$1"), port: Number(url.port || 80), token };
    } catch (err) {
      return { ...location, unreachable: (err as Error).message };
    }
    this.entries.set(sandboxId, location);
    return location;
  }
}
