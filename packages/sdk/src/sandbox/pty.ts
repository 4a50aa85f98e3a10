// Terminals in a sandbox: envd's Process service with a PTY, through the edge proxy (envd/client.ts).
import { create } from "@bufbuild/protobuf";
import { ProcessSelectorSchema, Signal } from "@wrenn/proto/envd/process";
import type { CallOptions } from "../connection/config.js";
import { fromConnectError, userHeader, type EnvdClients } from "../envd/client.js";
import { ServerError } from "../errors.js";

export interface PtySize {
  cols: number;
  rows: number;
}

export interface PtyOptions extends PtySize {
  /** The terminal's output as it comes (raw bytes: escape sequences included). */
  onData: (data: Uint8Array) => void;
  /** The program; default an interactive login shell, `/bin/sh -i -l`. */
  cmd?: string;
  args?: string[];
  cwd?: string;
  envs?: Record<string, string>;
  user?: string;
  /** Cancels the start; once started, the terminal is ended with `kill()`. */
  signal?: AbortSignal;
}

export interface PtyExit {
  exitCode: number;
  /** How it ended, in envd's words (`exit status 3`, `signal: killed`). */
  status: string;
}

/** A running terminal: write to it, resize it, kill it, wait for its end. */
export class PtyHandle {
  constructor(
    readonly pid: number,
    private readonly envd: EnvdClients,
    private readonly user: string | undefined,
    private readonly ended: Promise<PtyExit>,
    private readonly disconnect: () => void,
  ) {}

  /** Sends keystrokes (text is UTF-8). */
  async sendInput(data: string | Uint8Array, options: CallOptions = {}): Promise<void> {
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    await this.call("sending input", options, (callOptions) =>
      this.envd.process.sendInput({ process: this.selector(), input: { input: { case: "pty", value: bytes } } }, callOptions),
    );
  }

  async resize(size: PtySize, options: CallOptions = {}): Promise<void> {
    await this.call("resizing", options, (callOptions) => this.envd.process.update({ process: this.selector(), pty: { size } }, callOptions));
  }

  /** Ends the terminal's process (SIGKILL, to its whole process group). */
  async kill(options: CallOptions = {}): Promise<void> {
    await this.call("killing", options, (callOptions) => this.envd.process.sendSignal({ process: this.selector(), signal: Signal.SIGKILL }, callOptions));
  }

  /** Resolves when the process ends. */
  wait(): Promise<PtyExit> {
    return this.ended;
  }

  /** Stops receiving output; the process runs on (kill it first to end it). */
  disconnectOutput(): void {
    this.disconnect();
  }

  private selector() {
    return create(ProcessSelectorSchema, { selector: { case: "pid", value: this.pid } });
  }

  private async call(what: string, options: CallOptions, run: (callOptions: { signal?: AbortSignal; timeoutMs?: number; headers: Record<string, string> }) => Promise<unknown>) {
    try {
      await run({ signal: options.signal, timeoutMs: options.timeoutMs, headers: userHeader(this.user) });
    } catch (err) {
      throw fromConnectError(err, `terminal ${this.pid}: ${what}`, options.signal);
    }
  }
}

export class Pty {
  constructor(private readonly envd: () => EnvdClients) {}

  /** Starts a terminal and answers once it runs; its output goes to `onData`. */
  async create(options: PtyOptions): Promise<PtyHandle> {
    const envd = this.envd();
    const stream = new AbortController();
    const onAbort = () => stream.abort(options.signal?.reason);
    options.signal?.addEventListener("abort", onAbort, { once: true });
    const events = envd.process
      .start(
        {
          process: { cmd: options.cmd ?? "/bin/sh", args: options.cmd ? (options.args ?? []) : ["-i", "-l"], envs: options.envs ?? {}, cwd: options.cwd },
          pty: { size: { cols: options.cols, rows: options.rows } },
        },
        { signal: stream.signal, headers: userHeader(options.user) },
      )
      [Symbol.asyncIterator]();
    let pid: number;
    try {
      const first = await events.next();
      if (first.done || first.value.event?.event.case !== "start") throw new ServerError("envd did not start the terminal", { code: "no_start" });
      pid = first.value.event.event.value.pid;
    } catch (err) {
      stream.abort();
      throw fromConnectError(err, "starting a terminal", options.signal);
    } finally {
      options.signal?.removeEventListener("abort", onAbort);
    }
    const ended = (async (): Promise<PtyExit> => {
      try {
        for (let next = await events.next(); !next.done; next = await events.next()) {
          const event = next.value.event?.event;
          if (event?.case === "data" && event.value.output.case === "pty") options.onData(event.value.output.value);
          else if (event?.case === "end") return { exitCode: event.value.exitCode, status: event.value.status };
        }
        throw new ServerError(`terminal ${pid}: the stream ended without its end`, { code: "stream_ended" });
      } catch (err) {
        throw fromConnectError(err, `terminal ${pid}`);
      }
    })();
    ended.catch(() => undefined); // reported by wait(), if anyone asks
    return new PtyHandle(pid, envd, options.user, ended, () => stream.abort());
  }
}
