// The sandbox service: what the REST routes and the e2b-compatible routes both call. Every method
// takes the caller's team and answers not_found for another team's sandbox. The database row is
// the intent and is written first where a reconciler could otherwise misread the host (pause and
// snapshot mark `paused` before their RPC and revert on failure); state-changing RPCs never take
// the caller's AbortSignal, so a caller going away cannot leave one half-done.
import { randomBytes, randomInt } from "node:crypto";
import { setImmediate as nextTurn } from "node:timers/promises";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { SQL } from "drizzle-orm";
import { OnTimeout as OnTimeoutAction, type ExecStreamResponse, type MetricPoint as AgentMetricPoint, type WriteFileStreamRequestSchema } from "@wrenn/proto/hostagent";
import type { Logger } from "pino";
import { catalogVersion } from "../db/catalog-version.js";
import type { Db } from "../db/database.js";
import type { PendingAudit } from "../db/audit.js";
import type { MetricPoint } from "../db/metrics.js";
import { createRepositories, type Repositories } from "../db/repositories.js";
import { InvalidCursorError, type SandboxJsonPage } from "../db/sandboxes.js";
import { HIBERNATING_RUNTIMES, METRIC_TIERS, isSandboxRuntime, type Host, type MetricTier, type OnTimeout, type Sandbox, type SandboxRuntime, type SandboxStatus, type Template } from "../db/schema.js";
import { WrennError } from "../errors.js";
import { agentError, callAgent, type AgentClient } from "../hosts/agent-client.js";
import type { HostRegistry } from "../hosts/registry.js";
import type { Placement } from "../orchestration/placement.js";
import { templateRuntimes } from "../templates/runtimes.js";
import { CREATE_TIMEOUT_MS, FINAL_STATUSES, requireStatus, transitionSandbox, type SandboxTransition } from "./transitions.js";
import { AgentTime } from "./agent-time.js";
import { ReadBehindCache } from "./read-behind.js";
import { RunningSandboxCache, type RunningSandbox } from "./running-cache.js";

export const SANDBOX_DEFAULTS = { vcpus: 1, memoryMb: 512, diskSizeMb: 5120, timeoutSec: 300 } as const;
/** Booting (or taking from the warm pool) and waiting for envd. */
/** Copying a sandbox's files into a template can take minutes on a big disk. */
export const SNAPSHOT_TIMEOUT_MS = 30 * 60_000;
const DEFAULT_EXEC_TIMEOUT_SEC = 60;
/** Saving metrics or destroying on the way out must not hold a caller long when a host is slow. */
const HOUSEKEEPING_TIMEOUT_MS = 10_000;
/** A `running` mark the database refuses is asked again this many times in all, MARK_RETRY_MS × attempt apart. */
const MARK_ATTEMPTS = 4;
const MARK_RETRY_MS = 500;
/** How long a template looked up for a create may stand in for the database, and its age when it is read again behind the creates using it (see templateToCreateFrom). */
const TEMPLATE_CACHE_MS = 10_000;
const TEMPLATE_REFRESH_MS = 1_000;
const RANGE_SECONDS: Record<MetricTier, number> = { "10m": 600, "2h": 7200, "24h": 86_400 };

export interface CreateSandboxInput {
  /** A template the team sees: its own or a platform one. */
  template: string;
  vcpus?: number;
  memoryMb?: number;
  diskSizeMb?: number;
  /** Seconds of inactivity before the host pauses it (or kills it, see onTimeout); 0: never. */
  timeoutSec?: number;
  /** What the host does when the timeout runs out; default: pause. */
  onTimeout?: OnTimeout;
  /** The runtime to boot on: only hosts offering it are placed on; default: the chosen host's default. */
  runtime?: SandboxRuntime;
  metadata?: Record<string, string>;
  /** Environment of every process in the sandbox; not stored (it may hold secrets). */
  envVars?: Record<string, string>;
  allowOut?: string[];
  denyOut?: string[];
}

export interface ListSandboxesInput {
  /** Default: every status. */
  states?: SandboxStatus[];
  metadata?: Record<string, string>;
  /** `nextCursor` of the previous page. */
  cursor?: string;
  limit?: number;
}

export interface ExecInput {
  cmd: string;
  args?: string[];
  envs?: Record<string, string>;
  cwd?: string;
  user?: string;
  /** Collected exec only: written to the command's stdin, which is then closed. */
  stdin?: Uint8Array;
  /** Default 60. */
  timeoutSec?: number;
}

export interface ExecResult {
  stdout: Uint8Array;
  stderr: Uint8Array;
  exitCode: number;
  /** Set when the command did not exit by itself (e.g. killed after its timeout). */
  error?: string;
}

/** One event of a streamed exec, in the order the command produced them. */
export type ExecEvent =
  | { type: "start"; pid: number }
  | { type: "stdout"; data: Uint8Array }
  | { type: "stderr"; data: Uint8Array }
  | { type: "exit"; exitCode: number; error?: string };

export interface SnapshotResult {
  host: Host;
  sizeBytes: number;
  includesMemory: boolean;
  note: string;
  /** The sandbox after the snapshot: running or paused as before with keepRunning, else stopped. */
  sandbox: Sandbox;
}

/** Points in the middle of operations where a test can interleave something (the reconciler, say). */
export interface SandboxServiceHooks {
  /** After the row was marked `paused` and before the pause or snapshot RPC. */
  afterMarkPaused?(operation: "pause" | "snapshot", sandbox: Sandbox): Promise<void>;
}

export interface SandboxServiceOptions {
  db: Db;
  registry: HostRegistry;
  placement: Placement;
  logger: Logger;
  hooks?: SandboxServiceHooks;
}

/** Told a sandbox's id and its new status (undefined when a compare-and-set found it already changed). */
export type StatusListener = (sandboxId: string, status: SandboxStatus | undefined) => void;

export class SandboxService {
  private readonly repos: Repositories;
  private readonly log: Logger;
  private readonly running = new RunningSandboxCache();
  private readonly statusListeners: Array<StatusListener> = [];
  /** Templates creates asked for lately, by team and name (see templateToCreateFrom). */
  private readonly templates = new ReadBehindCache<Template>({
    max: 10_000,
    maxAgeMs: TEMPLATE_CACHE_MS,
    refreshMs: TEMPLATE_REFRESH_MS,
    version: catalogVersion.templates,
    onRefreshError: (key, err) => {
      if (!(err instanceof WrennError && err.code === "not_found")) this.log.warn({ template: key, err: (err as Error).message }, "reading a template again failed");
    },
  });
  /** `running` marks on their way, by sandbox (see markRunning). */
  private readonly marks = new Map<string, { teamId: string; settled: Promise<void> }>();

  constructor(private readonly options: SandboxServiceOptions) {
    this.repos = createRepositories(options.db);
    this.log = options.logger.child({ component: "sandboxes" });
  }

  /**
   * Creates a sandbox: a `starting` row, a host chosen by placement (another one if the first
   * fails for host reasons), the agent's CreateSandbox, then `running`. When `signal` aborts
   * before it returns, the sandbox is destroyed again and the call fails: nothing is left half-made.
   */
  async create(teamId: string, input: CreateSandboxInput, options: { signal?: AbortSignal; agentTime?: AgentTime; audit?: PendingAudit } = {}): Promise<Sandbox> {
    const { signal } = options;
    const shape = {
      vcpus: positiveInteger(input.vcpus ?? SANDBOX_DEFAULTS.vcpus, "vcpus"),
      memoryMb: positiveInteger(input.memoryMb ?? SANDBOX_DEFAULTS.memoryMb, "memoryMb"),
      diskSizeMb: positiveInteger(input.diskSizeMb ?? SANDBOX_DEFAULTS.diskSizeMb, "diskSizeMb"),
      timeoutSec: nonNegativeInteger(input.timeoutSec ?? SANDBOX_DEFAULTS.timeoutSec, "timeoutSec"),
    };
    // A platform template has the same name on hosts' disks: rank hosts for it while the template
    // is looked up (one round trip saved); a team's template (another disk name, or its own host)
    // ranks after the lookup.
    const guess = { template: input.template, hostTemplateName: input.template, runtime: input.runtime, ...shape };
    const earlyRanking = this.options.placement.rankFast(guess);
    earlyRanking.catch(() => {}); // unused, or awaited by place(): never an unhandled rejection
    const template = await this.templateToCreateFrom(teamId, input.template);
    if (input.runtime && !templateRuntimes(template).includes(input.runtime)) {
      throw new WrennError("failed_precondition", `template ${template.name} does not boot on runtime ${input.runtime} (it boots on: ${templateRuntimes(template).join(", ")})`);
    }
    throwIfAborted(signal);
    const row = {
      id: newSandboxId(),
      teamId,
      template: template.name,
      ...shape,
      onTimeout: input.onTimeout ?? "pause",
      // What the host answers replaces it at the running mark.
      runtime: input.runtime ?? null,
      metadata: input.metadata ?? {},
      allowOut: input.allowOut ?? [],
      denyOut: input.denyOut ?? [],
      envdAccessToken: randomBytes(24).toString("hex"),
      trafficAccessToken: randomBytes(24).toString("hex"),
    };
    const log = this.log.child({ sandboxId: row.id, teamId });
    // The request's audit entry goes in with the row (a durable write off the create's path) and
    // is taken back if the create does not succeed.
    const auditEntry = options.audit?.entryFor(row.id);
    const withdrawAudit = async () => {
      if (auditEntry) await this.repos.audit.withdraw({ action: auditEntry.action, resourceType: auditEntry.resourceType, resourceId: row.id });
    };
    const hostTemplateName = template.hostTemplateName ?? template.name;
    // The row is written once placement has chosen a host, with that host: a create no host can
    // take leaves no row; a retry on another host moves it. It is written while the host creates
    // the sandbox (a round trip off the create's path): a `starting` row is never an orphan to the
    // reconciler, and a sandbox it finds with no row yet gets a second look before it is destroyed.
    let sandbox: Sandbox | undefined;
    let placed: { host: Host; result: { hostIp: string; envdVersion: string; runtime: SandboxRuntime | null } };
    try {
      const guessed = hostTemplateName === guess.hostTemplateName && !template.hostId;
      // The same request on every host tried: a retry elsewhere keeps the runtime.
      placed = await this.options.placement.place({ template: template.name, hostTemplateName, hostId: template.hostId, runtime: input.runtime, ...shape }, async (host) => {
        // The host's call goes out first: the row's statement is built and sent while the host works.
        const creating = measured(options.agentTime, callAgent(
          this.options.registry.client(host).createSandbox(
            {
              sandboxId: row.id,
              template: hostTemplateName,
              ...shape,
              runtime: input.runtime ?? "",
              onTimeout: row.onTimeout === "kill" ? OnTimeoutAction.KILL : OnTimeoutAction.PAUSE,
              envVars: input.envVars ?? {},
              allowOut: row.allowOut,
              denyOut: row.denyOut,
              metadata: row.metadata,
              envdAccessToken: row.envdAccessToken,
            },
            { timeoutMs: CREATE_TIMEOUT_MS },
          ),
          host.id,
        ));
        const recorded = nextTurn().then(() =>
          sandbox ? this.repos.sandboxes.update(sandbox.id, { hostId: host.id }) : this.repos.sandboxes.create({ ...row, hostId: host.id }, auditEntry),
        );
        const [written, created] = await Promise.allSettled([recorded, creating]);
        if (written.status === "rejected") {
          // No row to stand for it: a sandbox made on the host must not stay there.
          if (created.status === "fulfilled") await this.rollBackCreate(row.id, host);
          throw written.reason;
        }
        sandbox ??= written.value;
        if (created.status === "rejected") throw created.reason;
        return { hostIp: created.value.hostIp, envdVersion: created.value.envdVersion, runtime: isSandboxRuntime(created.value.runtime) ? created.value.runtime : row.runtime };
      }, guessed ? earlyRanking : undefined);
    } catch (err) {
      if (sandbox) {
        await this.transition(sandbox.id, { from: ["starting"], to: "error" });
        await withdrawAudit();
      }
      log.warn({ err: (err as Error).message }, "sandbox create failed");
      throw err;
    }
    const { host, result } = placed;
    // The sandbox made on the host goes, its row ends stopped, its audit entry is taken back.
    const undo = async () => {
      await this.rollBackCreate(row.id, host);
      await withdrawAudit();
    };
    if (signal?.aborted) {
      await undo();
      log.info({ hostId: host.id }, "caller went away during create: sandbox rolled back");
      throw abortError(signal);
    }
    // The caller is answered now, its `running` mark on its way (see markRunning): that round trip
    // is off the create's path, and this control plane's own reads of the sandbox wait for it.
    options.audit?.written(); // its entry went in with the row: the sandbox was made
    const now = new Date();
    const running: Sandbox = {
      ...sandbox!,
      status: "running",
      hostId: host.id,
      hostIp: result.hostIp,
      envdVersion: result.envdVersion,
      runtime: result.runtime,
      startedAt: now,
      runningSince: now,
      statusChangedAt: now,
    };
    this.running.saw(running);
    this.markRunning(running, host, log);
    log.info({ hostId: host.id, template: template.name, runtime: running.runtime }, "sandbox created");
    return running;
  }

  /**
   * The `running` mark of a sandbox its caller has already been told runs. Until it lands, this
   * control plane's reads of the sandbox wait for it (settled). What it records the host can tell
   * again (the reconciler's stale `starting` rows), so its commit need not wait for the disk, and
   * a database that refuses it is asked again, then left to the reconciler. A row no longer
   * `starting` was destroyed meanwhile: the sandbox made on the host goes too.
   */
  private markRunning(sandbox: Sandbox, host: Host, log: Logger): void {
    const mark = async () => {
      for (let attempt = 1; ; attempt++) {
        try {
          const started = { hostId: host.id, hostIp: sandbox.hostIp, envdVersion: sandbox.envdVersion, runtime: sandbox.runtime, startedAt: sandbox.startedAt! };
          // transitionSandbox's rule for entering running, as one prepared statement (SandboxRepository.markStarted).
          const marked = this.changed(sandbox.id, await this.repos.sandboxes.markStarted(sandbox.id, started));
          if (!marked) {
            await this.rollBackCreate(sandbox.id, host);
            log.info({ hostId: host.id }, "sandbox destroyed while it was starting: removed from its host");
          }
          return;
        } catch (err) {
          if (attempt >= MARK_ATTEMPTS) {
            log.error({ err: (err as Error).message }, "could not mark the sandbox running; the reconciler will, from what its host says");
            return;
          }
          log.warn({ err: (err as Error).message, attempt }, "marking the sandbox running failed; trying again");
          await new Promise((resolve) => setTimeout(resolve, MARK_RETRY_MS * attempt));
        }
      }
    };
    // Once the answer is on its way: building and sending the statement costs CPU.
    const settled = nextTurn()
      .then(mark)
      // Never a rejection for the reads waiting on it: a rollback that fails is the reconciler's.
      .catch((err: unknown) => log.error({ err: (err as Error).message }, "settling the create's running mark failed; the reconciler will"))
      .finally(() => this.marks.delete(sandbox.id));
    this.marks.set(sandbox.id, { teamId: sandbox.teamId, settled });
  }

  /** Resolves once this control plane's pending `running` mark of the sandbox (if any) has landed or given up. */
  settled(sandboxId: string): Promise<void> | undefined {
    return this.marks.get(sandboxId)?.settled;
  }

  /** Every pending mark of the team's sandboxes (a list must show them as they are). */
  private async teamSettled(teamId: string): Promise<void> {
    const pending = [...this.marks.values()].filter((entry) => entry.teamId === teamId).map((entry) => entry.settled);
    if (pending.length > 0) await Promise.all(pending);
  }

  /** Every mark still on its way (a reconcile pass and a clean shutdown wait for them). */
  async allSettled(): Promise<void> {
    await Promise.all([...this.marks.values()].map((entry) => entry.settled));
  }

  async get(teamId: string, sandboxId: string): Promise<Sandbox> {
    await this.settled(sandboxId);
    const sandbox = await this.repos.sandboxes.getForTeam(teamId, sandboxId);
    if (!sandbox) throw new WrennError("not_found", `sandbox ${sandboxId} not found`);
    return sandbox;
  }

  /** A status change (see transitionSandbox) that keeps the cache of running sandboxes in step. */
  private async transition(sandboxId: string, change: SandboxTransition): Promise<Sandbox | undefined> {
    return this.changed(sandboxId, await transitionSandbox(this.options.db, sandboxId, change));
  }

  /** What a status change this service made (or tried: undefined) tells its cache and listeners. */
  private changed(sandboxId: string, changed: Sandbox | undefined): Sandbox | undefined {
    if (changed) this.running.saw(changed);
    else this.running.forget(sandboxId);
    for (const listener of this.statusListeners) listener(sandboxId, changed?.status);
    return changed;
  }

  /**
   * Calls `listener` with the sandbox's id after every status change this service makes (or tries:
   * a failed compare-and-set means someone else changed it) and every one the reconciler makes
   * (changedElsewhere), e.g. to drop what a cache holds of it.
   */
  onStatusChange(listener: StatusListener): void {
    this.statusListeners.push(listener);
  }

  /** A status change made outside this service (the reconciler's): caches drop the sandbox. */
  changedElsewhere(sandboxId: string, status: SandboxStatus): void {
    this.running.forget(sandboxId);
    for (const listener of this.statusListeners) listener(sandboxId, status);
  }

  /** The team's running sandbox, from what this control plane saw lately when it can (see RunningSandboxCache). */
  private async getRunning(teamId: string, sandboxId: string): Promise<RunningSandbox> {
    const seen = this.running.get(teamId, sandboxId);
    if (seen) return seen;
    const sandbox = await this.get(teamId, sandboxId);
    requireStatus(sandbox, ["running"]);
    this.running.saw(sandbox);
    return sandbox;
  }

  /** The team's sandboxes, newest first, a page at a time. */
  async list(teamId: string, input: ListSandboxesInput = {}): Promise<{ sandboxes: Sandbox[]; nextCursor?: string }> {
    await this.teamSettled(teamId);
    return withCursorErrors(() => this.repos.sandboxes.list({ teamId, statuses: input.states, metadata: input.metadata, cursor: input.cursor, limit: input.limit }));
  }

  /** The same page, each sandbox rendered as JSON by the database through `view` (see SandboxRepository.listJson). */
  async listJson(teamId: string, input: ListSandboxesInput, view: SQL): Promise<SandboxJsonPage> {
    await this.teamSettled(teamId);
    return withCursorErrors(() => this.repos.sandboxes.listJson({ teamId, statuses: input.states, metadata: input.metadata, cursor: input.cursor, limit: input.limit }, view));
  }

  /**
   * Stops the sandbox for good: its metrics are saved, the row is `stopped` (its usage counted),
   * and the host destroys it. Destroying a stopped sandbox is a no-op. If the host cannot be
   * reached, the reconciler destroys it there once the host answers.
   */
  async destroy(teamId: string, sandboxId: string): Promise<Sandbox> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const sandbox = await this.get(teamId, sandboxId);
      if (FINAL_STATUSES.includes(sandbox.status)) return sandbox;
      // A starting sandbox is finished by its create, which finds the row stopped and rolls back;
      // an unknown one by the reconciler, once its host answers again.
      const onHost = sandbox.status === "running" || sandbox.status === "paused";
      const connection = onHost && sandbox.hostId ? await this.connectQuietly(sandbox.hostId) : undefined;
      if (connection) await this.flushMetrics(sandbox, connection.client);
      const stopped = await this.transition(sandboxId, { from: [sandbox.status], to: "stopped" });
      if (!stopped) continue; // its status changed meanwhile: look again
      if (connection) {
        const call = connection.client.destroySandbox({ sandboxId }, { timeoutMs: HOUSEKEEPING_TIMEOUT_MS });
        await callAgent(call, connection.host.id).catch((err: WrennError) => {
          if (err.code !== "not_found") this.log.warn({ sandboxId, hostId: connection.host.id, teamId, err: err.message }, "destroy on the host failed; the reconciler will retry");
        });
      }
      this.log.info({ sandboxId, teamId, hostId: sandbox.hostId }, "sandbox destroyed");
      return stopped;
    }
    throw new WrennError("conflict", `sandbox ${sandboxId} keeps changing state; try again`);
  }

  /**
   * Freezes a running sandbox (conflict when it is already paused). Its metrics are saved first. A
   * VM that can hibernates, as E2B's pause persists a sandbox: its memory goes to its host's disk
   * and the host's memory and CPU are freed; resume restores the same processes.
   */
  async pause(teamId: string, sandboxId: string): Promise<Sandbox> {
    const sandbox = await this.get(teamId, sandboxId);
    if (sandbox.status === "paused") throw new WrennError("conflict", `sandbox ${sandboxId} is already paused`);
    requireStatus(sandbox, ["running"]);
    const { host, client } = await this.connect(sandbox);
    await this.flushMetrics(sandbox, client);
    const marked = await this.transition(sandboxId, { from: ["running"], to: "paused" });
    if (!marked) throw new WrennError("conflict", `sandbox ${sandboxId} changed state meanwhile; try again`);
    await this.options.hooks?.afterMarkPaused?.("pause", marked);
    try {
      const hibernate = sandbox.runtime !== null && HIBERNATING_RUNTIMES.has(sandbox.runtime);
      await callAgent(client.pauseSandbox({ sandboxId, hibernate }), host.id);
    } catch (err) {
      await this.revertMark(sandbox, err);
      throw err;
    }
    this.log.info({ sandboxId, teamId, hostId: host.id }, "sandbox paused");
    return (await this.repos.sandboxes.get(sandboxId)) ?? marked;
  }

  /**
   * Thaws a paused sandbox, optionally with a new timeout. A running one gets the timeout, and its
   * host is asked too, in case it paused the sandbox itself and the reconciler has not seen it yet
   * (what E2B's connect does: afterwards the sandbox runs). `timeoutSec` may be decided from the
   * sandbox as it was found (it may also throw, e.g. a caller's own not-found).
   */
  async resume(teamId: string, sandboxId: string, options: { timeoutSec?: number | ((found: Sandbox) => number | undefined) } = {}): Promise<Sandbox> {
    const sandbox = await this.get(teamId, sandboxId);
    const chosen = typeof options.timeoutSec === "function" ? options.timeoutSec(sandbox) : options.timeoutSec;
    const timeoutSec = chosen === undefined ? undefined : nonNegativeInteger(chosen, "timeoutSec");
    requireStatus(sandbox, ["running", "paused"]);
    const { host, client } = await this.connect(sandbox);
    try {
      await callAgent(client.resumeSandbox({ sandboxId, timeoutSec: timeoutSec ?? sandbox.timeoutSec }), host.id);
    } catch (err) {
      await this.stopIfGone(sandbox, err);
      throw err;
    }
    // running → running too: a reconcile pass that listed the host before this resume must not
    // then mark the sandbox paused (its compare-and-set needs the status unchanged since).
    const running = await this.transition(sandboxId, {
      from: [sandbox.status],
      to: "running",
      set: timeoutSec === undefined ? {} : { timeoutSec },
    });
    if (!running) return this.get(teamId, sandboxId);
    if (sandbox.status === "paused") this.log.info({ sandboxId, teamId, hostId: host.id }, "sandbox resumed");
    return running;
  }

  /** Sets the inactivity timeout (seconds, 0: never pause) and counts as activity. */
  async setTimeout(teamId: string, sandboxId: string, timeoutSec: number): Promise<Sandbox> {
    nonNegativeInteger(timeoutSec, "timeoutSec");
    const sandbox = await this.get(teamId, sandboxId);
    requireStatus(sandbox, ["running", "paused"]);
    const { host, client } = await this.connect(sandbox);
    await callAgent(client.setSandboxTimeout({ sandboxId, timeoutSec }), host.id).catch((err: unknown) => this.stopIfGone(sandbox, err, true));
    return (await this.repos.sandboxes.update(sandboxId, { timeoutSec })) ?? sandbox;
  }

  /** Keep-alive: resets the sandbox's inactivity timer. */
  async ping(teamId: string, sandboxId: string): Promise<void> {
    const sandbox = await this.get(teamId, sandboxId);
    requireStatus(sandbox, ["running"]);
    const { host, client } = await this.connect(sandbox);
    await callAgent(client.pingSandbox({ sandboxId }), host.id).catch((err: unknown) => this.stopIfGone(sandbox, err, true));
  }

  /**
   * Runs a command and returns its whole output. With `audit`, the request's entry is written while
   * the command runs (off the exec's path), and taken back if the exec fails.
   */
  async exec(teamId: string, sandboxId: string, input: ExecInput, options: { signal?: AbortSignal; agentTime?: AgentTime; audit?: PendingAudit } = {}): Promise<ExecResult> {
    const sandbox = await this.getRunning(teamId, sandboxId);
    const { host, client } = await this.connect(sandbox);
    const timeoutSec = input.timeoutSec ?? DEFAULT_EXEC_TIMEOUT_SEC;
    const running = measured(options.agentTime, callAgent(
      client.exec(
        { sandboxId, cmd: input.cmd, args: input.args ?? [], envs: input.envs ?? {}, cwd: input.cwd ?? "", user: input.user ?? "", stdin: input.stdin, timeoutSec },
        { signal: options.signal, timeoutMs: (timeoutSec + 10) * 1000 },
      ),
      host.id,
    ));
    // The entry goes out after the host's call: building and sending it costs CPU.
    const entry = options.audit?.entryFor(sandboxId);
    const audited = entry ? nextTurn().then(() => this.repos.audit.record(entry)) : undefined;
    const [ran, recorded] = await Promise.allSettled([running, audited]);
    if (recorded.status === "fulfilled" && recorded.value) {
      if (ran.status === "fulfilled") options.audit!.written();
      else await this.repos.audit.withdraw({ id: recorded.value.id }).catch((err: unknown) => this.log.error({ err, sandboxId }, "could not take back the audit entry of a failed exec"));
    }
    // (A failed entry is left to the request's own recording, which tries again and logs.)
    const result = ran.status === "fulfilled" ? ran.value : await this.stopIfGone(sandbox, ran.reason, true);
    return { stdout: result.stdout, stderr: result.stderr, exitCode: result.exitCode, ...(result.error ? { error: result.error } : {}) };
  }

  /** Runs a command and yields its output as it comes: start, stdout/stderr chunks in order, exit. */
  async *execStream(teamId: string, sandboxId: string, input: Omit<ExecInput, "stdin">, options: { signal?: AbortSignal } = {}): AsyncGenerator<ExecEvent> {
    const sandbox = await this.getRunning(teamId, sandboxId);
    const { host, client } = await this.connect(sandbox);
    const timeoutSec = input.timeoutSec ?? DEFAULT_EXEC_TIMEOUT_SEC;
    const stream = client.execStream(
      { sandboxId, cmd: input.cmd, args: input.args ?? [], envs: input.envs ?? {}, cwd: input.cwd ?? "", user: input.user ?? "", timeoutSec },
      { signal: options.signal, timeoutMs: (timeoutSec + 10) * 1000 },
    );
    try {
      for await (const message of stream) {
        const event = execEvent(message);
        if (event) yield event;
      }
    } catch (err) {
      await this.stopIfGone(sandbox, agentError(err, host.id), true);
    }
  }

  /** Writes a file inside the sandbox (parents created); returns the bytes written. */
  async writeFile(
    teamId: string,
    sandboxId: string,
    path: string,
    content: Uint8Array | AsyncIterable<Uint8Array>,
    options: { user?: string; signal?: AbortSignal } = {},
  ): Promise<number> {
    const sandbox = await this.get(teamId, sandboxId);
    requireStatus(sandbox, ["running"]);
    const { host, client } = await this.connect(sandbox);
    async function* requests(): AsyncGenerator<MessageInitShape<typeof WriteFileStreamRequestSchema>> {
      yield { content: { case: "meta", value: { sandboxId, path, user: options.user ?? "" } } };
      if (content instanceof Uint8Array) yield { content: { case: "chunk", value: content } };
      else for await (const chunk of content) yield { content: { case: "chunk", value: chunk } };
    }
    const written = await callAgent(client.writeFileStream(requests(), { signal: options.signal, timeoutMs: SNAPSHOT_TIMEOUT_MS }), host.id).catch(
      (err: unknown) => this.stopIfGone(sandbox, err, true),
    );
    return Number(written.sizeBytes);
  }

  /** Reads a file from inside the sandbox, in chunks. */
  async *readFile(teamId: string, sandboxId: string, path: string, options: { user?: string; signal?: AbortSignal } = {}): AsyncGenerator<Uint8Array> {
    const sandbox = await this.get(teamId, sandboxId);
    requireStatus(sandbox, ["running"]);
    const { host, client } = await this.connect(sandbox);
    try {
      for await (const message of client.readFileStream({ sandboxId, path, user: options.user ?? "" }, { signal: options.signal, timeoutMs: SNAPSHOT_TIMEOUT_MS })) {
        yield message.chunk;
      }
    } catch (err) {
      await this.stopIfGone(sandbox, agentError(err, host.id), true);
    }
  }

  /**
   * The sandbox's metrics for a range ("10m", "2h", "24h"): what the database holds (flushed at
   * pause and destroy) plus, while it runs, what its host samples now. A stopped sandbox's range
   * ends when it stopped.
   */
  async metrics(teamId: string, sandboxId: string, range: MetricTier = "10m"): Promise<MetricPoint[]> {
    if (!METRIC_TIERS.includes(range)) throw new WrennError("invalid_argument", `range must be one of ${METRIC_TIERS.join(", ")}`);
    const sandbox = await this.get(teamId, sandboxId);
    const end = sandbox.status === "running" ? new Date() : sandbox.endedAt ?? sandbox.statusChangedAt;
    const since = new Date(end.getTime() - RANGE_SECONDS[range] * 1000);
    const points = new Map<number, MetricPoint>();
    for (const row of await this.repos.metrics.list(sandboxId, range, since)) points.set(row.ts.getTime(), row);
    if (sandbox.status === "running" && sandbox.hostId) {
      const connection = await this.connectQuietly(sandbox.hostId);
      const live = connection
        ? await callAgent(connection.client.getSandboxMetrics({ sandboxId, range }), connection.host.id).catch((err: WrennError) => {
            this.log.warn({ sandboxId, teamId, err: err.message }, "live metrics unavailable; showing stored ones");
            return undefined;
          })
        : undefined;
      for (const point of live?.points ?? []) {
        const converted = metricPoint(point);
        if (converted.ts >= since) points.set(converted.ts.getTime(), converted);
      }
    }
    return [...points.values()].sort((a, b) => a.ts.getTime() - b.ts.getTime());
  }

  /**
   * Saves the sandbox's files as template `hostTemplateName` on its host (the template service
   * owns the catalogue row). The row is marked `paused` before the RPC and put back on failure;
   * without keepRunning the host consumes the sandbox and it ends `stopped`.
   */
  async snapshot(
    teamId: string,
    sandboxId: string,
    target: { hostTemplateName: string; keepRunning: boolean; ownerTeamId: string },
  ): Promise<SnapshotResult> {
    const sandbox = await this.get(teamId, sandboxId);
    requireStatus(sandbox, ["running", "paused"]);
    const { host, client } = await this.connect(sandbox);
    await this.flushMetrics(sandbox, client);
    const wasRunning = sandbox.status === "running";
    const marked = wasRunning ? await this.transition(sandboxId, { from: ["running"], to: "paused" }) : sandbox;
    if (!marked) throw new WrennError("conflict", `sandbox ${sandboxId} changed state meanwhile; try again`);
    await this.options.hooks?.afterMarkPaused?.("snapshot", marked);
    let snapshot;
    try {
      snapshot = await callAgent(
        client.createSnapshot(
          { sandboxId, name: target.hostTemplateName, keepRunning: target.keepRunning, teamId: target.ownerTeamId },
          { timeoutMs: SNAPSHOT_TIMEOUT_MS },
        ),
        host.id,
      );
    } catch (err) {
      if (wasRunning) await this.revertMark(sandbox, err);
      else await this.stopIfGone(sandbox, err);
      throw err;
    }
    const after = target.keepRunning
      ? wasRunning
        ? await this.transition(sandboxId, { from: ["paused"], to: "running" })
        : undefined
      : await this.transition(sandboxId, { from: ["paused", "running"], to: "stopped" });
    this.log.info({ sandboxId, teamId, hostId: host.id, template: target.hostTemplateName, keepRunning: target.keepRunning }, "sandbox snapshotted");
    return {
      host,
      sizeBytes: Number(snapshot.sizeBytes),
      includesMemory: snapshot.includesMemory,
      note: snapshot.note,
      sandbox: after ?? (await this.get(teamId, sandboxId)),
    };
  }

  /** Writes the sandbox's whole filesystem as image template `hostTemplateName`; the sandbox ends `stopped`. */
  async flatten(teamId: string, sandboxId: string, target: { hostTemplateName: string; ownerTeamId: string }): Promise<{ host: Host; sizeBytes: number }> {
    const sandbox = await this.get(teamId, sandboxId);
    requireStatus(sandbox, ["running", "paused"]);
    const { host, client } = await this.connect(sandbox);
    await this.flushMetrics(sandbox, client);
    const marked = sandbox.status === "running" ? await this.transition(sandboxId, { from: ["running"], to: "paused" }) : sandbox;
    if (!marked) throw new WrennError("conflict", `sandbox ${sandboxId} changed state meanwhile; try again`);
    let flattened;
    try {
      flattened = await callAgent(
        client.flattenRootfs({ sandboxId, name: target.hostTemplateName, teamId: target.ownerTeamId }, { timeoutMs: SNAPSHOT_TIMEOUT_MS }),
        host.id,
      );
    } catch (err) {
      if (sandbox.status === "running") await this.revertMark(sandbox, err);
      throw err;
    }
    await this.transition(sandboxId, { from: ["paused", "running"], to: "stopped" });
    return { host, sizeBytes: Number(flattened.sizeBytes) };
  }

  /**
   * visibleTemplate, from memory when this team asked for it lately and nothing this process wrote
   * to templates since (catalog-version.ts): read again behind the creates once TEMPLATE_REFRESH_MS
   * old, never older than TEMPLATE_CACHE_MS (read-behind.ts). A template deleted through another
   * control plane meanwhile is refused by its host at the create.
   */
  private templateToCreateFrom(teamId: string, name: string): Promise<Template> {
    return this.templates.get(`${teamId}/${name}`, () => this.visibleTemplate(teamId, name));
  }

  /** The template `name` as `teamId` sees it (its own first, then the platform's), or not_found. */
  async visibleTemplate(teamId: string, name: string): Promise<Template> {
    const template = await this.repos.templates.findVisible(teamId, name);
    if (!template) throw new WrennError("not_found", `template ${name} not found`);
    return template;
  }

  private async connect(sandbox: Pick<Sandbox, "id" | "hostId">): Promise<{ host: Host; client: AgentClient }> {
    if (!sandbox.hostId) throw new WrennError("unavailable", `sandbox ${sandbox.id} has no host`);
    return this.options.registry.connect(sandbox.hostId);
  }

  private async connectQuietly(hostId: string): Promise<{ host: Host; client: AgentClient } | undefined> {
    return this.options.registry.connect(hostId).catch(() => undefined);
  }

  /** Saves what the host's ring buffers hold for the sandbox; a failure costs only those points. */
  private async flushMetrics(sandbox: Sandbox, client: AgentClient): Promise<void> {
    try {
      const flushed = await client.flushSandboxMetrics({ sandboxId: sandbox.id }, { timeoutMs: HOUSEKEEPING_TIMEOUT_MS });
      const tiers: Array<[MetricTier, AgentMetricPoint[]]> = [
        ["10m", flushed.points10m],
        ["2h", flushed.points2h],
        ["24h", flushed.points24h],
      ];
      for (const [tier, points] of tiers) await this.repos.metrics.insert(sandbox.id, tier, points.map(metricPoint));
    } catch (err) {
      this.log.warn({ sandboxId: sandbox.id, teamId: sandbox.teamId, err: (err as Error).message }, "flushing metrics failed");
    }
  }

  /** After a failed RPC that followed a `paused` mark: back to running, or stopped if the host lost it. */
  private async revertMark(sandbox: Sandbox, err: unknown): Promise<void> {
    const gone = err instanceof WrennError && err.code === "not_found";
    await this.transition(sandbox.id, { from: ["paused"], to: gone ? "stopped" : "running" });
    this.log.warn({ sandboxId: sandbox.id, teamId: sandbox.teamId, err: (err as Error).message, gone }, "operation failed; paused mark reverted");
  }

  /** The host said not_found: the sandbox is gone, so the row says stopped. Rethrows when asked. */
  private async stopIfGone(sandbox: RunningSandbox, err: unknown, rethrow: true): Promise<never>;
  private async stopIfGone(sandbox: RunningSandbox, err: unknown, rethrow?: false): Promise<void>;
  private async stopIfGone(sandbox: RunningSandbox, err: unknown, rethrow = false): Promise<void> {
    this.running.forget(sandbox.id);
    if (err instanceof WrennError && err.code === "not_found" && sandbox.hostId) {
      await this.transition(sandbox.id, { from: ["running", "paused"], to: "stopped" });
      if (rethrow) throw new WrennError("not_found", `sandbox ${sandbox.id} is no longer running`, { cause: err });
    }
    if (rethrow) throw err;
  }

  /** Destroys a sandbox its create finished on `host` but nobody will use; the row ends stopped. */
  private async rollBackCreate(sandboxId: string, host: Host): Promise<void> {
    await callAgent(this.options.registry.client(host).destroySandbox({ sandboxId }), host.id).catch((err: WrennError) => {
      if (err.code !== "not_found") this.log.warn({ sandboxId, hostId: host.id, err: err.message }, "rolling back a create failed; the reconciler will destroy it");
    });
    await this.transition(sandboxId, { from: ["starting", "running"], to: "stopped" });
  }
}

/** The call, timed into `agentTime` when there is one. */
function measured<T>(agentTime: AgentTime | undefined, call: Promise<T>): Promise<T> {
  return agentTime ? agentTime.measure(call) : call;
}

/** 20 lowercase letters and digits, like E2B's sandbox ids (host names split on '-', so none here). */
export function newSandboxId(): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  let id = "";
  for (let i = 0; i < 20; i++) id += alphabet[randomInt(alphabet.length)];
  return id;
}

function positiveInteger(value: number, field: string): number {
  if (!Number.isInteger(value) || value < 1) throw new WrennError("invalid_argument", `${field} must be a whole number of at least 1, got ${value}`);
  return value;
}

function nonNegativeInteger(value: number, field: string): number {
  if (!Number.isInteger(value) || value < 0) throw new WrennError("invalid_argument", `${field} must be a whole number of at least 0, got ${value}`);
  return value;
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError(signal);
}

function abortError(signal: AbortSignal): WrennError {
  return new WrennError("unavailable", "the request was canceled; nothing was left running", { cause: signal.reason });
}

function metricPoint(point: AgentMetricPoint): MetricPoint {
  return {
    ts: new Date(Number(point.timestampUnix) * 1000),
    cpuPercent: point.cpuPct,
    memoryBytes: Number(point.memBytes),
    diskBytes: Number(point.diskBytes),
  };
}

function execEvent(message: ExecStreamResponse): ExecEvent | undefined {
  const { event } = message;
  switch (event.case) {
    case "start":
      return { type: "start", pid: event.value.pid };
    case "data":
      if (event.value.output.case === "stdout") return { type: "stdout", data: event.value.output.value };
      if (event.value.output.case === "stderr") return { type: "stderr", data: event.value.output.value };
      return undefined;
    case "end":
      return { type: "exit", exitCode: event.value.exitCode, ...(event.value.error ? { error: event.value.error } : {}) };
    default:
      return undefined;
  }
}

/** A malformed cursor is the caller's mistake: 400, not 500. */
async function withCursorErrors<T>(query: () => Promise<T>): Promise<T> {
  try {
    return await query();
  } catch (err) {
    if (err instanceof InvalidCursorError) throw new WrennError("invalid_argument", err.message);
    throw err;
  }
}
