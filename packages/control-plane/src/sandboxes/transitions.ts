// Every sandbox status change goes through here: a compare-and-set on the current status, and, in
// the same transaction, the usage of the run segment it ends (so usage is counted once, whichever
// writer — API call, reconciler, heartbeat — wins the change).
import { sql } from "drizzle-orm";
import type { NewAuditEntry } from "../db/audit.js";
import type { Db } from "../db/database.js";
import { createRepositories } from "../db/repositories.js";
import { SANDBOX_STATUSES, sandboxes, type Sandbox, type SandboxStatus } from "../db/schema.js";
import type { SandboxChanges } from "../db/sandboxes.js";
import type { UsageIncrement } from "../db/usage.js";
import { WrennError } from "../errors.js";

export interface SandboxTransition {
  from: readonly SandboxStatus[];
  to: SandboxStatus;
  set?: SandboxChanges;
  /** Fails when the status changed after this time (database clock): the writer's view is stale. */
  unchangedSince?: Date;
  /** Written with the change (same statement or transaction), only if the change is made. */
  audit?: NewAuditEntry;
  /**
   * Entering running or unknown only: commit without waiting for the WAL flush (PostgreSQL's
   * asynchronous commit: visible at once, on disk within ~3 × wal_writer_delay). For changes the
   * host can tell again after a database crash — the reconciler rebuilds a `starting` row whose
   * sandbox runs from ListSandboxes — and never with an audit entry.
   */
  flushLater?: boolean;
}

/** How long a create waits on its host; a `starting` row older than that has no create behind it. */
export const CREATE_TIMEOUT_MS = 120_000;

/** Statuses in which a sandbox is not running and never will be again. */
export const FINAL_STATUSES: readonly SandboxStatus[] = ["stopped", "error"];

/**
 * Every other status: the sandbox is, or may yet be, on a host (starting, running, paused,
 * unknown). It holds a host's memory and a slot, a list shows it by default, and a host or build
 * going away must stop it.
 */
export const NOT_ENDED_STATUSES: readonly SandboxStatus[] = SANDBOX_STATUSES.filter((status) => !FINAL_STATUSES.includes(status));

/**
 * Throws what a caller should hear when the sandbox is not in one of `statuses`: not_found once
 * it has ended, unavailable while its host is silent, failed_precondition (with a hint) otherwise.
 */
export function requireStatus(sandbox: Sandbox, statuses: readonly SandboxStatus[]): void {
  if (statuses.includes(sandbox.status)) return;
  if (FINAL_STATUSES.includes(sandbox.status)) throw new WrennError("not_found", `sandbox ${sandbox.id} is ${sandbox.status}`);
  if (sandbox.status === "unknown") throw new WrennError("unavailable", `sandbox ${sandbox.id}'s host is not answering; try again later`);
  const hint = sandbox.status === "paused" ? "; resume it first" : sandbox.status === "starting" ? "; wait until it runs" : "";
  throw new WrennError("failed_precondition", `sandbox ${sandbox.id} is ${sandbox.status}${hint}`);
}

/** Statuses of a sandbox that exists on a host (or may: `unknown`). */
export const LIVE_STATUSES: readonly SandboxStatus[] = ["running", "paused", "unknown"];

/**
 * Moves the sandbox from one of `from` to `to`, or returns undefined when it is in another status
 * (or gone). Leaving `running` ends a run segment and adds its usage to the team's days; entering
 * `running` starts one. `unknown` keeps the segment open: the host may still be running it.
 */
export async function transitionSandbox(db: Db, id: string, change: SandboxTransition, now = new Date()): Promise<Sandbox | undefined> {
  if (change.from.length === 0) return undefined;
  if (change.to === "running" || change.to === "unknown") {
    // Nothing to book: entering running opens a segment unless one is open (back from `unknown`,
    // the sandbox kept running meanwhile); unknown keeps it as it is. One compare-and-set
    // statement, no read first: the hot path of every create and resume.
    const set: SandboxChanges = change.to === "running" ? { ...change.set, runningSince: sql`coalesce(${sandboxes.runningSince}, ${now.toISOString()}::timestamptz)` } : { ...change.set };
    if (change.flushLater && change.audit) throw new Error("an audit entry is never committed without its flush");
    return createRepositories(db).sandboxes.transition(id, { from: change.from, to: change.to, set, unchangedSince: change.unchangedSince, audit: change.audit, flushLater: change.flushLater });
  }
  // Any other status ends the run segment, if one is open: read it, book it, in one transaction.
  return db.transaction(async (tx) => {
    const repos = createRepositories(tx);
    const current = await repos.sandboxes.getForUpdate(id);
    if (!current || !change.from.includes(current.status)) return undefined;
    if (change.unchangedSince && current.statusChangedAt > change.unchangedSince) return undefined;
    const set: SandboxChanges = { ...change.set };
    if (current.runningSince !== null) {
      // A sandbox that went unknown is counted until it did: nobody saw it run after that.
      const end = current.status === "unknown" ? current.statusChangedAt : now;
      for (const [day, increment] of usageOfSegment(current, current.runningSince!, end)) {
        await repos.usage.add(current.teamId, day, increment);
      }
      set.runningSince = null;
    }
    if (FINAL_STATUSES.includes(change.to) && current.endedAt === null && set.endedAt === undefined) set.endedAt = now;
    const changed = await repos.sandboxes.transition(id, { from: [current.status], to: change.to, set });
    if (changed && change.audit) await repos.audit.record(change.audit);
    return changed;
  });
}

/** The usage of running `sandbox` from `start` to `end`, split at UTC midnights, by day. */
export function usageOfSegment(
  sandbox: Pick<Sandbox, "vcpus" | "memoryMb" | "diskSizeMb">,
  start: Date,
  end: Date,
): Array<[day: string, increment: Required<UsageIncrement>]> {
  const days: Array<[string, Required<UsageIncrement>]> = [];
  let from = start.getTime();
  const until = end.getTime();
  while (from < until) {
    const midnight = new Date(from);
    midnight.setUTCHours(24, 0, 0, 0);
    const to = Math.min(until, midnight.getTime());
    const seconds = (to - from) / 1000;
    days.push([
      new Date(from).toISOString().slice(0, 10),
      {
        sandboxSeconds: seconds,
        vcpuSeconds: seconds * sandbox.vcpus,
        memoryGibSeconds: (seconds * sandbox.memoryMb) / 1024,
        diskGibSeconds: (seconds * sandbox.diskSizeMb) / 1024,
      },
    ]);
    from = to;
  }
  return days;
}
