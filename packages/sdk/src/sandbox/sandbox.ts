// A sandbox: create, connect, list, and its lifecycle (kill, pause, resume, timeout, snapshot),
// with its commands, files and terminals. Calls go to the control plane's /v1 API; terminals to
// envd through the edge proxy.
import type { CreateSandboxBody, MetricsRange, SandboxInfo, SandboxLogs, SandboxMetrics, SandboxState, TemplateInfo } from "../api/types.js";
import { resolveConnection, type CallOptions, type ConnectionOptions } from "../connection/config.js";
import { Transport, dataOf } from "../connection/transport.js";
import { envdClients, type EnvdClients } from "../envd/client.js";
import { ConflictError } from "../errors.js";
import { Commands } from "./commands.js";
import { Files } from "./files.js";
import { Pty } from "./pty.js";

/**
 * The create request's fields as the API defines them (template, runtime, timeoutSec, metadata,
 * vcpus, memoryMb, diskSizeMb, egress lists, …: see the generated schema), with `envs` for `envVars`.
 * `runtime` ("gvisor", "qemu", "firecracker") places the sandbox on a host offering it
 * (ConflictError when none does); without it the host boots its default.
 */
export type CreateSandboxOptions = Omit<CreateSandboxBody, "envVars"> &
  CallOptions & {
    /** Environment of every process in the sandbox (never stored by the control plane). */
    envs?: Record<string, string>;
  };

export interface ListSandboxesOptions extends CallOptions {
  /** Only sandboxes in these states; default: those not ended (starting, running, paused, unknown). */
  state?: SandboxState[];
  /** Only sandboxes whose metadata has all these pairs. */
  metadata?: Record<string, string>;
  /** Sandboxes per page (1–100). */
  limit?: number;
}

export interface SnapshotOptions extends CallOptions {
  /** The new template's name. */
  name: string;
  /** Keep the sandbox running afterwards; by default the snapshot consumes it. */
  keepRunning?: boolean;
}


export class Sandbox {
  readonly commands: Commands;
  readonly files: Files;
  /** Terminals, through envd on the edge proxy. */
  readonly pty: Pty;
  private envd: EnvdClients | undefined;

  private constructor(
    /** The sandbox's id: lowercase letters and digits. */
    readonly sandboxId: string,
    private readonly api: Transport,
    /** envd's access token (`X-Access-Token` through the edge proxy); known only to the creator. */
    readonly envdAccessToken: string | undefined,
    /** Opens the sandbox's own ports (not envd's) as header `e2b-traffic-access-token`; known only to the creator. */
    readonly trafficAccessToken: string | undefined,
  ) {
    this.commands = new Commands(api, sandboxId);
    this.files = new Files(api, sandboxId);
    this.pty = new Pty(() => (this.envd ??= envdClients(api.config, sandboxId, envdAccessToken)));
  }

  /** Creates a sandbox and waits until it runs. Retried only when the API certainly did not start one (refused connection, 429). */
  static async create(options: CreateSandboxOptions = {}, connection: ConnectionOptions = {}): Promise<Sandbox> {
    const api = new Transport(resolveConnection(connection));
    const { signal, timeoutMs, envs, ...fields } = options;
    const body: CreateSandboxBody = { ...fields, ...(envs ? { envVars: envs } : {}) };
    const created = dataOf(
      await api.client.POST("/v1/sandboxes", { body, fetch: api.fetchFor({ retry: "unsent", signal, timeoutMs }) }),
    );
    return new Sandbox(created.id, api, created.envdAccessToken, created.trafficAccessToken);
  }

  /** A handle on an existing sandbox of the team; a paused one is resumed. */
  static async connect(sandboxId: string, options: CallOptions & { timeoutSec?: number } = {}, connection: ConnectionOptions = {}): Promise<Sandbox> {
    const sandbox = Sandbox.handle(sandboxId, connection);
    const info = await sandbox.getInfo(options);
    if (info.state === "paused") await sandbox.resume(options);
    else if (info.state === "stopped" || info.state === "error") {
      throw new ConflictError(`sandbox ${sandboxId} has ended (${info.state}): create a new one`, { code: "sandbox_ended" });
    }
    return sandbox;
  }

  /**
   * A handle on an existing sandbox that leaves it as it is (connect() resumes a paused one): no
   * call is made here; getInfo, pause, kill, setTimeout, metrics and logs answer for its state.
   */
  static handle(sandboxId: string, connection: ConnectionOptions = {}): Sandbox {
    return new Sandbox(sandboxId, new Transport(resolveConnection(connection)), undefined, undefined);
  }

  /** The team's sandboxes, newest first, a page at a time: `for await (const page of Sandbox.list())`. */
  static async *list(options: ListSandboxesOptions = {}, connection: ConnectionOptions = {}): AsyncGenerator<SandboxInfo[], void, undefined> {
    const api = new Transport(resolveConnection(connection));
    const { signal, timeoutMs, state, metadata, limit } = options;
    // The server decodes each key and value once more, so a value may hold '=' or '&'.
    const pairs = Object.entries(metadata ?? {}).map(([key, value]) => `${encodeURIComponent(key)}=${encodeURIComponent(value)}`);
    let cursor: string | undefined;
    do {
      const page = dataOf(
        await api.client.GET("/v1/sandboxes", {
          params: { query: { ...(state ? { state: state.join(",") } : {}), ...(pairs.length ? { metadata: pairs } : {}), limit, cursor } },
          fetch: api.fetchFor({ retry: "idempotent", signal, timeoutMs }),
        }),
      );
      yield page.sandboxes;
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
  }

  /** What the API knows of the sandbox now. */
  async getInfo(options: CallOptions = {}): Promise<SandboxInfo> {
    return dataOf(await this.api.client.GET("/v1/sandboxes/{id}", { params: { path: this.path }, fetch: this.fetch("idempotent", options) }));
  }

  /** Whether it is running (a paused or ended sandbox is not). */
  async isRunning(options: CallOptions = {}): Promise<boolean> {
    return (await this.getInfo(options)).state === "running";
  }

  /** Stops it for good; killing a stopped sandbox is a no-op. */
  async kill(options: CallOptions = {}): Promise<SandboxInfo> {
    return dataOf(await this.api.client.DELETE("/v1/sandboxes/{id}", { params: { path: this.path }, fetch: this.fetch("idempotent", options) }));
  }

  /** Pauses a running sandbox (ConflictError when it is paused already). */
  async pause(options: CallOptions = {}): Promise<SandboxInfo> {
    return dataOf(await this.api.client.POST("/v1/sandboxes/{id}/pause", { params: { path: this.path }, fetch: this.fetch("unsent", options) }));
  }

  /** Resumes a paused sandbox, optionally with a new inactivity timeout; a running one keeps running. */
  async resume(options: CallOptions & { timeoutSec?: number } = {}): Promise<SandboxInfo> {
    const body = options.timeoutSec === undefined ? {} : { timeoutSec: options.timeoutSec };
    return dataOf(await this.api.client.POST("/v1/sandboxes/{id}/resume", { params: { path: this.path }, body, fetch: this.fetch("idempotent", options) }));
  }

  /** Sets the inactivity timeout in seconds (0: never pause); counts as activity. */
  async setTimeout(timeoutSec: number, options: CallOptions = {}): Promise<SandboxInfo> {
    return dataOf(
      await this.api.client.POST("/v1/sandboxes/{id}/timeout", { params: { path: this.path }, body: { timeoutSec }, fetch: this.fetch("idempotent", options) }),
    );
  }

  /** Resets the inactivity timer. */
  async keepAlive(options: CallOptions = {}): Promise<void> {
    await this.api.client.POST("/v1/sandboxes/{id}/ping", { params: { path: this.path }, fetch: this.fetch("idempotent", options) });
  }

  /** Saves the sandbox's files as a new template of the team (on the sandbox's host). */
  async snapshot(options: SnapshotOptions): Promise<TemplateInfo> {
    const body = { fromSandbox: this.sandboxId, name: options.name, ...(options.keepRunning === undefined ? {} : { keepRunning: options.keepRunning }) };
    const result = await this.api.client.POST("/v1/templates", { body, fetch: this.fetch("unsent", options) });
    return dataOf(result) as TemplateInfo;
  }

  /** CPU, memory and disk over the last `range` (10m, 2h or 24h). */
  async metrics(options: CallOptions & { range?: MetricsRange } = {}): Promise<SandboxMetrics> {
    const query = options.range ? { range: options.range } : {};
    return dataOf(await this.api.client.GET("/v1/sandboxes/{id}/metrics", { params: { path: this.path, query }, fetch: this.fetch("idempotent", options) }));
  }

  /** What envd printed in the sandbox, oldest first, from `start` on (at most `limit`, default 100). */
  async logs(options: CallOptions & { start?: Date | number; limit?: number } = {}): Promise<SandboxLogs> {
    const start = options.start instanceof Date ? options.start.getTime() : options.start;
    return dataOf(
      await this.api.client.GET("/v1/sandboxes/{id}/logs", {
        params: { path: this.path, query: { ...(start === undefined ? {} : { start }), ...(options.limit === undefined ? {} : { limit: options.limit }) } },
        fetch: this.fetch("idempotent", options),
      }),
    );
  }

  /**
   * The host name of a port of the sandbox on the edge proxy: `<port>-<id>.<domain>`, plus the
   * API's port when its URL names one (the proxy shares the API's port).
   */
  getHost(port: number): string {
    const apiPort = new URL(this.api.config.apiUrl).port;
    return `${port}-${this.sandboxId}.${this.api.config.domain}${apiPort ? `:${apiPort}` : ""}`;
  }

  private get path(): { id: string } {
    return { id: this.sandboxId };
  }

  private fetch(retry: "idempotent" | "unsent", options: CallOptions) {
    return this.api.fetchFor({ retry, signal: options.signal, timeoutMs: options.timeoutMs });
  }
}
