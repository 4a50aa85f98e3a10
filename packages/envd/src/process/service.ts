import { stat } from "node:fs/promises";
import { create } from "@bufbuild/protobuf";
import { Code, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  Process,
  ProcessEventSchema,
  Signal,
  type ProcessEvent,
  type StreamInputRequest,
} from "@wrenn/proto/envd/process";
import { envdError } from "../errors.js";
import { resolveUserPath } from "../identity/paths.js";
import { callerUser, type EnvdContext } from "../server/context.js";
import { keepaliveInterval, withKeepalive } from "../server/keepalive.js";
import { processEnvironment } from "./environment.js";
import type { ManagedProcess } from "./managed-process.js";
import type { ProcessRegistry } from "./registry.js";

const keepaliveEvent = (): ProcessEvent => create(ProcessEventSchema, { event: { case: "keepalive", value: {} } });

/** Streams a process's events to one caller; the process keeps running if the caller leaves. */
async function* follow(proc: ManagedProcess, context: HandlerContext): AsyncGenerator<{ event: ProcessEvent }> {
  const queue = proc.attach();
  // Detach the moment the caller is gone, not when this generator next runs: it may be suspended
  // in a write that never completes, and a reader left attached and behind would block the process.
  const leave = (): void => proc.detach(queue);
  context.signal.addEventListener("abort", leave, { once: true });
  try {
    for await (const event of withKeepalive(() => queue.next(), keepaliveEvent, keepaliveInterval(context.requestHeader), context.signal)) {
      yield { event };
    }
  } finally {
    context.signal.removeEventListener("abort", leave);
    proc.detach(queue);
  }
}

async function existingDirectory(path: string | undefined): Promise<string | undefined> {
  if (!path) return undefined;
  return (await stat(path).catch(() => undefined))?.isDirectory() ? path : undefined;
}

const signals: Partial<Record<Signal, NodeJS.Signals>> = {
  [Signal.SIGTERM]: "SIGTERM",
  [Signal.SIGKILL]: "SIGKILL",
};

/** The `process.Process` Connect service. */
export function processService(ctx: EnvdContext, registry: ProcessRegistry): ServiceImpl<typeof Process> {
  return {
    async list() {
      return {
        processes: registry.list().map((p) => ({ pid: p.pid, tag: p.tag, config: p.config })),
      };
    },

    async *start(req, context) {
      const config = req.process;
      if (!config?.cmd) throw envdError("process.cmd is required", Code.InvalidArgument);
      const user = await callerUser(ctx, context.requestHeader);
      let cwd: string;
      if (config.cwd) {
        const requested = resolveUserPath(config.cwd, user);
        const found = await existingDirectory(requested);
        if (!found) throw envdError(`working directory ${requested} does not exist or is not a directory`, Code.InvalidArgument);
        cwd = found;
      } else {
        cwd = (await existingDirectory(ctx.defaults.defaultWorkdir)) ?? (await existingDirectory(user.home)) ?? "/";
      }
      const size = req.pty?.size;
      const proc = await registry.start({
        config,
        file: config.cmd,
        args: config.args,
        cwd,
        env: processEnvironment(user, ctx.defaults.envVars, config.envs, req.pty !== undefined),
        user,
        tag: req.tag,
        stdin: req.stdin ?? true,
        pty: req.pty ? { cols: size?.cols || 80, rows: size?.rows || 24 } : undefined,
      });
      // The SDK's `timeoutMs` (default 60 s, 0 for none) travels as the call's deadline: the process
      // dies with it, as in E2B, though the caller leaving early does not end it.
      const lifetime = context.timeoutMs();
      if (lifetime !== undefined) proc.limitLifetime(lifetime);
      yield* follow(proc, context);
    },

    async *connect(req, context) {
      yield* follow(registry.select(req.process), context);
    },

    async update(req) {
      const proc = registry.select(req.process);
      const size = req.pty?.size;
      if (size) proc.resize(size.cols, size.rows);
      return {};
    },

    async sendInput(req) {
      const proc = registry.select(req.process);
      await writeInput(proc, req.input?.input);
      return {};
    },

    async streamInput(requests: AsyncIterable<StreamInputRequest>) {
      let proc: ManagedProcess | undefined;
      for await (const message of requests) {
        const event = message.event;
        if (event.case === "start") proc = registry.select(event.value.process);
        else if (event.case === "data") {
          if (!proc) throw envdError("the input stream must begin with a start event naming the process", Code.FailedPrecondition);
          await writeInput(proc, event.value.input?.input);
        }
      }
      return {};
    },

    async sendSignal(req) {
      const proc = registry.select(req.process);
      const signal = signals[req.signal];
      if (!signal) throw envdError("signal must be SIGTERM or SIGKILL", Code.InvalidArgument);
      proc.signal(signal);
      return {};
    },

    async closeStdin(req) {
      registry.select(req.process).closeStdin();
      return {};
    },
  };
}

type Input = { case: "stdin" | "pty"; value: Uint8Array } | { case: undefined; value?: undefined } | undefined;

async function writeInput(proc: ManagedProcess, input: Input): Promise<void> {
  if (input?.case === "stdin") await proc.writeStdin(input.value);
  else if (input?.case === "pty") await proc.writePty(input.value);
  else throw envdError("input must carry stdin or pty bytes", Code.InvalidArgument);
}
