// Commands in a sandbox, streamed as server-sent events from POST /v1/sandboxes/{id}/exec/stream.
// Leaving the stream (break, abort) closes the connection, and the control plane ends the command.
import type { CallOptions } from "../connection/config.js";
import { serverSentEvents } from "../connection/sse.js";
import type { Transport } from "../connection/transport.js";
import { CommandTimeoutError, ServerError, WrennError, errorClassOf } from "../errors.js";

export type CommandEvent =
  | { type: "start"; pid: number }
  | { type: "stdout"; data: string }
  | { type: "stderr"; data: string }
  | { type: "exit"; exitCode: number; error?: string };

export interface CommandOptions {
  /** Run `cmd` as the program with these arguments; without them `cmd` is a shell line for `/bin/sh -c`. */
  args?: string[];
  cwd?: string;
  envs?: Record<string, string>;
  /** The account it runs as; default the sandbox's default user. */
  user?: string;
  /** The command is killed after this long (CommandTimeoutError); default 60 s, 0: a day (the API's most). */
  timeoutMs?: number;
  /** Cancels the call and ends the command in the sandbox. */
  signal?: AbortSignal;
  /** Time limit for the API to start answering; default the connection's `requestTimeoutMs`. */
  requestTimeoutMs?: number;
}

export interface RunOptions extends CommandOptions {
  onStdout?: (data: string) => void;
  onStderr?: (data: string) => void;
}

export interface CommandResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  /** Why it did not simply exit, when it did not: `signal: killed`, `timeout after N ms`, … (absent for any plain exit, 0 or not). */
  error?: string;
}

const MAX_COMMAND_TIMEOUT_SEC = 86_400;

export class Commands {
  constructor(
    private readonly api: Transport,
    private readonly sandboxId: string,
  ) {}

  /** Runs a command to its end and answers its exit code and output; `onStdout`/`onStderr` see the output as it comes. */
  async run(cmd: string, options: RunOptions = {}): Promise<CommandResult> {
    const stdout: string[] = [];
    const stderr: string[] = [];
    for await (const event of this.stream(cmd, options)) {
      if (event.type === "stdout") {
        stdout.push(event.data);
        options.onStdout?.(event.data);
      } else if (event.type === "stderr") {
        stderr.push(event.data);
        options.onStderr?.(event.data);
      } else if (event.type === "exit") {
        const result = { exitCode: event.exitCode, stdout: stdout.join(""), stderr: stderr.join(""), ...(event.error ? { error: event.error } : {}) };
        if (event.error?.startsWith("timeout")) {
          throw new CommandTimeoutError(`"${cmd}" was killed after its timeout (${event.error}): pass a larger timeoutMs`, result.stdout, result.stderr);
        }
        return result;
      }
    }
    throw new ServerError(`the stream of "${cmd}" ended without its exit`, { code: "stream_ended" });
  }

  /** Runs a command and yields `start`, its output as it comes, then `exit`: `for await (const event of sandbox.commands.stream(cmd))`. */
  async *stream(cmd: string, options: CommandOptions = {}): AsyncGenerator<CommandEvent, void, undefined> {
    const { args, cwd, envs, user, timeoutMs, signal } = options;
    const timeoutSec = timeoutMs === undefined ? undefined : timeoutMs === 0 ? MAX_COMMAND_TIMEOUT_SEC : Math.min(MAX_COMMAND_TIMEOUT_SEC, Math.max(1, Math.ceil(timeoutMs / 1000)));
    const body = {
      ...(args ? { cmd, args } : { cmd: "/bin/sh", args: ["-c", cmd] }),
      ...(cwd === undefined ? {} : { cwd }),
      ...(envs === undefined ? {} : { envs }),
      ...(user === undefined ? {} : { user }),
      ...(timeoutSec === undefined ? {} : { timeoutSec }),
    };
    const response = await this.api.send(
      {
        method: "POST",
        path: `/v1/sandboxes/${encodeURIComponent(this.sandboxId)}/exec/stream`,
        headers: { "content-type": "application/json", accept: "text/event-stream" },
        body: JSON.stringify(body),
      },
      // Never run twice: retried only when the API did not take it (refused connection, 429).
      { retry: "unsent", stream: true, signal, timeoutMs: options.requestTimeoutMs },
    );
    try {
      // Leaving this loop early closes the connection.
      for await (const { event, data } of serverSentEvents(response, `"${cmd}"`)) {
        switch (event) {
          case "start":
            yield { type: "start", pid: Number(data.pid) };
            break;
          case "stdout":
          case "stderr":
            yield { type: event, data: String(data.data) };
            break;
          case "exit":
            yield { type: "exit", exitCode: Number(data.exitCode), ...(typeof data.error === "string" ? { error: data.error } : {}) };
            return;
          case "error":
            throw errorOfEvent(data, `"${cmd}"`);
        }
      }
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      if (err instanceof WrennError) throw err;
      throw new ServerError(`the stream of "${cmd}" broke: ${(err as Error).message}`, { code: "stream_broken", cause: err });
    }
  }
}

/** An `error` event of a stream as the error class of its code. */
export function errorOfEvent(data: Record<string, unknown>, what: string): WrennError {
  const code = String(data.code ?? "internal");
  const status = STATUS_OF_CODE[code] ?? 500;
  return new (errorClassOf(status))(`${what}: ${String(data.message)}`, { code, status });
}

/** The API's error codes (as sent in an `error` event) to their HTTP statuses. */
const STATUS_OF_CODE: Record<string, number> = {
  invalid_argument: 400,
  unauthenticated: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  failed_precondition: 409,
  resource_exhausted: 507,
  rate_limited: 429,
  unavailable: 503,
  internal: 500,
};
