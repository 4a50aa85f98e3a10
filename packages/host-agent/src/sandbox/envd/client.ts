// The host agent's client for envd, the daemon inside every sandbox: run commands, move files,
// wait for it to boot. Connect RPC (binary) and envd's plain HTTP endpoints share one keep-alive
// HTTP/1.1 agent, so a command round trip reuses a warm socket.
import http from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import { Code, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { Process, Signal } from "@wrenn/proto/envd/process";
import { EnvdError, EnvdUnavailableError, toEnvdError } from "./errors.js";
import { ConnectTimeoutError, errorOfResponse, readSmallBody, sendHttp, type HttpCall } from "./http.js";

export { EnvdError, EnvdUnavailableError, connectCodeOfHttpStatus } from "./errors.js";

export interface EnvdClientOptions {
  /** e.g. `http://10.200.3.2:49983`. */
  baseUrl: string;
  /** Sent as X-Access-Token; `init({ accessToken })` replaces it. */
  accessToken?: string;
  /** The account commands and file operations run as unless a call names one; envd's default when unset. */
  defaultUser?: string;
}

export interface InitOptions {
  envVars?: Record<string, string>;
  accessToken?: string;
  defaultUser?: string;
  defaultWorkdir?: string;
  /** The host's time (RFC 3339): envd sets the sandbox's clock to it when it is off (after a restore). */
  timestamp?: string;
  /** The sandbox's hostname: envd renames the machine (a VM restored from another's memory). */
  hostname?: string;
}

export interface ExecRequest {
  cmd: string;
  args?: string[];
  envs?: Record<string, string>;
  cwd?: string;
  user?: string;
  /** Written to the process's stdin, which is then closed; without it stdin is /dev/null. */
  stdin?: Uint8Array;
  /** The process is killed (SIGKILL) after this long. `exec` defaults to 30 s; `execStream` has none unless given. */
  timeoutMs?: number;
}

export interface ExecResult {
  stdout: Uint8Array;
  stderr: Uint8Array;
  /** -1 when the process was killed by a signal. */
  exitCode: number;
  error?: string;
}

export type ExecEvent =
  | { type: "start"; pid: number }
  | { type: "stdout" | "stderr"; data: Uint8Array }
  | { type: "end"; exitCode: number; error?: string };

export interface FileOptions {
  /** The account the file is read or written as (its home resolves relative paths). */
  user?: string;
  signal?: AbortSignal;
}

const DEFAULT_EXEC_TIMEOUT_MS = 30_000;
/** How long a timed-out process gets, once killed, to report its end before the call gives up on it. */
const END_AFTER_KILL_MS = 2_000;
/** How long an aborted call waits for envd to name the process (start{pid}) so it can kill it. */
const START_AFTER_ABORT_MS = 2_000;
/** Unary calls (signals, input) are small: anything slower than this means envd is stuck. */
const UNARY_TIMEOUT_MS = 10_000;
const INIT_TIMEOUT_MS = 10_000;
/** Time to the first byte of a download; the body itself may take as long as it takes. */
const DOWNLOAD_HEADERS_TIMEOUT_MS = 30_000;
/** stdin is sent in SendInput calls of at most this many bytes (envd bounds a unary message). */
const STDIN_CHUNK_BYTES = 1 << 20;
/**
 * While waiting for envd, a connection not up this soon is abandoned for a fresh one (doubling
 * each time): a SYN lost while the sandbox's network comes up is otherwise resent only after 1 s.
 */
const FIRST_CONNECT_TIMEOUT_MS = 100;
const HEALTH_ATTEMPT_TIMEOUT_MS = 1_000;
/** How often waitUntilReady asks whether a silent envd's sandbox is still there. */
const GONE_CHECK_INTERVAL_MS = 1_000;

const basicAuth = (user: string): string => "Basic " + Buffer.from(`${user}:`).toString("base64");

/** Talks to one sandbox's envd. Cheap to create; call close() when the sandbox goes away. */
export class EnvdClient {
  readonly baseUrl: string;
  private accessToken: string | undefined;
  private readonly defaultUser: string | undefined;
  private reportedVersion: string | undefined;
  private readonly agent: http.Agent;
  private readonly processes: Client<typeof Process>;

  constructor(options: EnvdClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.accessToken = options.accessToken || undefined;
    this.defaultUser = options.defaultUser;
    // noDelay: a streamed event or a small request must not wait for a delayed ACK (~40 ms).
    this.agent = new http.Agent({ keepAlive: true, keepAliveMsecs: 15_000, noDelay: true, scheduling: "lifo" });
    const sendAccessToken: Interceptor = (next) => (req) => {
      if (this.accessToken) req.header.set("x-access-token", this.accessToken);
      return next(req);
    };
    const transport = createConnectTransport({
      baseUrl: this.baseUrl,
      httpVersion: "1.1",
      useBinaryFormat: true,
      nodeOptions: { agent: this.agent },
      interceptors: [sendAccessToken],
    });
    this.processes = createClient(Process, transport);
  }

  /**
   * Resolves once envd answers /health; throws EnvdUnavailableError (with the last failure) after
   * `timeoutMs`, or as soon as `gone` (asked about once a second while envd is silent) says why
   * envd never will (its sandbox stopped).
   */
  async waitUntilReady(options: { timeoutMs: number; intervalMs?: number; gone?: () => Promise<string | undefined> }): Promise<void> {
    const intervalMs = options.intervalMs ?? 10;
    const started = performance.now();
    const deadline = started + options.timeoutMs;
    let askedAt = started;
    let connectTimeoutMs = FIRST_CONNECT_TIMEOUT_MS;
    let attempts = 0;
    let lastError: unknown;
    for (;;) {
      const remaining = deadline - performance.now();
      if (remaining <= 0) break;
      attempts++;
      const cutByDeadline = remaining < Math.min(HEALTH_ATTEMPT_TIMEOUT_MS, connectTimeoutMs);
      try {
        const status = await this.probeHealth(Math.min(remaining, HEALTH_ATTEMPT_TIMEOUT_MS), Math.min(remaining, connectTimeoutMs));
        if (status === 204) return;
        lastError = new EnvdError(`/health answered HTTP ${status}`, Code.Unavailable);
      } catch (err) {
        // An attempt the deadline cut short says less than the failure before it (refused, unreachable).
        if (!(cutByDeadline && lastError !== undefined)) lastError = err;
        // A connection that timed out may just be slow (a loaded host): give the next one longer.
        if (err instanceof EnvdError && err.cause instanceof ConnectTimeoutError) connectTimeoutMs = Math.min(connectTimeoutMs * 2, HEALTH_ATTEMPT_TIMEOUT_MS);
      }
      if (options.gone && performance.now() - askedAt >= GONE_CHECK_INTERVAL_MS) {
        const why = await options.gone();
        askedAt = performance.now();
        if (why) throw new EnvdUnavailableError(`envd at ${this.baseUrl} will never answer: ${why}`, { cause: lastError });
      }
      const wait = Math.min(intervalMs, deadline - performance.now());
      if (wait > 0) await sleep(wait);
    }
    const reason = lastError instanceof Error ? lastError.message : String(lastError ?? "no attempt made");
    throw new EnvdUnavailableError(`envd at ${this.baseUrl} not ready after ${options.timeoutMs} ms (${attempts} attempts; last: ${reason})`, { cause: lastError });
  }

  /** True when envd answers /health (204) within `timeoutMs`. */
  async health(timeoutMs: number): Promise<boolean> {
    try {
      return (await this.probeHealth(timeoutMs)) === 204;
    } catch {
      return false;
    }
  }

  /** The envd version, when envd reports one (an X-Envd-Version header on /health or /init); else undefined. */
  async version(): Promise<string | undefined> {
    if (this.reportedVersion) return this.reportedVersion; // fixed for the sandbox's life: asked once
    const response = await sendHttp(this.agent, this.baseUrl, { method: "GET", path: "/health", headersTimeoutMs: UNARY_TIMEOUT_MS, what: "GET /health" });
    await readSmallBody(response);
    return this.noteVersion(response) ?? this.reportedVersion;
  }

  /** POST /init: default env vars, access token, default user and workdir; later calls send the new token. */
  async init(options: InitOptions): Promise<void> {
    const body = JSON.stringify({
      envVars: options.envVars,
      accessToken: options.accessToken,
      defaultUser: options.defaultUser,
      defaultWorkdir: options.defaultWorkdir,
      timestamp: options.timestamp,
      hostname: options.hostname,
    });
    const response = await sendHttp(this.agent, this.baseUrl, {
      method: "POST",
      path: "/init",
      headers: { ...this.tokenHeader(), "content-type": "application/json", "content-length": Buffer.byteLength(body) },
      body: Buffer.from(body),
      headersTimeoutMs: INIT_TIMEOUT_MS,
      what: "POST /init",
    });
    this.noteVersion(response);
    if (!isSuccess(response)) throw await errorOfResponse(response, "POST /init");
    await readSmallBody(response);
    if (options.accessToken !== undefined) this.accessToken = options.accessToken || undefined;
  }

  /**
   * Runs a command to completion and returns its output. A timeout kills it and is reported in
   * `error`; a command that cannot start (no such file, unknown user, missing cwd) throws EnvdError.
   */
  async exec(request: ExecRequest): Promise<ExecResult> {
    const stdout: Uint8Array[] = [];
    const stderr: Uint8Array[] = [];
    const timeoutMs = request.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS;
    for await (const event of this.run(request, undefined, timeoutMs)) {
      if (event.type === "stdout") stdout.push(event.data);
      else if (event.type === "stderr") stderr.push(event.data);
      else if (event.type === "end") {
        return { stdout: Buffer.concat(stdout), stderr: Buffer.concat(stderr), exitCode: event.exitCode, ...(event.error !== undefined ? { error: event.error } : {}) };
      }
    }
    throw new EnvdError(`envd ended the stream of "${request.cmd}" without its end`, Code.Unavailable);
  }

  /**
   * Runs a command (once iterated) and yields start, its output as it comes, then end. Aborting
   * `signal` or leaving the loop early kills the process, and the iteration ends.
   */
  execStream(request: ExecRequest, signal?: AbortSignal): AsyncIterable<ExecEvent> {
    return this.run(request, signal, request.timeoutMs);
  }

  /** Writes `data` to `path` (parents created), streaming an iterable as it comes; returns the bytes written. */
  async writeFile(path: string, data: Uint8Array | AsyncIterable<Uint8Array>, options: FileOptions = {}): Promise<number> {
    let bytes = 0;
    const body =
      data instanceof Uint8Array
        ? ((bytes = data.byteLength), data)
        : (async function* counted() {
            for await (const chunk of data) {
              bytes += chunk.byteLength;
              yield chunk;
            }
          })();
    const what = `write ${path}`;
    const response = await sendHttp(this.agent, this.baseUrl, {
      method: "POST",
      path: this.filesPath(path, options.user),
      headers: {
        ...this.tokenHeader(),
        "content-type": "application/octet-stream",
        ...(data instanceof Uint8Array ? { "content-length": data.byteLength } : {}),
      },
      body,
      signal: options.signal,
      what,
    });
    if (!isSuccess(response)) {
      const error = await errorOfResponse(response, what);
      response.destroy(); // the upload may still be going: drop the connection
      throw error;
    }
    await readSmallBody(response).catch((err: unknown) => {
      throw toEnvdError(err, what);
    });
    return bytes;
  }

  /** Reads a whole file into memory. */
  async readFile(path: string, options: FileOptions = {}): Promise<Uint8Array> {
    const chunks: Uint8Array[] = [];
    for await (const chunk of this.readFileStream(path, options)) chunks.push(chunk);
    return Buffer.concat(chunks);
  }

  /** Streams a file's bytes as envd sends them. */
  async *readFileStream(path: string, options: FileOptions = {}): AsyncIterable<Uint8Array> {
    const what = `read ${path}`;
    const response = await sendHttp(this.agent, this.baseUrl, {
      method: "GET",
      path: this.filesPath(path, options.user),
      headers: this.tokenHeader(),
      headersTimeoutMs: DOWNLOAD_HEADERS_TIMEOUT_MS,
      signal: options.signal,
      what,
    });
    if (!isSuccess(response)) throw await errorOfResponse(response, what);
    const expected = Number(response.headers["content-length"] ?? Number.NaN);
    let received = 0;
    try {
      for await (const chunk of response as AsyncIterable<Buffer>) {
        received += chunk.length;
        yield chunk;
      }
    } catch (err) {
      throw toEnvdError(err, what);
    } finally {
      if (!response.complete) response.destroy(); // left early: the rest of the body is not wanted
    }
    if (Number.isFinite(expected) && received !== expected) {
      throw new EnvdError(`${what}: envd sent ${received} of ${expected} bytes`, Code.DataLoss);
    }
  }

  /** Closes every socket to envd, including those of calls still running. */
  /**
   * Closes the connections kept alive to envd (new calls open new ones): before a VM's memory is
   * saved, so no copy of it wakes up holding a connection to a host that is not there.
   */
  dropIdleConnections(): void {
    for (const sockets of Object.values(this.agent.freeSockets)) for (const socket of sockets ?? []) socket.destroy();
  }

  close(): void {
    this.agent.destroy();
  }

  /**
   * Starts `request` and yields its events. An abort kills the process and ends the iteration at
   * once; a timeout kills it and still yields what it printed and its end (error "timeout after N ms").
   */
  private async *run(request: ExecRequest, signal: AbortSignal | undefined, timeoutMs: number | undefined): AsyncGenerator<ExecEvent> {
    if (signal?.aborted) return;
    const call = new AbortController();
    const timers: NodeJS.Timeout[] = [];
    const later = (ms: number, action: () => void): void => void timers.push(setTimeout(action, ms));
    let pid: number | undefined;
    let killing: Promise<void> | undefined;
    let timedOut = false;
    let ended = false;
    const kill = (): Promise<void> => (killing ??= pid === undefined ? Promise.resolve() : this.killProcess(pid));
    const onAbort = (): void => {
      for (const timer of timers) clearTimeout(timer);
      if (pid !== undefined) {
        void kill();
        call.abort();
      } else later(START_AFTER_ABORT_MS, () => call.abort()); // envd may never name it
    };
    const onTimeout = (): void => {
      timedOut = true;
      if (pid !== undefined) void kill();
      later(END_AFTER_KILL_MS, () => call.abort());
    };
    const timeoutEnd = (exitCode: number): ExecEvent => ({ type: "end", exitCode, error: `timeout after ${timeoutMs} ms` });

    signal?.addEventListener("abort", onAbort, { once: true });
    if (timeoutMs !== undefined) later(timeoutMs, onTimeout);
    const user = request.user ?? this.defaultUser;
    const events = this.processes.start(
      {
        process: { cmd: request.cmd, args: request.args ?? [], envs: request.envs ?? {}, cwd: request.cwd },
        stdin: request.stdin !== undefined,
      },
      { signal: call.signal, headers: user ? { authorization: basicAuth(user) } : {} },
    );
    let end: ExecEvent | undefined;
    try {
      try {
        for await (const { event } of events) {
          const e = event?.event;
          if (e?.case === "start") {
            pid = e.value.pid;
            if (timedOut) void kill();
          }
          if (signal?.aborted) return; // the finally kills it
          if (e?.case === "start") {
            if (request.stdin) void this.feedStdin(e.value.pid, request.stdin);
            yield { type: "start", pid: e.value.pid };
          } else if (e?.case === "data") {
            const output = e.value.output;
            if (output.case === "stdout" || output.case === "stderr") yield { type: output.case, data: output.value };
          } else if (e?.case === "end") {
            ended = true;
            for (const timer of timers) clearTimeout(timer);
            // envd repeats the status as the error of any end but exit 0 (as E2B's does): an error
            // here means the command did not simply exit (killed, failed to start).
            const error = e.value.error && e.value.error !== e.value.status ? e.value.error : undefined;
            end = timedOut ? timeoutEnd(e.value.exitCode) : { type: "end", exitCode: e.value.exitCode, ...(error ? { error } : {}) };
            // Not returning yet: reading the stream to its close keeps the socket for the next call.
          }
        }
      } catch (err) {
        if (signal?.aborted) return;
        const killedWithoutEnd = timedOut && call.signal.aborted;
        if (end === undefined && !killedWithoutEnd) throw toEnvdError(err, `run "${request.cmd}"`);
      }
      if (signal?.aborted) return;
      if (end === undefined && !timedOut) throw new EnvdError(`envd ended the stream of "${request.cmd}" without its end`, Code.Unavailable);
      yield end ?? timeoutEnd(-1);
    } finally {
      signal?.removeEventListener("abort", onAbort);
      for (const timer of timers) clearTimeout(timer);
      if (!ended && pid !== undefined) await kill();
      call.abort();
    }
  }

  /** Sends `data` to a process's stdin, then EOF. Failures are left to the process's result (it may have exited without reading). */
  private async feedStdin(pid: number, data: Uint8Array): Promise<void> {
    const target = { selector: { case: "pid" as const, value: pid } };
    try {
      for (let offset = 0; offset < data.byteLength; offset += STDIN_CHUNK_BYTES) {
        const chunk = data.subarray(offset, offset + STDIN_CHUNK_BYTES);
        await this.processes.sendInput({ process: target, input: { input: { case: "stdin", value: chunk } } }, { timeoutMs: UNARY_TIMEOUT_MS });
      }
      await this.processes.closeStdin({ process: target }, { timeoutMs: UNARY_TIMEOUT_MS });
    } catch {
      // a process that exits without reading its input is not an error of the call
    }
  }

  /** SIGKILLs a process's group; one that already ended is not an error. */
  private async killProcess(pid: number): Promise<void> {
    try {
      await this.processes.sendSignal({ process: { selector: { case: "pid", value: pid } }, signal: Signal.SIGKILL }, { timeoutMs: UNARY_TIMEOUT_MS });
    } catch {
      // not_found: it ended meanwhile; anything else: envd is gone, and the process with it
    }
  }

  private async probeHealth(timeoutMs: number, connectTimeoutMs?: number): Promise<number> {
    const call: HttpCall = { method: "GET", path: "/health", connectTimeoutMs, headersTimeoutMs: timeoutMs, what: "GET /health" };
    const response = await sendHttp(this.agent, this.baseUrl, call);
    await readSmallBody(response);
    this.noteVersion(response);
    return response.statusCode ?? 0;
  }

  private noteVersion(response: http.IncomingMessage): string | undefined {
    const header = response.headers["x-envd-version"];
    const version = Array.isArray(header) ? header[0] : header;
    if (version) this.reportedVersion = version;
    return version || undefined;
  }

  private tokenHeader(): Record<string, string> {
    return this.accessToken ? { "x-access-token": this.accessToken } : {};
  }

  private filesPath(path: string, user: string | undefined): string {
    const query = new URLSearchParams({ path });
    const username = user ?? this.defaultUser;
    if (username) query.set("username", username);
    return `/files?${query}`;
  }
}

const isSuccess = (response: http.IncomingMessage): boolean => (response.statusCode ?? 0) >= 200 && (response.statusCode ?? 0) < 300;
