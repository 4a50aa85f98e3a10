// Where a sandbox runs, for the edge proxy: its row (team, status, tokens) and its host's
// port proxy, kept in memory for a few seconds so a busy sandbox costs no database read per
// request. Only running sandboxes are kept (a paused or stopped one is read afresh each time, so
// it answers as soon as it runs again); an entry is dropped early when the host shows it stale.
//
// When the host's agent listens on loopback it shares this machine (and network namespace) with
// the control plane, and envd can be reached at the sandbox's own address without the host's port
// proxy in between (edge-proxy.ts, "direct"). Only with the host's word: each lookup asks the host
// (PingSandbox, which also counts as activity) that the sandbox runs and where.
import { isIP } from "node:net";
import { LRUCache } from "lru-cache";
import type { SandboxRepository } from "../db/sandboxes.js";
import type { SandboxStatus } from "../db/schema.js";
import { callAgent } from "../hosts/agent-client.js";
import type { HostRegistry } from "../hosts/registry.js";

export const SANDBOX_LOCATION_TTL_MS = 3_000;
/**
 * envd is reached directly only for a sandbox whose timeout is at least this (or none): the
 * lookup's ping touched it, so it cannot auto-pause while its entry (SANDBOX_LOCATION_TTL_MS) lives.
 */
const DIRECT_MIN_TIMEOUT_SEC = 10;
/** A host that does not answer the lookup's ping within this is reached through its port proxy. */
const PING_TIMEOUT_MS = 2_000;

/** A host's port proxy, as http.request takes it, with the token it wants. */
export interface HostProxy {
  hostname: string;
  port: number;
  token: string;
}

export interface SandboxLocation {
  sandboxId: string;
  teamId: string;
  /** The host it runs on, when it has one. */
  hostId?: string;
  status: SandboxStatus;
  envdAccessToken: string | null;
  /** Opens the sandbox's own ports (not envd's); null (a sandbox made before it existed) opens none. */
  trafficAccessToken: string | null;
  /** Set when the sandbox runs and its host has a port proxy. */
  hostProxy?: HostProxy;
  /** Why hostProxy is missing although the sandbox runs (its host has no agent or proxy). */
  unreachable?: string;
  /** The sandbox's address, where envd answers this process directly (its host is this machine and says it runs). */
  envdDirect?: { address: string };
  /** When the lookup's PingSandbox answered (Date.now()): that ping also told the host of activity. */
  pingedAt?: number;
  /** The sandbox's inactivity timeout when looked up (0: none). */
  timeoutSec?: number;
}

/** Whether a host's agent, at `hostname`, shares this machine's loopback (and so its routes to sandboxes). */
export function isLoopbackHost(hostname: string): boolean {
  if (hostname === "localhost") return true;
  if (isIP(hostname) === 4) return hostname.startsWith("127.");
  return hostname === "::1";
}

export class SandboxLocator {
  private readonly entries: LRUCache<string, SandboxLocation>;
  /** Lookups in flight, so a burst of requests for one sandbox costs one read. */
  private readonly pending = new Map<string, Promise<SandboxLocation | undefined>>();

  constructor(
    private readonly options: {
      sandboxes: SandboxRepository;
      /** This control plane's `running` mark of a sandbox just created, while it is on its way (SandboxService.settled). */
      settled?: (sandboxId: string) => Promise<void> | undefined;
      registry: HostRegistry;
      ttlMs?: number;
      /** Reach envd at the sandbox's address when its host is this machine (default true). */
      direct?: boolean;
    },
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
    await this.options.settled?.(sandboxId);
    const row = await this.options.sandboxes.get(sandboxId);
    if (!row) return undefined;
    const location: SandboxLocation = {
      sandboxId: row.id,
      teamId: row.teamId,
      status: row.status,
      envdAccessToken: row.envdAccessToken,
      trafficAccessToken: row.trafficAccessToken,
      hostId: row.hostId ?? undefined,
      timeoutSec: row.timeoutSec,
    };
    if (row.status !== "running") return location;
    if (!row.hostId) return { ...location, unreachable: "it has no host" };
    try {
      const { host, client } = await this.options.registry.connect(row.hostId);
      const { baseUrl, token } = this.options.registry.proxyEndpoint(host);
      const url = new URL(baseUrl);
      location.hostProxy = { hostname: url.hostname.replace(/^\[(.*)\]$/, "$1"), port: Number(url.port || 80), token };
      const direct = (this.options.direct ?? true) && isLoopbackHost(location.hostProxy.hostname);
      // Only a sandbox with its own envd token: envd then refuses a request meant for another sandbox.
      if (direct && row.envdAccessToken && (row.timeoutSec === 0 || row.timeoutSec >= DIRECT_MIN_TIMEOUT_SEC)) {
        const ping = await callAgent(client.pingSandbox({ sandboxId }, { timeoutMs: PING_TIMEOUT_MS }), row.hostId).catch(() => undefined);
        if (ping) location.pingedAt = Date.now();
        if (ping?.status === "running" && ping.sandboxAddress) location.envdDirect = { address: ping.sandboxAddress };
      }
    } catch (err) {
      return { ...location, unreachable: (err as Error).message };
    }
    this.entries.set(sandboxId, location);
    return location;
  }
}
