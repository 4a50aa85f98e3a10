// The hosts the control plane places sandboxes on: registration (a one-time token, or a local agent
// added directly), drain, delete, and the heartbeat loop that keeps their health, capacity and
// template lists current. A host that misses heartbeats becomes unhealthy and its sandboxes
// `unknown`; when it answers again it is ready, and the reconciler (told through onHostReady)
// restores its sandboxes' states.
import { randomUUID } from "node:crypto";
import type { GetHostInfoResponse } from "@wrenn/proto/hostagent";
import type { Logger } from "pino";
import type { Db } from "../db/database.js";
import { isUniqueViolation } from "../db/errors.js";
import type { HostReport } from "../db/hosts.js";
import { createRepositories, type Repositories } from "../db/repositories.js";
import { PLATFORM_TEAM_ID, type Host } from "../db/schema.js";
import { WrennError } from "../errors.js";
import { NOT_ENDED_STATUSES, transitionSandbox } from "../sandboxes/transitions.js";
import { AgentClientCache, agentBaseUrl, agentError, callAgent, openAgentClient, type AgentClient } from "./agent-client.js";
import { checkSecretKey, openSecret, sealSecret } from "./secrets.js";

export const DEFAULT_HEARTBEAT_INTERVAL_MS = 5000;
export const DEFAULT_UNHEALTHY_AFTER_MISSES = 3;
/** Sandboxes of a host silent this long are given up: `unknown` becomes `stopped`. */
export const DEFAULT_LOST_AFTER_MS = 15 * 60_000;
const TERMINATE_TIMEOUT_MS = 5000;
const VERIFY_TIMEOUT_MS = 5000;
const MIB = 1024 * 1024;

/** A host as shown to admins: never its secrets. */
export type PublicHost = Omit<Host, "tokenHash" | "registrationTokenHash" | "agentTokenEncrypted">;

/** What the host's agent said at its last heartbeat (kept in memory, per control plane). */
export interface LiveHostInfo {
  agentVersion: string;
  defaultRuntime: string;
  memoryTotalMb: number;
  memoryAvailableMb: number;
  diskAvailableMb: number;
  slotsTotal: number;
  slotsUsed: number;
  sandboxesRunning: number;
  sandboxesPaused: number;
  at: Date;
}

export interface HostSummary extends PublicHost {
  /** Undefined until this control plane has heard from the host. */
  live?: LiveHostInfo;
  /** Heartbeats missed in a row. */
  missedHeartbeats: number;
}

export interface HostRegistryOptions {
  db: Db;
  /** 32 bytes: seals the agents' tokens in the database. */
  secretKey: Buffer;
  logger: Logger;
  heartbeatIntervalMs?: number;
  unhealthyAfterMisses?: number;
  /** Deadline of one heartbeat call; default min(interval, 3 s). */
  heartbeatTimeoutMs?: number;
  lostAfterMs?: number;
}

type HostReadyListener = (host: Host) => Promise<void> | void;

export class HostRegistry {
  readonly clients = new AgentClientCache();
  readonly heartbeatIntervalMs: number;
  private readonly repos: Repositories;
  private readonly log: Logger;
  private readonly unhealthyAfterMisses: number;
  private readonly heartbeatTimeoutMs: number;
  private readonly lostAfterMs: number;
  private readonly misses = new Map<string, number>();
  private readonly live = new Map<string, LiveHostInfo>();
  /** Last template list written per host, so an unchanged list costs no writes. */
  private readonly templateLists = new Map<string, string>();
  private readonly readyListeners = new Set<HostReadyListener>();
  /**
   * Hosts as their last heartbeat left them, so a call to a host costs no read of its row. Kept
   * to the hosts the heartbeat lists; a deleted host leaves at once (here) or at the next beat
   * (through another control plane).
   */
  private readonly rows = new Map<string, Host>();
  /** Agent tokens already opened, by host, with the sealed value they came from. */
  private readonly tokens = new Map<string, { sealed: string; token: string }>();
  private timer: NodeJS.Timeout | undefined;
  private beating: Promise<void> | undefined;

  constructor(private readonly options: HostRegistryOptions) {
    checkSecretKey(options.secretKey);
    this.repos = createRepositories(options.db);
    this.log = options.logger.child({ component: "hosts" });
    this.heartbeatIntervalMs = options.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS;
    this.unhealthyAfterMisses = options.unhealthyAfterMisses ?? DEFAULT_UNHEALTHY_AFTER_MISSES;
    this.heartbeatTimeoutMs = options.heartbeatTimeoutMs ?? Math.min(this.heartbeatIntervalMs, 3000);
    this.lostAfterMs = options.lostAfterMs ?? DEFAULT_LOST_AFTER_MS;
  }

  /** Admin: a pending host and the one-time token its agent's operator registers it with. */
  async createHost(): Promise<{ host: PublicHost; registrationToken: string }> {
    const { host, registrationToken } = await this.repos.hosts.create();
    this.log.info({ hostId: host.id }, "host created, waiting for registration");
    return { host: publicHost(host), registrationToken };
  }

  /**
   * Trades a registration token for the host's credentials: checks that the agent at `address`
   * answers GetHostInfo with `agentToken`, records what it offers and marks it ready.
   */
  async register(
    registrationToken: string,
    agent: { address: string; agentToken: string },
  ): Promise<{ host: PublicHost; hostToken: string }> {
    const pending = await this.repos.hosts.findByRegistrationToken(registrationToken);
    if (!pending) throw new WrennError("unauthenticated", "the registration token is unknown or was already used");
    const { info, templates } = await this.verifyAgent(agent.address, agent.agentToken);
    const sealed = sealSecret(this.options.secretKey, agent.agentToken, pending.id);
    const registered = await uniqueAddress(agent.address, () =>
      this.repos.hosts.register(registrationToken, hostReport(agent.address, info), sealed),
    );
    if (!registered) throw new WrennError("unauthenticated", "the registration token is unknown or was already used");
    this.hostAnswered(registered.host, info);
    await this.recordTemplates(registered.host.id, templates);
    this.log.info({ hostId: registered.host.id, address: agent.address }, "host registered");
    return { host: publicHost(registered.host), hostToken: registered.token };
  }

  /**
   * Adds the agent running beside the control plane, without a registration token. Idempotent:
   * the same address finds the same host (with its token and capacity refreshed).
   */
  async addLocalHost(address: string, agentToken: string): Promise<PublicHost> {
    const { info, templates } = await this.verifyAgent(address, agentToken);
    const report = hostReport(address, info);
    let wasUnhealthy = false;
    const add = async (): Promise<Host> => {
      const existing = await this.repos.hosts.findByAddress(address);
      wasUnhealthy = existing?.status === "unhealthy";
      if (existing) {
        const sealed = sealSecret(this.options.secretKey, agentToken, existing.id);
        const updated = await this.repos.hosts.updateAgent(existing.id, report, sealed);
        if (updated) return updated;
      }
      const id = randomUUID();
      return this.repos.hosts.createRegistered(id, report, sealSecret(this.options.secretKey, agentToken, id));
    };
    // Two control planes adding one agent at once: the loser of the insert finds the winner's row.
    const host = await add().catch((err: unknown) => (isUniqueViolation(err) ? add() : Promise.reject(err)));
    this.hostAnswered(host, info);
    await this.recordTemplates(host.id, templates);
    this.log.info({ hostId: host.id, address }, "local host added");
    if (wasUnhealthy) await this.hostBack(host);
    return publicHost(host);
  }

  async list(): Promise<HostSummary[]> {
    return (await this.repos.hosts.list()).map((host) => this.summary(host));
  }

  async get(hostId: string): Promise<HostSummary> {
    return this.summary(await this.getHost(hostId));
  }

  /** No new sandboxes are placed on a draining host; its sandboxes keep running. */
  async drain(hostId: string): Promise<PublicHost> {
    const host = await this.getHost(hostId);
    if (host.status === "draining") return publicHost(host);
    const drained = await this.repos.hosts.transition(hostId, { from: ["ready", "unhealthy"], to: "draining" });
    if (!drained) throw new WrennError("failed_precondition", `host ${hostId} is ${host.status}; only a registered host can be drained`);
    this.log.info({ hostId }, "host draining");
    return publicHost(drained);
  }

  /** Takes placements again. */
  async undrain(hostId: string): Promise<PublicHost> {
    const host = await this.getHost(hostId);
    if (host.status !== "draining") return publicHost(host);
    const ready = await this.repos.hosts.transition(hostId, { from: ["draining"], to: "ready" });
    return publicHost(ready ?? (await this.getHost(hostId)));
  }

  /**
   * Removes the host: tells its agent to destroy everything and exit (at once, not at the next
   * heartbeat), marks its sandboxes stopped, and deletes it. A host that does not answer is
   * removed all the same.
   */
  async delete(hostId: string): Promise<void> {
    const host = await this.getHost(hostId);
    if (host.address && host.agentTokenEncrypted) {
      await callAgent(this.client(host).terminate({}, { timeoutMs: TERMINATE_TIMEOUT_MS }), hostId).catch((err: unknown) =>
        this.log.warn({ hostId, err }, "the agent did not take Terminate; removing the host anyway"),
      );
    }
    this.forgetHost(hostId);
    const sandboxes = await this.repos.sandboxes.listAll({ hostId, statuses: [...NOT_ENDED_STATUSES] });
    for (const sandbox of sandboxes) {
      await transitionSandbox(this.options.db, sandbox.id, { from: NOT_ENDED_STATUSES, to: "stopped" });
    }
    await this.repos.hosts.delete(hostId);
    this.log.info({ hostId, sandboxesStopped: sandboxes.length }, "host deleted");
  }

  /** The host row, or not_found. */
  async getHost(hostId: string): Promise<Host> {
    const host = isUuid(hostId) ? await this.repos.hosts.get(hostId) : undefined;
    if (!host) throw new WrennError("not_found", `host ${hostId} not found`);
    return host;
  }

  /** A client of the host's agent, carrying its token. */
  client(host: Host): AgentClient {
    const { address, token } = this.agentEndpoint(host);
    return this.clients.get(host.id, { address, token });
  }

  /**
   * Where the host's port proxy listens (the agent's address with the proxy port) and the token it
   * wants in X-Wrenn-Host-Token: the way to reach a port of one of its sandboxes, envd's included.
   */
  proxyEndpoint(host: Host): { baseUrl: string; token: string } {
    const { address, token } = this.agentEndpoint(host);
    if (!host.proxyPort) throw new WrennError("unavailable", `host ${host.id} has not reported a port proxy; update its agent`);
    const url = new URL(agentBaseUrl(address));
    url.port = String(host.proxyPort);
    return { baseUrl: url.origin, token };
  }

  private agentEndpoint(host: Host): { address: string; token: string } {
    if (!host.address || !host.agentTokenEncrypted) {
      throw new WrennError("unavailable", `host ${host.id} has not registered an agent`);
    }
    let opened = this.tokens.get(host.id);
    if (opened?.sealed !== host.agentTokenEncrypted) {
      opened = { sealed: host.agentTokenEncrypted, token: openSecret(this.options.secretKey, host.agentTokenEncrypted, host.id) };
      this.tokens.set(host.id, opened);
    }
    return { address: host.address, token: opened.token };
  }

  /** The host (which must exist) and a client of its agent. */
  async connect(hostId: string): Promise<{ host: Host; client: AgentClient }> {
    const host = this.rows.get(hostId) ?? (await this.repos.hosts.get(hostId));
    if (!host) throw new WrennError("unavailable", `host ${hostId} is gone`);
    return { host, client: this.client(host) };
  }

  liveInfo(hostId: string): LiveHostInfo | undefined {
    return this.live.get(hostId);
  }

  /** `listener` runs each time a host answers again after missing enough heartbeats to be unhealthy. */
  onHostReady(listener: HostReadyListener): void {
    this.readyListeners.add(listener);
  }

  /** Starts the heartbeat loop (the first beat at once). */
  start(): void {
    if (this.timer) return;
    const tick = () => {
      this.beating ??= this.heartbeat()
        .catch((err: unknown) => this.log.error({ err }, "heartbeat pass failed"))
        .finally(() => (this.beating = undefined));
    };
    this.timer = setInterval(tick, this.heartbeatIntervalMs);
    tick();
  }

  /** Stops the loop, waits for a pass in progress, and closes the agents' connections. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.beating;
    this.clients.close();
  }

  /** One heartbeat to every registered host, then gives up on hosts silent for too long. */
  async heartbeat(): Promise<void> {
    const hosts = await this.repos.hosts.list(["ready", "unhealthy", "draining"]);
    const listed = new Set(hosts.map((host) => host.id));
    for (const id of this.rows.keys()) if (!listed.has(id)) this.rows.delete(id);
    await Promise.all(hosts.map((host) => this.beat(host)));
    await this.stopLostSandboxes(hosts);
  }

  private async beat(host: Host): Promise<void> {
    if (!host.address || !host.agentTokenEncrypted) return;
    // Silent until now (an unhealthy host, or a draining one that stays draining): its sandboxes
    // may be `unknown`, and the reconciler should look at once when it answers.
    const wasSilent = host.status === "unhealthy" || (this.misses.get(host.id) ?? 0) >= this.unhealthyAfterMisses;
    let info: GetHostInfoResponse;
    let client: AgentClient;
    try {
      client = this.client(host);
      info = await callAgent(client.getHostInfo({}, { timeoutMs: this.heartbeatTimeoutMs }), host.id);
    } catch (err) {
      await this.missed(host, err);
      return;
    }
    const updated = await this.repos.hosts.heartbeat(host.id, hostReport(host.address, info));
    if (!updated) return; // deleted meanwhile
    this.hostAnswered(updated, info);
    try {
      const { templates } = await callAgent(client.listTemplates({}, { timeoutMs: this.heartbeatTimeoutMs }), host.id);
      await this.recordTemplates(host.id, templates);
    } catch (err) {
      this.log.warn({ hostId: host.id, err }, "listing the host's templates failed");
    }
    if (wasSilent) await this.hostBack(updated);
  }

  private async hostBack(host: Host): Promise<void> {
    this.log.info({ hostId: host.id, status: host.status }, "host answers again");
    for (const listener of this.readyListeners) {
      await Promise.resolve(listener(host)).catch((err: unknown) => this.log.error({ hostId: host.id, err }, "host-ready listener failed"));
    }
  }

  private async missed(host: Host, err: unknown): Promise<void> {
    const misses = (this.misses.get(host.id) ?? 0) + 1;
    this.misses.set(host.id, misses);
    this.log.warn({ hostId: host.id, misses, err: agentError(err, host.id).message }, "host missed a heartbeat");
    if (misses < this.unhealthyAfterMisses) return;
    // A fresh connection from now on: the old one may be to a dead process. Not at the first miss:
    // dropping the connection aborts every call on it, and a host that is only slow for a moment
    // (a heartbeat timing out under load) would fail the creates and execs it is working on.
    this.clients.forget(host.id);
    if (host.status === "ready" && (await this.repos.hosts.transition(host.id, { from: ["ready"], to: "unhealthy" }))) {
      this.log.warn({ hostId: host.id, misses }, "host unhealthy");
    }
    // Whatever the host ran may or may not still run: say so, until it answers or is given up.
    const sandboxes = await this.repos.sandboxes.listAll({ hostId: host.id, statuses: ["running", "paused"] });
    for (const sandbox of sandboxes) {
      const changed = await transitionSandbox(this.options.db, sandbox.id, { from: ["running", "paused"], to: "unknown" });
      if (changed) this.log.warn({ sandboxId: sandbox.id, hostId: host.id, teamId: sandbox.teamId, was: sandbox.status }, "sandbox unknown: its host is silent");
    }
  }

  private async stopLostSandboxes(hosts: readonly Host[]): Promise<void> {
    const lostBefore = Date.now() - this.lostAfterMs;
    for (const host of hosts) {
      if (host.status !== "unhealthy" || (host.lastHeartbeatAt?.getTime() ?? 0) > lostBefore) continue;
      for (const sandbox of await this.repos.sandboxes.listAll({ hostId: host.id, statuses: ["unknown"] })) {
        if (await transitionSandbox(this.options.db, sandbox.id, { from: ["unknown"], to: "stopped" })) {
          this.log.warn({ sandboxId: sandbox.id, hostId: host.id, teamId: sandbox.teamId }, "sandbox given up: its host has been silent too long");
        }
      }
    }
  }

  private hostAnswered(host: Host, info: GetHostInfoResponse): void {
    this.rows.set(host.id, host);
    this.misses.delete(host.id);
    this.live.set(host.id, liveHostInfo(info));
  }

  private forgetHost(hostId: string): void {
    this.rows.delete(hostId);
    this.clients.forget(hostId);
    this.misses.delete(hostId);
    this.live.delete(hostId);
    this.templateLists.delete(hostId);
    this.tokens.delete(hostId);
  }

  /**
   * Writes what the host's disk holds (for placement) and adds its platform templates to the
   * catalogue, so a template built into an agent appears for every team.
   */
  private async recordTemplates(
    hostId: string,
    templates: ReadonlyArray<{ name: string; teamId: string; kind: string; sizeBytes: bigint }>,
  ): Promise<void> {
    const entries = templates
      .map((template) => ({ name: template.name, teamId: template.teamId || PLATFORM_TEAM_ID, kind: template.kind, sizeBytes: Number(template.sizeBytes) }))
      .sort((a, b) => a.name.localeCompare(b.name));
    const fingerprint = JSON.stringify(entries);
    if (this.templateLists.get(hostId) === fingerprint) return;
    await this.repos.hostTemplates.replace(hostId, entries);
    for (const entry of entries) {
      if (entry.teamId !== PLATFORM_TEAM_ID) continue;
      if (await this.repos.templates.ensurePlatform(entry.name, entry.sizeBytes)) {
        this.log.info({ hostId, template: entry.name }, "platform template found on a host");
      }
    }
    this.templateLists.set(hostId, fingerprint);
  }

  /** Asks the agent at `address` who it is, with `token`; errors say what to fix. */
  private async verifyAgent(address: string, token: string) {
    if (!/^[A-Za-z0-9.\-[\]:]+:\d{1,5}$/.test(address) && !/^https?:\/\//.test(address)) {
      throw new WrennError("invalid_argument", `agent address ${JSON.stringify(address)} must be host:port`);
    }
    const agent = openAgentClient({ address, token }, VERIFY_TIMEOUT_MS);
    try {
      const info = await agent.client.getHostInfo({});
      const { templates } = await agent.client.listTemplates({});
      return { info, templates };
    } catch (err) {
      const error = agentError(err);
      throw new WrennError("invalid_argument", `the agent at ${address} did not accept the host's agent token or did not answer: ${error.message}`, { cause: error });
    } finally {
      agent.close();
    }
  }

  private summary(host: Host): HostSummary {
    return { ...publicHost(host), live: this.live.get(host.id), missedHeartbeats: this.misses.get(host.id) ?? 0 };
  }
}

export function publicHost(host: Host): PublicHost {
  const { tokenHash: _tokenHash, registrationTokenHash: _registrationTokenHash, agentTokenEncrypted: _agentTokenEncrypted, ...rest } = host;
  return rest;
}

function hostReport(address: string, info: GetHostInfoResponse): HostReport {
  return {
    address,
    runtimes: info.runtimes.filter((runtime) => runtime.available).map((runtime) => runtime.name),
    capacity: {
      cpu: info.cpuCount,
      memoryMb: Math.floor(Number(info.memoryTotalBytes) / MIB),
      diskMb: Math.floor(Number(info.diskTotalBytes) / MIB),
      slots: info.slotsTotal,
    },
    ...(info.proxyPort > 0 ? { proxyPort: info.proxyPort } : {}),
  };
}

function liveHostInfo(info: GetHostInfoResponse): LiveHostInfo {
  return {
    agentVersion: info.agentVersion,
    defaultRuntime: info.defaultRuntime,
    memoryTotalMb: Math.floor(Number(info.memoryTotalBytes) / MIB),
    memoryAvailableMb: Math.floor(Number(info.memoryAvailableBytes) / MIB),
    diskAvailableMb: Math.floor(Number(info.diskAvailableBytes) / MIB),
    slotsTotal: info.slotsTotal,
    slotsUsed: info.slotsUsed,
    sandboxesRunning: info.sandboxesRunning,
    sandboxesPaused: info.sandboxesPaused,
    at: new Date(),
  };
}

async function uniqueAddress<T>(address: string, write: () => Promise<T>): Promise<T> {
  try {
    return await write();
  } catch (err) {
    if (isUniqueViolation(err)) throw new WrennError("conflict", `another host is already registered at ${address}`);
    throw err;
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export function isUuid(value: string): boolean {
  return UUID.test(value);
}
