// The sandboxes this control plane recently saw running, so the hottest calls (exec) skip the
// database read before they reach the host. Safe because nothing in an entry can turn stale in a
// way that matters: a sandbox's team and host never change, and whether it still runs is what the
// host answers anyway (paused → failed_precondition, gone → not_found, silent → unavailable); a
// call that fails drops the entry, and so do this control plane's own pause, destroy and snapshot.
import { LRUCache } from "lru-cache";
import type { Sandbox } from "../db/schema.js";

/** What a call on a running sandbox needs of its row. */
export type RunningSandbox = Pick<Sandbox, "id" | "teamId" | "hostId" | "status">;

const TTL_MS = 10_000;

export class RunningSandboxCache {
  private readonly entries = new LRUCache<string, RunningSandbox>({ max: 20_000, ttl: TTL_MS });

  /** The team's sandbox if it was seen running lately; another team's id is a miss. */
  get(teamId: string, sandboxId: string): RunningSandbox | undefined {
    const entry = this.entries.get(sandboxId);
    return entry?.teamId === teamId ? entry : undefined;
  }

  /** Remembers a sandbox seen running on a host; anything else is forgotten. */
  saw(sandbox: Sandbox): void {
    if (sandbox.status === "running" && sandbox.hostId) {
      this.entries.set(sandbox.id, { id: sandbox.id, teamId: sandbox.teamId, hostId: sandbox.hostId, status: "running" });
    } else {
      this.entries.delete(sandbox.id);
    }
  }

  forget(sandboxId: string): void {
    this.entries.delete(sandboxId);
  }
}
