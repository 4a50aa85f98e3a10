import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import type { Readable } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import type * as Pty from "@lydell/node-pty";
import {
  ProcessEventSchema,
  type ProcessConfig,
  type ProcessEvent,
} from "@wrenn/proto/envd/process";
import { envdError, fromSystemError } from "../errors.js";
import type { SandboxUser } from "../identity/users.js";
import { EventQueue } from "./event-queue.js";
import { describeExit, type ExitStatus } from "./exit-status.js";
import {
  echoOfControl,
  foregroundGroup,
  kernelSignalsTerminal,
  mayHoldSignalCharacter,
  readTerminalModes,
  splitAtSignals,
} from "./terminal-signals.js";

/** A reader this far behind stops the process's output being read (its pipe fills, it blocks). */
const HIGH_WATER_BYTES = 1 << 20;
/** After the process exits, output still open (a background child holding it) is closed once idle this long. */
const OUTPUT_IDLE_AFTER_EXIT_MS = 100;

export interface SpawnSpec {
  config: ProcessConfig;
  /** The resolved command line, working directory and environment. */
  file: string;
  args: string[];
  cwd: string;
  env: Record<string, string>;
  user: SandboxUser;
  tag?: string;
  stdin: boolean;
  pty?: { cols: number; rows: number };
}

type Source = { kind: "pipes"; child: ChildProcess } | { kind: "pty"; terminal: Pty.IPty };
/** What node-pty's Unix terminal has besides its typed interface: the master's file descriptor. */
type UnixTerminal = Pty.IPty & { fd?: number };

let ptyModule: Promise<typeof Pty> | undefined;
/** node-pty (a native add-on) is loaded on the first terminal: most sandboxes never open one, and envd's RSS is paid per sandbox. */
function loadPty(): Promise<typeof Pty> {
  return (ptyModule ??= import("@lydell/node-pty").then((m) => ((m as { default?: typeof Pty }).default ?? m) as typeof Pty));
}

/** A process started by envd: its output fans out to every attached reader, and it outlives them all. */
export class ManagedProcess {
  readonly pid: number;
  readonly tag: string | undefined;
  readonly config: ProcessConfig;
  private readonly source: Source;
  private readonly readers = new Set<EventQueue<ProcessEvent>>();
  private paused = false;
  private exit: ExitStatus | undefined;
  /** Typed input, written in order (a signal character waits for a look at the terminal). */
  private ptyInput: Promise<void> = Promise.resolve();
  /** Whether the kernel turns this terminal's ^C into SIGINT itself; undefined until first asked. */
  private kernelSignals: boolean | undefined;
  readonly finished: Promise<ExitStatus>;

  private constructor(spec: SpawnSpec, source: Source, pid: number) {
    this.pid = pid;
    this.tag = spec.tag;
    this.config = spec.config;
    this.source = source;
    this.finished = source.kind === "pty" ? this.followPty(source.terminal) : this.followPipes(source.child);
  }

  /** Spawns the process; rejects with a Connect error when it cannot start. */
  static async spawn(spec: SpawnSpec): Promise<ManagedProcess> {
    const switchUser = process.getuid?.() !== spec.user.uid;
    if (spec.pty) {
      const pty = await loadPty();
      let terminal: Pty.IPty;
      try {
        terminal = pty.spawn(spec.file, spec.args, {
          name: "xterm-256color",
          cols: spec.pty.cols,
          rows: spec.pty.rows,
          cwd: spec.cwd,
          env: spec.env,
          encoding: null,
          ...(switchUser ? { uid: spec.user.uid, gid: spec.user.gid } : {}),
        });
      } catch (err) {
        throw envdError(`cannot start "${spec.file}" in a terminal: ${(err as Error).message}`, Code.InvalidArgument);
      }
      return new ManagedProcess(spec, { kind: "pty", terminal }, terminal.pid);
    }
    let child: ChildProcess;
    try {
      child = spawn(spec.file, spec.args, {
        cwd: spec.cwd,
        env: spec.env,
        stdio: [spec.stdin ? "pipe" : "ignore", "pipe", "pipe"],
        // Its own session and process group, so a signal reaches the whole tree it starts.
        detached: true,
        ...(switchUser ? { uid: spec.user.uid, gid: spec.user.gid } : {}),
      });
    } catch (err) {
      // Node throws some spawn failures (EPERM when switching user without the right, ...) at once.
      throw fromSystemError(err, `cannot start "${spec.file}" as ${spec.user.name}`);
    }
    if (child.pid === undefined) {
      const [err] = (await once(child, "error")) as [NodeJS.ErrnoException];
      throw err.code === "ENOENT"
        ? envdError(`cannot start "${spec.file}": no such executable file`, Code.NotFound)
        : fromSystemError(err, "cannot start", spec.file);
    }
    child.on("error", () => undefined); // errors after spawn surface as the exit status
    child.stdin?.on("error", () => undefined); // EPIPE when the process closed its stdin
    return new ManagedProcess(spec, { kind: "pipes", child }, child.pid);
  }

  get isPty(): boolean {
    return this.source.kind === "pty";
  }

  get hasEnded(): boolean {
    return this.exit !== undefined;
  }

  /** Attaches a reader. The first event it sees is start{pid}; the last is end (or nothing, if it leaves first). */
  attach(): EventQueue<ProcessEvent> {
    const queue: EventQueue<ProcessEvent> = new EventQueue(() => this.adjustFlow());
    queue.push(create(ProcessEventSchema, { event: { case: "start", value: { pid: this.pid } } }));
    if (this.exit) {
      queue.push(this.endEvent(this.exit));
      queue.close();
    } else {
      this.readers.add(queue);
    }
    return queue;
  }

  /** Detaches a reader that went away; the process keeps running. */
  detach(queue: EventQueue<ProcessEvent>): void {
    if (this.readers.delete(queue)) queue.abandon();
    this.adjustFlow();
  }

  async writeStdin(data: Uint8Array): Promise<void> {
    if (this.source.kind === "pty") return this.writePty(data);
    const stdin = this.source.child.stdin;
    if (!stdin || stdin.writableEnded || stdin.destroyed) {
      throw envdError(`process ${this.pid} has no open stdin (start it with stdin: true)`, Code.FailedPrecondition);
    }
    if (!stdin.write(data)) await once(stdin, "drain");
  }

  async writePty(data: Uint8Array): Promise<void> {
    if (this.source.kind !== "pty") throw envdError(`process ${this.pid} has no terminal`, Code.FailedPrecondition);
    const terminal = this.source.terminal;
    const write = () => this.typeInto(terminal, Buffer.from(data));
    const done = this.ptyInput.then(write, write);
    this.ptyInput = done.catch(() => undefined);
    return done;
  }

  /** Writes typed input, playing the line discipline's part for signal characters where the kernel does not. */
  private async typeInto(terminal: UnixTerminal, data: Buffer): Promise<void> {
    // node-pty writes Buffers as they are when it was opened with `encoding: null`.
    const write = (bytes: Buffer) => terminal.write(bytes as unknown as string);
    if (!mayHoldSignalCharacter(data) || terminal.fd === undefined || this.exit) return write(data);
    this.kernelSignals ??= await kernelSignalsTerminal(this.pid);
    if (this.kernelSignals !== false) return write(data);
    const modes = await readTerminalModes(terminal.fd);
    if (!modes) return write(data);
    for (const piece of splitAtSignals(data, modes)) {
      if ("bytes" in piece) {
        write(piece.bytes);
        continue;
      }
      if (modes.echoControl) this.emitData("pty", Buffer.from(echoOfControl(piece.character)));
      const group = await foregroundGroup(this.pid, modes);
      try {
        process.kill(-group, piece.signal);
      } catch {
        // the group ended meanwhile: nothing to interrupt
      }
    }
  }

  closeStdin(): void {
    if (this.source.kind === "pty") {
      this.source.terminal.write("\x04"); // end-of-file in a terminal
      return;
    }
    const stdin = this.source.child.stdin;
    if (!stdin) throw envdError(`process ${this.pid} has no open stdin (start it with stdin: true)`, Code.FailedPrecondition);
    stdin.end();
  }

  resize(cols: number, rows: number): void {
    if (this.source.kind !== "pty") throw envdError(`process ${this.pid} has no terminal to resize`, Code.FailedPrecondition);
    if (cols < 1 || rows < 1 || cols > 10_000 || rows > 10_000) {
      throw envdError("terminal size must be between 1 and 10000 columns and rows", Code.InvalidArgument);
    }
    this.source.terminal.resize(cols, rows);
  }

  /** Kills the process if it still runs after `ms` (E2B's envd makes a Start's Connect deadline its lifetime). */
  limitLifetime(ms: number): void {
    if (this.exit) return;
    const timer = setTimeout(() => {
      try {
        this.signal("SIGKILL");
      } catch {
        // gone or not ours to kill: nothing left to limit
      }
    }, ms);
    const clear = () => clearTimeout(timer);
    void this.finished.then(clear, clear);
  }

  /** Sends a signal to the process's whole group (it leads its own session). */
  signal(signal: NodeJS.Signals): void {
    if (this.exit) return;
    try {
      process.kill(-this.pid, signal);
    } catch {
      try {
        process.kill(this.pid, signal);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw fromSystemError(err, `signal process ${this.pid}`);
      }
    }
  }

  private emitData(stream: "stdout" | "stderr" | "pty", data: Buffer): void {
    if (this.readers.size === 0) return; // nobody attached: output is not kept
    const event = create(ProcessEventSchema, { event: { case: "data", value: { output: { case: stream, value: data } } } });
    for (const reader of this.readers) reader.push(event, data.length);
    this.adjustFlow();
  }

  private adjustFlow(): void {
    let behind = false;
    for (const reader of this.readers) if (reader.queuedBytes > HIGH_WATER_BYTES) behind = true;
    if (behind === this.paused) return;
    this.paused = behind;
    if (this.source.kind === "pty") {
      if (behind) this.source.terminal.pause();
      else this.source.terminal.resume();
    } else {
      for (const stream of [this.source.child.stdout, this.source.child.stderr]) {
        if (behind) stream?.pause();
        else stream?.resume();
      }
    }
  }

  private endEvent(exit: ExitStatus): ProcessEvent {
    // E2B's envd sends Go's cmd.Wait() error, which is the status again for any end but exit 0;
    // the SDK makes it CommandExitError's message.
    const error = exit.exited && exit.exitCode === 0 ? undefined : exit.status;
    return create(ProcessEventSchema, {
      event: { case: "end", value: { exitCode: exit.exitCode, exited: exit.exited, status: exit.status, error } },
    });
  }

  private finish(exit: ExitStatus): ExitStatus {
    this.exit = exit;
    const end = this.endEvent(exit);
    for (const reader of this.readers) {
      reader.push(end);
      reader.close();
    }
    this.readers.clear();
    return exit;
  }

  private async followPipes(child: ChildProcess): Promise<ExitStatus> {
    const outputs = [child.stdout, child.stderr].filter((s): s is Readable => s !== null);
    const names = ["stdout", "stderr"] as const;
    let lastData = Date.now();
    outputs.forEach((stream, i) =>
      stream.on("data", (chunk: Buffer) => {
        lastData = Date.now();
        this.emitData(names[i]!, chunk);
      }),
    );
    const ended = Promise.all(outputs.map((s) => once(s, "close").catch(() => undefined)));
    const [code, signal] = (await once(child, "exit")) as [number | null, NodeJS.Signals | null];
    // Output written just before exit is still in the pipes: read it, unless a background
    // child keeps them open, in which case stop once they have been quiet for a while. Quiet
    // counts from the exit at the earliest: a process that printed only at its end has had no
    // data read yet when 'exit' comes, and must not look idle since it started.
    lastData = Math.max(lastData, Date.now());
    let settled = false;
    void ended.then(() => (settled = true));
    // A clock says nothing about unread bytes when the event loop was busy: a timer that fires
    // late runs before the loop has polled the pipes again (one SIGCHLD reaps every child that
    // has exited, so an exit can even be handled before its last write has been seen). So quiet
    // also means that one poll of the pipes after the wait (setImmediate runs after it) read
    // nothing.
    while (!settled) {
      if (!this.paused && Date.now() - lastData >= OUTPUT_IDLE_AFTER_EXIT_MS) {
        const before = lastData;
        await new Promise((r) => setImmediate(r));
        if (settled) break;
        if (lastData === before && !this.paused) break;
        continue;
      }
      await Promise.race([ended, new Promise((r) => setTimeout(r, OUTPUT_IDLE_AFTER_EXIT_MS))]);
    }
    for (const stream of outputs) stream.destroy();
    return this.finish(describeExit(code, signal));
  }

  private followPty(terminal: Pty.IPty): Promise<ExitStatus> {
    terminal.onData((data) => this.emitData("pty", Buffer.isBuffer(data) ? data : Buffer.from(data)));
    return new Promise((resolve) => {
      terminal.onExit(({ exitCode, signal }) => resolve(this.finish(describeExit(exitCode, signal || null))));
    });
  }
}
