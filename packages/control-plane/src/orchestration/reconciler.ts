// The reconciler: converges the database with what each host says it runs (ListSandboxes), every
// few seconds per ready or draining host. It never undoes a transition in flight: every change is
// a compare-and-set from the status it saw, made only if the row's status has not changed since
// the host was asked (`unchangedSince`, on the database's clock), and it never moves a row out of
// `starting` while a create may still be working on it, nor back from `paused` to `running` — pause
// and snapshot mark `paused` before their RPC (seed 003's race), so a host still showing the
// sandbox running is expected then. A `starting` row older than any create can be (its control
// plane died mid-create, or a database crash lost the asynchronously committed `running`) takes
// the host's word: running or paused there, or `error` if the host never got it.
import type { ListSandboxesResponse } from "@wrenn/proto/hostagent";
import type { Logger } from "pino";
import type { Db } from "../db/database.js";
import { createRepositories, type Repositories } from "../db/repositories.js";
import { isSandboxRuntime, type Host, type Sandbox, type SandboxStatus } from "../db/schema.js";
import { callAgent } from "../hosts/agent-client.js";
import type { HostRegistry } from "../hosts/registry.js";
import { CREATE_TIMEOUT_MS, FINAL_STATUSES, LIVE_STATUSES, transitionSandbox, type SandboxTransition } from "../sandboxes/transitions.js";

export const DEFAULT_RECONCILE_INTERVAL_MS = 3000;
/** A `starting` row this much older than a pass has no create working on it any more. */
export const STALE_STARTING_MS = CREATE_TIMEOUT_MS + 30_000;
const LIST_TIMEOUT_MS = 10_000;

export interface ReconcilerOptions {
  db: Db;
  registry: HostRegistry;
  logger: Logger;
  intervalMs?: number;
}

/** What one pass over one host changed, by sandbox id. */
export interface ReconcileReport {
  hostId: string;
  /** starting → running/paused/error: stale `starting` rows, settled by what the host says. */
  settled: string[];
  /** running → paused: the host's TTL reaper paused them (or a lost pause report). */
  paused: string[];
  /** → stopped: the host says they exited, or no longer has them. */
  stopped: string[];
  /** unknown → the host's status: their host answered again. */
  restored: string[];
  /** On the host but stopped (or elsewhere, or unknown) in the database: destroyed on the host. */
  orphansDestroyed: string[];
}

export class Reconciler {
  readonly intervalMs: number;
  private readonly repos: Repositories;
  private readonly log: Logger;
  /** Passes over one host run one after another. */
  private readonly passes = new Map<string, Promise<unknown>>();
  /**
   * Per host, the sandboxes its last pass found there with no row at all. A create writes its row
   * while the host makes the sandbox, so one pass can see the sandbox before its row: such a
   * sandbox is destroyed only if the next pass still finds no row.
   */
  private readonly unclaimed = new Map<string, Set<string>>();
  private timer: NodeJS.Timeout | undefined;
  private sweeping: Promise<void> | undefined;
  private readonly transitionListeners: Array<(sandboxId: string, status: SandboxStatus) => void> = [];
  /** What this process has told callers and not yet written (the sandbox service's `running` marks): a pass reads after it. */
  pendingWrites: () => Promise<void> = async () => {};

  constructor(private readonly options: ReconcilerOptions) {
    this.repos = createRepositories(options.db);
    this.log = options.logger.child({ component: "reconciler" });
    this.intervalMs = options.intervalMs ?? DEFAULT_RECONCILE_INTERVAL_MS;
  }

  /** Calls `listener` after each status change a pass makes (the sandbox service's caches follow). */
  onTransition(listener: (sandboxId: string, status: SandboxStatus) => void): void {
    this.transitionListeners.push(listener);
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      this.sweeping ??= this.reconcileAll()
        .then(() => undefined)
        .catch((err: unknown) => this.log.error({ err }, "reconcile pass failed"))
        .finally(() => (this.sweeping = undefined));
    }, this.intervalMs);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.sweeping;
    await Promise.allSettled(this.passes.values());
  }

  /** One pass over every ready or draining host. */
  async reconcileAll(): Promise<ReconcileReport[]> {
    const hosts = await this.repos.hosts.list(["ready", "draining"]);
    const reports = await Promise.all(hosts.map((host) => this.reconcileHost(host.id)));
    return reports.filter((report): report is ReconcileReport => report !== undefined);
  }

  /**
   * One pass over one host (after any pass over it in progress). Undefined when the host is not
   * ready or draining, or did not answer (the heartbeat deals with silent hosts).
   */
  async reconcileHost(hostId: string): Promise<ReconcileReport | undefined> {
    const previous = this.passes.get(hostId) ?? Promise.resolve();
    const pass = previous.catch(() => undefined).then(() => this.pass(hostId));
    this.passes.set(hostId, pass);
    try {
      return await pass;
    } finally {
      if (this.passes.get(hostId) === pass) this.passes.delete(hostId);
    }
  }

  private async pass(hostId: string): Promise<ReconcileReport | undefined> {
    const host = await this.repos.hosts.get(hostId);
    if (!host) this.unclaimed.delete(hostId);
    if (!host || (host.status !== "ready" && host.status !== "draining")) return undefined;
    await this.pendingWrites();
    // Taken before asking: a row changed after this was changed by someone who knew more.
    const listedAt = await this.repos.sandboxes.clock();
    let listed: ListSandboxesResponse;
    try {
      listed = await callAgent(this.options.registry.client(host).listSandboxes({}, { timeoutMs: LIST_TIMEOUT_MS }), hostId);
    } catch (err) {
      this.log.warn({ hostId, err: (err as Error).message }, "reconcile: the host did not list its sandboxes");
      return undefined;
    }
    return this.converge(host, listed, listedAt);
  }

  private async converge(host: Host, listed: ListSandboxesResponse, listedAt: Date): Promise<ReconcileReport> {
    const report: ReconcileReport = { hostId: host.id, settled: [], paused: [], stopped: [], restored: [], orphansDestroyed: [] };
    // A hibernated VM (memory on its host's disk, no process) is what the API calls paused: resume restores it.
    const onHost = new Map(listed.sandboxes.map((sandbox) => [sandbox.sandboxId, sandbox.status === "hibernated" ? { ...sandbox, status: "paused" } : sandbox]));
    const exited = new Map(listed.exited.map((exit) => [exit.sandboxId, exit.reason]));
    const autoPaused = new Set(listed.autoPausedSandboxIds);
    const move = async (sandbox: Sandbox, from: SandboxStatus[], to: SandboxStatus, why: string, set?: SandboxTransition["set"]): Promise<boolean> => {
      const changed = await transitionSandbox(this.options.db, sandbox.id, { from, to, set, unchangedSince: listedAt });
      if (!changed) return false;
      this.log.info({ sandboxId: sandbox.id, hostId: host.id, teamId: sandbox.teamId, from: sandbox.status, to, why }, "reconciled");
      for (const listener of this.transitionListeners) listener(sandbox.id, to);
      return true;
    };

    // The database's sandboxes on this host that the host should have.
    const staleBefore = listedAt.getTime() - STALE_STARTING_MS;
    for (const sandbox of await this.repos.sandboxes.listAll({ hostId: host.id, statuses: [...LIVE_STATUSES, "starting"] })) {
      const seen = onHost.get(sandbox.id);
      if (sandbox.status === "starting") {
        if (sandbox.statusChangedAt.getTime() > staleBefore) continue; // a create may still be at it
        const live = seen && !exited.has(sandbox.id) && (seen.status === "running" || seen.status === "paused");
        const settled = live
          ? await move(sandbox, ["starting"], seen.status as SandboxStatus, "its create never finished; its host runs it", {
              hostIp: seen.hostIp,
              startedAt: new Date(Number(seen.createdAtUnix) * 1000),
              ...(isSandboxRuntime(seen.runtime) ? { runtime: seen.runtime } : {}),
            })
          : await move(sandbox, ["starting"], "error", "its create never finished; its host does not have it");
        if (settled) report.settled.push(sandbox.id);
      } else if (!seen || exited.has(sandbox.id)) {
        const why = exited.has(sandbox.id) ? `exited: ${exited.get(sandbox.id)}` : "gone from its host";
        if (await move(sandbox, [sandbox.status], "stopped", why)) report.stopped.push(sandbox.id);
      } else if (sandbox.status === "unknown" && (seen.status === "running" || seen.status === "paused")) {
        if (await move(sandbox, ["unknown"], seen.status, "its host answers again")) report.restored.push(sandbox.id);
      } else if (sandbox.status === "running" && seen.status === "paused") {
        const why = autoPaused.has(sandbox.id) ? "auto-paused after its timeout" : "paused on its host";
        if (await move(sandbox, ["running"], "paused", why)) report.paused.push(sandbox.id);
      }
    }

    // The host's sandboxes the database does not place there any more.
    const rows = new Map((await this.repos.sandboxes.listByIds([...onHost.keys()])).map((row) => [row.id, row]));
    const seenUnclaimed = this.unclaimed.get(host.id);
    const unclaimed = new Set<string>();
    for (const sandboxId of onHost.keys()) {
      const row = rows.get(sandboxId);
      if (row && !isOrphan(row, host.id, listedAt)) continue;
      if (!row && !seenUnclaimed?.has(sandboxId)) {
        unclaimed.add(sandboxId);
        continue;
      }
      try {
        await callAgent(this.options.registry.client(host).destroySandbox({ sandboxId }), host.id);
        report.orphansDestroyed.push(sandboxId);
        this.log.warn({ sandboxId, hostId: host.id, teamId: row?.teamId, status: row?.status ?? "no row" }, "reconcile: destroyed a sandbox the database does not keep on this host");
      } catch (err) {
        if ((err as { code?: string }).code !== "not_found") this.log.warn({ sandboxId, hostId: host.id, err: (err as Error).message }, "reconcile: destroying an orphan failed");
      }
    }
    if (unclaimed.size > 0) this.unclaimed.set(host.id, unclaimed);
    else this.unclaimed.delete(host.id);
    return report;
  }
}

/** On `hostId`, but the row (settled before the host was asked) says it should not be. */
function isOrphan(row: Sandbox, hostId: string, listedAt: Date): boolean {
  if (row.status === "starting" || row.statusChangedAt > listedAt) return false;
  return FINAL_STATUSES.includes(row.status) || row.hostId !== hostId;
}
