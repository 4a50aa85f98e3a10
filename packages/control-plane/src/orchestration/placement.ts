// Placement: which host a new sandbox goes to. A candidate is ready (not draining or unhealthy),
// offers the runtime asked for (if any), holds the template on its disk, and has a CPU count,
// uncommitted memory and a free address slot for the request; among them the one with the fewest sandboxes wins, then the most free memory.
// `place` runs a create on the best host and, when that host fails for host reasons (unavailable,
// out of capacity), on the next one.
//
// A create's first ranking may come from memory (rankFast): the last view read per template, kept
// while nothing this process wrote to hosts changed it (catalog-version.ts) and for at most
// VIEW_MAX_AGE_MS, read again in the background once VIEW_REFRESH_MS old, with each sandbox placed
// since counted on its host. What it may not know (another control plane's creates, a host that
// went away elsewhere) the host itself answers: an agent refuses what it has no room for
// (resource_exhausted), a silent one is unavailable, and `place` tries the next host from the
// database. A view that finds no host is never the last word either: the database is asked.
import type { Logger } from "pino";
import type { Db } from "../db/database.js";
import { catalogVersion } from "../db/catalog-version.js";
import type { PlacementCandidate } from "../db/hosts.js";
import { createRepositories, type Repositories } from "../db/repositories.js";
import type { Host, SandboxRuntime } from "../db/schema.js";
import { WrennError } from "../errors.js";
import { isHostFailure } from "../hosts/agent-client.js";
import { NOT_ENDED_STATUSES } from "../sandboxes/transitions.js";

export const DEFAULT_MAX_ATTEMPTS = 3;
/** How long a view of the hosts may stand in for the database, and its age when it is read again behind the creates using it. */
export const VIEW_MAX_AGE_MS = 10_000;
export const VIEW_REFRESH_MS = 1_000;
/** Views kept (one per template name on hosts' disks); the least recently read goes first. */
const MAX_VIEWS = 1_000;

export interface PlacementRequest {
  /** The template's name as the caller knows it (for messages). */
  template: string;
  /** The template's name on hosts' disks. */
  hostTemplateName: string;
  /** Only this host (a snapshot lives on the host it was taken on). */
  hostId?: string | null;
  /** Only hosts that offer this runtime; undefined: any host (the sandbox gets the host's default). */
  runtime?: SandboxRuntime;
  vcpus: number;
  memoryMb: number;
  diskSizeMb: number;
}

export interface PlacementOptions {
  db: Db;
  logger: Logger;
  /** Memory promised to sandboxes may exceed a host's memory by this factor (they rarely use all of it). Default 2. */
  memoryOvercommit?: number;
  maxAttempts?: number;
}

export interface RankedHost {
  host: Host;
  sandboxes: number;
  freeMemoryMb: number;
}

export class Placement {
  private readonly repos: Repositories;
  private readonly log: Logger;
  private readonly memoryOvercommit: number;
  private readonly maxAttempts: number;
  /** The last candidates read per template name on hosts' disks (see rankFast). */
  private readonly views = new Map<string, { candidates: PlacementCandidate[]; at: number; version: number; refreshing: boolean }>();

  constructor(options: PlacementOptions) {
    this.repos = createRepositories(options.db);
    this.log = options.logger.child({ component: "placement" });
    this.memoryOvercommit = options.memoryOvercommit ?? 2;
    this.maxAttempts = options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
  }

  /** The hosts that can take the request, best first; throws saying why when there is none. One query. */
  async rank(request: PlacementRequest, exclude: ReadonlySet<string> = new Set()): Promise<RankedHost[]> {
    return this.rankCandidates(request, await this.read(request.hostTemplateName), exclude);
  }

  /**
   * rank() from the view in memory when there is a usable one (see the top of this file), else
   * from the database. Only for a create's first attempt: retries rank from the database.
   */
  async rankFast(request: PlacementRequest): Promise<RankedHost[]> {
    const view = this.views.get(request.hostTemplateName);
    const age = view ? Date.now() - view.at : Infinity;
    if (view && view.version === catalogVersion.hosts() && age < VIEW_MAX_AGE_MS) {
      if (age >= VIEW_REFRESH_MS && !view.refreshing) {
        view.refreshing = true;
        // Once the create's own calls are out: building and sending the query costs CPU.
        setImmediate(() =>
          this.read(request.hostTemplateName).catch((err: unknown) => {
            view.refreshing = false;
            this.log.warn({ err: (err as Error).message }, "reading the hosts for placement failed");
          }),
        );
      }
      try {
        const ranked = this.rankCandidates(request, view.candidates);
        if (ranked.length > 0) return ranked;
      } catch {
        // No host in this view: the database has the last word.
      }
    }
    return this.rank(request);
  }

  /** Counts a sandbox just placed on the host in every view, until the next read has it. */
  private reserve(hostId: string, memoryMb: number): void {
    for (const view of this.views.values()) {
      const candidate = view.candidates.find((entry) => entry.host.id === hostId);
      if (!candidate) continue;
      candidate.sandboxes += 1;
      candidate.memoryMb += memoryMb;
    }
  }

  /** The candidates from the database, kept as the template's view. One query. */
  private async read(hostTemplateName: string): Promise<PlacementCandidate[]> {
    const version = catalogVersion.hosts();
    const at = Date.now();
    const candidates = await this.repos.hosts.placementCandidates(hostTemplateName, NOT_ENDED_STATUSES);
    this.views.delete(hostTemplateName); // re-inserted: the map's order is the order of reads
    // Rankings copy what they take from a candidate: reserve() may count on these objects.
    this.views.set(hostTemplateName, { candidates, at, version, refreshing: false });
    if (this.views.size > MAX_VIEWS) this.views.delete(this.views.keys().next().value!);
    return candidates;
  }

  private rankCandidates(request: PlacementRequest, candidates: readonly PlacementCandidate[], exclude: ReadonlySet<string> = new Set()): RankedHost[] {
    const ready = candidates.filter(
      ({ host }) => !exclude.has(host.id) && host.address !== null && host.agentTokenEncrypted !== null && (!request.hostId || host.id === request.hostId),
    );
    if (ready.length === 0) {
      throw new WrennError(
        "unavailable",
        request.hostId ? `the host holding template ${request.template} is not available` : "no host is ready to take a sandbox",
      );
    }
    const { runtime } = request;
    const offering = runtime ? ready.filter(({ host }) => host.runtimes.includes(runtime)) : ready;
    if (offering.length === 0) {
      const offered = [...new Set(ready.flatMap(({ host }) => host.runtimes))].sort().join(", ") || "none";
      throw new WrennError(
        "failed_precondition",
        request.hostId
          ? `the host holding template ${request.template} does not offer runtime ${runtime} (it offers: ${offered})`
          : `no available host offers runtime ${runtime} (the available hosts offer: ${offered})`,
      );
    }
    const withTemplate = offering.filter((candidate) => candidate.holdsTemplate);
    if (withTemplate.length === 0) {
      throw new WrennError("failed_precondition", `no available host${runtime ? ` offering runtime ${runtime}` : ""} holds template ${request.template}`);
    }
    const ranked: RankedHost[] = [];
    for (const { host, sandboxes, memoryMb } of withTemplate) {
      const freeMemoryMb = Math.floor(host.memoryMb * this.memoryOvercommit) - memoryMb;
      if (host.cpu > 0 && request.vcpus > host.cpu) continue;
      if (host.memoryMb > 0 && freeMemoryMb < request.memoryMb) continue;
      // Counted from the database, not the agent's slots_used: that includes its warm pool, which
      // the agent gives back when a create needs the room.
      if (host.slots > 0 && host.slots - sandboxes <= 0) continue;
      ranked.push({ host, sandboxes, freeMemoryMb });
    }
    if (ranked.length === 0) {
      throw new WrennError("resource_exhausted", `no host has room for ${request.vcpus} vCPU and ${request.memoryMb} MiB right now`);
    }
    return ranked.sort((a, b) => a.sandboxes - b.sandboxes || b.freeMemoryMb - a.freeMemoryMb || a.host.id.localeCompare(b.host.id));
  }

  /**
   * Runs `attempt` on the best host; when it fails because of that host (unavailable,
   * resource_exhausted), on the next best, up to maxAttempts hosts. Other errors (bad request,
   * missing template) are the request's fault and end the search. `attempt` must leave nothing
   * behind when it fails.
   */
  async place<T>(request: PlacementRequest, attempt: (host: Host) => Promise<T>, firstRanking?: Promise<RankedHost[]>): Promise<{ host: Host; result: T }> {
    const tried = new Set<string>();
    let lastError: unknown;
    while (tried.size < this.maxAttempts) {
      let best: RankedHost | undefined;
      try {
        // `firstRanking`: rank(request) already asked by the caller, for the first attempt.
        best = (await (tried.size === 0 && firstRanking ? firstRanking : this.rank(request, tried)))[0];
      } catch (err) {
        // Nothing left to try: the last host's failure says more than "no host".
        throw lastError ?? err;
      }
      if (!best) break;
      tried.add(best.host.id);
      try {
        const result = await attempt(best.host);
        this.reserve(best.host.id, request.memoryMb);
        return { host: best.host, result };
      } catch (err) {
        if (!isHostFailure(err)) throw err;
        lastError = err;
        this.log.warn({ hostId: best.host.id, err: (err as Error).message }, "create failed on a host; trying another");
      }
    }
    throw lastError ?? new WrennError("unavailable", "no host could take the sandbox");
  }
}
