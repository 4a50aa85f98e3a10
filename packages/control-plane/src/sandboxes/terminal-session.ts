// One browser terminal: a WebSocket bridged to a shell in a sandbox's PTY (envd-process.ts).
// Output goes out as binary frames, keystrokes come in as binary frames, resizes as JSON text
// frames; closing the socket leaves the shell running, so a reload can attach to it again.
import type { Logger } from "pino";
import type { RawData, WebSocket } from "ws";
import { z } from "zod";
import { WrennError } from "../errors.js";
import type { SandboxProcesses, TerminalCommand, TerminalSize } from "./envd-process.js";

/** The close codes a terminal ends with, beyond the standard ones. */
export const TERMINAL_CLOSE = {
  /** The shell exited (an exit frame came first). */
  normal: 1000,
  /** The client sent a frame the protocol does not have. */
  badMessage: 1008,
  /** An error frame came first. */
  error: 1011,
  /** No running process has the pid asked to attach to. */
  unknownPid: 4404,
  /** The sandbox stopped running (paused, destroyed, its host lost). */
  notRunning: 4409,
} as const;

/** The sandbox's login shell: bash if the template has it, else sh. exec keeps the pid the terminal reports. */
export const LOGIN_SHELL: TerminalCommand = {
  cmd: "/bin/sh",
  args: ["-c", "if [ -x /bin/bash ]; then exec /bin/bash -l; fi; exec /bin/sh -l"],
  envs: { TERM: "xterm-256color" },
  cwd: "~",
};

export const TerminalDimension = z.int().min(1).max(1000);

const ClientMessage = z.discriminatedUnion("type", [z.strictObject({ type: z.literal("resize"), cols: TerminalDimension, rows: TerminalDimension })]);

/** Output beyond this waiting in the socket's buffer makes the terminal stop reading the shell until it drains. */
const OUTPUT_HIGH_WATER_BYTES = 1 << 20;
/** Input beyond this waiting for envd means the client types faster than the shell takes it. */
const INPUT_LIMIT_BYTES = 4 << 20;
/** A close frame's reason is at most 123 bytes. */
const MAX_REASON_BYTES = 123;

export interface TerminalSessionOptions {
  socket: WebSocket;
  processes: SandboxProcesses;
  size: TerminalSize;
  /** Attach to this running process instead of starting a shell. */
  pid?: number;
  /** The sandbox's reason to be no longer running (a WrennError), or undefined while it runs. */
  whyNotRunning: () => Promise<WrennError | undefined>;
  /** Called once the process runs (started or attached). */
  onStarted: (pid: number) => void;
  log: Logger;
}

export class TerminalSession {
  private pid: number | undefined;
  private readonly size: TerminalSize;
  private readonly stop = new AbortController();
  /** What the client sent and envd has not had yet, in order: keystrokes and resizes. */
  private pending: Array<Buffer | TerminalSize> = [];
  private pendingInputBytes = 0;
  private sending = false;

  constructor(private readonly options: TerminalSessionOptions) {
    this.size = options.size;
  }

  /** Runs until the process ends, the socket closes or something fails; never throws. */
  async run(): Promise<void> {
    const { socket, processes, pid } = this.options;
    socket.on("close", () => this.stop.abort());
    socket.on("message", (data, isBinary) => this.receive(data, isBinary));
    try {
      const events = pid === undefined ? processes.startTerminal(LOGIN_SHELL, this.size, this.stop.signal) : processes.attach(pid, this.stop.signal);
      for await (const { event } of events) {
        if (event.case === "start") this.started(event.value.pid);
        else if (event.case === "data") await this.output(event.value.output.value);
        else if (event.case === "end") {
          this.sendJson({ type: "exit", exitCode: event.value.exitCode });
          this.close(TERMINAL_CLOSE.normal, event.value.status);
          return;
        }
      }
      if (!this.stop.signal.aborted) throw new WrennError("unavailable", "the terminal's stream ended before its process did");
    } catch (err) {
      if (!this.stop.signal.aborted) await this.fail(err);
    } finally {
      this.stop.abort();
    }
  }

  private started(pid: number): void {
    this.pid = pid;
    this.sendJson({ type: "started", pid });
    this.options.onStarted(pid);
    // An attached terminal takes the size of the client's window; a new one started at it.
    if (this.options.pid !== undefined) this.pending.unshift(this.size);
    void this.flush();
  }

  private async output(data: Uint8Array | undefined): Promise<void> {
    const { socket } = this.options;
    if (!data || socket.readyState !== socket.OPEN) return;
    if (socket.bufferedAmount < OUTPUT_HIGH_WATER_BYTES) return socket.send(data, { binary: true });
    await new Promise<void>((resolve) => {
      const done = (): void => {
        this.stop.signal.removeEventListener("abort", done);
        resolve();
      };
      this.stop.signal.addEventListener("abort", done, { once: true });
      socket.send(data, { binary: true }, done);
    });
  }

  private receive(data: RawData, isBinary: boolean): void {
    const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
    if (isBinary) return this.type(bytes);
    let message: z.infer<typeof ClientMessage>;
    try {
      message = ClientMessage.parse(JSON.parse(bytes.toString("utf8")));
    } catch {
      this.sendJson({ type: "error", message: 'text frames must be JSON {"type":"resize","cols":1-1000,"rows":1-1000}' });
      return this.close(TERMINAL_CLOSE.badMessage, "unknown message");
    }
    this.pending.push({ cols: message.cols, rows: message.rows });
    void this.flush();
  }

  private type(bytes: Buffer): void {
    if (bytes.length === 0) return;
    this.pendingInputBytes += bytes.length;
    if (this.pendingInputBytes > INPUT_LIMIT_BYTES) {
      this.sendJson({ type: "error", message: "input arrives faster than the terminal takes it" });
      return this.close(TERMINAL_CLOSE.badMessage, "input overflow");
    }
    this.pending.push(bytes);
    void this.flush();
  }

  /**
   * Hands envd what the client sent, one call at a time so keystrokes and resizes keep their order;
   * keystrokes that piled up meanwhile go in one call. Waits until the process runs.
   */
  private async flush(): Promise<void> {
    const pid = this.pid;
    if (this.sending || pid === undefined) return;
    this.sending = true;
    try {
      while (this.pending.length > 0 && !this.stop.signal.aborted) {
        const first = this.pending[0]!;
        if (Buffer.isBuffer(first)) {
          const count = this.pending.findIndex((item) => !Buffer.isBuffer(item));
          const chunk = Buffer.concat(this.pending.splice(0, count === -1 ? this.pending.length : count) as Buffer[]);
          this.pendingInputBytes -= chunk.length;
          await this.options.processes.sendInput(pid, chunk);
        } else {
          this.pending.shift();
          await this.options.processes.resize(pid, first);
        }
      }
    } catch (err) {
      await this.callFailed(err);
    } finally {
      this.sending = false;
    }
  }

  /** not_found: the process just ended, and its end event is on its way. */
  private async callFailed(err: unknown): Promise<void> {
    if (this.stop.signal.aborted || (err instanceof WrennError && err.code === "not_found")) return;
    await this.fail(err);
  }

  private async fail(err: unknown): Promise<void> {
    if (this.stop.signal.aborted) return;
    this.stop.abort();
    const { log, processes, pid } = this.options;
    const logFields = { err, sandboxId: processes.sandbox.id, teamId: processes.sandbox.teamId, pid: this.pid ?? pid };
    if (err instanceof WrennError && err.code === "not_found" && this.pid === undefined && pid !== undefined) {
      return this.close(TERMINAL_CLOSE.unknownPid, `no running process has pid ${pid}`);
    }
    const notRunning = await this.options.whyNotRunning().catch(() => undefined);
    if (notRunning) return this.close(TERMINAL_CLOSE.notRunning, notRunning.message);
    log.warn(logFields, "terminal failed");
    const message = err instanceof WrennError ? err.message : "the terminal failed; see the control plane's log";
    this.sendJson({ type: "error", message });
    this.close(TERMINAL_CLOSE.error, "error");
  }

  private sendJson(message: Record<string, unknown>): void {
    const { socket } = this.options;
    if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(message));
  }

  private close(code: number, reason: string): void {
    this.stop.abort();
    const { socket } = this.options;
    if (socket.readyState === socket.OPEN || socket.readyState === socket.CONNECTING) socket.close(code, truncateUtf8(reason, MAX_REASON_BYTES));
  }
}

function truncateUtf8(text: string, maxBytes: number): string {
  const bytes = Buffer.from(text, "utf8");
  if (bytes.length <= maxBytes) return text;
  return bytes.subarray(0, maxBytes).toString("utf8").replace(/\uFFFD$/, "");
}
