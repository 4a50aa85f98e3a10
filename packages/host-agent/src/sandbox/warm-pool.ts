// The warm pool: default-shape sandboxes of chosen templates, booted ahead of demand, so a create
// that matches hands one out instead of waiting for a boot (E2B gets the same from memory
// snapshots, which this runtime cannot take). A pooled sandbox has run nothing but envd and has
// never been handed out; the sandbox manager names it, applies its env, token and egress rules
// when it is claimed. The pool refills one sandbox at a time per template, only while the host
// has room, and gives sandboxes back to the host when a create needs the room.
import { logger } from "../logging/logger.js";
import type { Sandbox } from "./manager.js";

const log = logger.child({ component: "warm-pool" });
/** After a failed build, the next try waits this long, so a broken template does not spin. */
const RETRY_AFTER_FAILURE_MS = 30_000;
/**
 * A refill waits this long after a sandbox is handed out: a boot takes both CPUs' worth of work
 * for a moment, and the caller's first commands in the sandbox just taken come first.
 */
const REFILL_AFTER_TAKE_MS = 1_000;

export interface WarmPoolTarget {
  template: string;
  /** How many ready sandboxes to keep. */
  count: number;
}

/** What the pool asks of the sandbox manager. */
export interface WarmPoolHooks {
  /** Builds one default-shape sandbox of the template, not registered anywhere. */
  build(template: string): Promise<Sandbox>;
  /** Tears a pooled sandbox down completely. */
  discard(sandbox: Sandbox): Promise<void>;
  /** Whether the host can keep one more idle sandbox and still admit a create. */
  hasRoom(): Promise<boolean>;
}

/** Parses `--warm-pool base=2,python=1` entries; throws naming the bad entry. */
export function parseWarmPoolTargets(specs: readonly string[]): WarmPoolTarget[] {
  return specs
    .flatMap((spec) => spec.split(","))
    .filter((entry) => entry.trim() !== "")
    .map((entry) => {
      const match = /^\s*([^=\s]+)\s*=\s*(\d+)\s*$/.exec(entry);
      if (!match || Number(match[2]) > 64) throw new RangeError(`invalid warm pool entry ${JSON.stringify(entry)}: use <template>=<count>, count 0–64`);
      return { template: match[1]!, count: Number(match[2]) };
    });
}

export class WarmPool {
  private readonly targets = new Map<string, number>();
  private readonly ready = new Map<string, Sandbox[]>();
  /** Templates with a refill in flight, and that refill. */
  private readonly filling = new Map<string, Promise<void>>();
  /** Templates whose refill is held (a delete of the template is in progress). */
  private readonly held = new Set<string>();
  private readonly retryTimers = new Map<string, NodeJS.Timeout>();
  private refillTimer: NodeJS.Timeout | undefined;
  private running = false;

  constructor(
    targets: readonly WarmPoolTarget[],
    private readonly hooks: WarmPoolHooks,
  ) {
    for (const { template, count } of targets) if (count > 0) this.targets.set(template, count);
  }

  /** Starts keeping the pool full. */
  start(): void {
    this.running = true;
    this.refill();
  }

  /** Stops refilling; ready sandboxes stay (an agent restart removes them). */
  stop(): void {
    this.running = false;
    for (const timer of this.retryTimers.values()) clearTimeout(timer);
    this.retryTimers.clear();
    clearTimeout(this.refillTimer);
    this.refillTimer = undefined;
  }

  /** Whether a create for this template can be served from the pool at all. */
  serves(template: string): boolean {
    return this.targets.has(template);
  }

  /** Hands out a ready sandbox of the template, or undefined; a refill follows shortly. */
  take(template: string): Sandbox | undefined {
    const sandbox = this.ready.get(template)?.shift();
    if (this.running) {
      clearTimeout(this.refillTimer);
      this.refillTimer = setTimeout(() => {
        this.refillTimer = undefined;
        this.refill();
      }, REFILL_AFTER_TAKE_MS);
      this.refillTimer.unref();
    }
    return sandbox;
  }

  /** Every ready sandbox (for liveness checks and orphan sweeps). */
  all(): Sandbox[] {
    return [...this.ready.values()].flat();
  }

  /** Takes a sandbox out of the pool (it died); true when it was there. */
  remove(sandbox: Sandbox): boolean {
    const list = this.ready.get(sandbox.record.template);
    const index = list?.indexOf(sandbox) ?? -1;
    if (index < 0) return false;
    list!.splice(index, 1);
    this.refill();
    return true;
  }

  status(): { template: string; target: number; ready: number }[] {
    return [...this.targets].map(([template, target]) => ({ template, target, ready: this.ready.get(template)?.length ?? 0 }));
  }

  /** Gives one ready sandbox back to the host (from the fullest template); false when none is ready. */
  async evictOne(): Promise<boolean> {
    const fullest = [...this.ready.values()].sort((a, b) => b.length - a.length)[0];
    const sandbox = fullest?.pop();
    if (!sandbox) return false;
    log.info({ runtimeId: sandbox.record.runtimeId, template: sandbox.record.template }, "warm sandbox given back for a create");
    await this.hooks.discard(sandbox);
    return true;
  }

  /** Runs `operation` with the template's pool emptied and not refilling (deleting the template). */
  async withTemplateReleased<T>(template: string, operation: () => Promise<T>): Promise<T> {
    this.held.add(template);
    try {
      await this.filling.get(template);
      await this.discardAll(this.ready.get(template) ?? []);
      this.ready.delete(template);
      return await operation();
    } finally {
      this.held.delete(template);
      this.refill();
    }
  }

  /** Stops refilling and tears every ready sandbox down (Terminate). */
  async drain(): Promise<void> {
    this.stop();
    await Promise.all(this.filling.values());
    const all = this.all();
    this.ready.clear();
    await this.discardAll(all);
  }

  private async discardAll(sandboxes: Sandbox[]): Promise<void> {
    const results = await Promise.allSettled(sandboxes.map((sandbox) => this.hooks.discard(sandbox)));
    for (const result of results) if (result.status === "rejected") log.error({ err: result.reason }, "removing a warm sandbox failed");
  }

  /** Starts building for every template below its target (also run by the reaper, as room frees up). */
  refill(): void {
    if (!this.running || this.refillTimer) return; // a take just happened: its timer refills
    for (const template of this.targets.keys()) {
      if (this.filling.has(template) || this.held.has(template) || this.retryTimers.has(template)) continue;
      if (this.readyCount(template) >= this.targets.get(template)!) continue;
      const fill = this.fill(template).finally(() => this.filling.delete(template));
      this.filling.set(template, fill);
    }
  }

  private readyCount(template: string): number {
    return this.ready.get(template)?.length ?? 0;
  }

  private async fill(template: string): Promise<void> {
    while (this.running && !this.held.has(template) && this.readyCount(template) < this.targets.get(template)!) {
      if (!(await this.hooks.hasRoom())) return; // the next take or remove tries again
      let sandbox: Sandbox;
      try {
        sandbox = await this.hooks.build(template);
      } catch (err) {
        log.error({ template, err }, `building a warm sandbox failed; trying again in ${RETRY_AFTER_FAILURE_MS / 1000} s`);
        this.retryLater(template);
        return;
      }
      if (!this.running || this.held.has(template)) {
        await this.discardAll([sandbox]);
        return;
      }
      const list = this.ready.get(template) ?? [];
      list.push(sandbox);
      this.ready.set(template, list);
      log.info({ template, runtimeId: sandbox.record.runtimeId, ready: list.length }, "warm sandbox ready");
    }
  }

  private retryLater(template: string): void {
    const timer = setTimeout(() => {
      this.retryTimers.delete(template);
      this.refill();
    }, RETRY_AFTER_FAILURE_MS);
    timer.unref();
    this.retryTimers.set(template, timer);
  }
}
