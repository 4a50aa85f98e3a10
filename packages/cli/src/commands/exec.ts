// wrenn exec <id> -- <cmd...>: output streamed as it comes, the command's exit code as the CLI's.
import { CommandTimeoutError } from "@wrenn/sdk";
import { integer, pairs, parse, usageError } from "../command-line/args.js";
import { connectSandbox } from "../connection/sandbox-handle.js";

const USAGE = "wrenn exec [--cwd DIR] [--env k=v]... [--user USER] [--timeout SEC] <id> -- <command> [args...]   (one word after --: a /bin/sh -c line)";

export async function exec(argv: string[]): Promise<number> {
  const split = argv.indexOf("--");
  const own = split < 0 ? argv.slice(0, 1) : argv.slice(0, split);
  const command = split < 0 ? argv.slice(1) : argv.slice(split + 1);
  const { values, positionals } = parse(
    own,
    { cwd: { type: "string" }, env: { type: "string", short: "e", multiple: true }, user: { type: "string", short: "u" }, timeout: { type: "string" } },
    USAGE,
    { min: 1, max: 1 },
  );
  if (command.length === 0) throw usageError("no command", USAGE);
  const timeoutSec = integer(values.timeout, "timeout", USAGE);
  const sandbox = await connectSandbox(positionals[0]!);
  // Ctrl-C ends the command in the sandbox (the SDK closes the stream; the control plane kills it).
  const interrupt = new AbortController();
  const onSignal = () => interrupt.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    const [cmd, ...args] = command;
    for await (const event of sandbox.commands.stream(cmd!, {
      ...(args.length ? { args } : {}),
      cwd: values.cwd,
      envs: pairs(values.env, "env", USAGE),
      user: values.user,
      timeoutMs: timeoutSec === undefined ? 0 : timeoutSec * 1000,
      signal: interrupt.signal,
    })) {
      if (event.type === "stdout") await write(process.stdout, event.data);
      else if (event.type === "stderr") await write(process.stderr, event.data);
      else if (event.type === "exit") {
        if (event.exitCode < 0 || (event.exitCode !== 0 && event.error && !event.error.startsWith("exit status"))) process.stderr.write(`wrenn: ${event.error ?? "ended"}\n`);
        return event.exitCode < 0 ? 1 : event.exitCode;
      }
    }
    return 1;
  } catch (err) {
    if (interrupt.signal.aborted) return 130;
    if (err instanceof CommandTimeoutError) {
      process.stderr.write(`wrenn: ${err.message}\n`);
      return 124;
    }
    throw err;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

/** Writes and waits for a full pipe to drain, so a slow reader slows the stream instead of filling memory. */
function write(stream: NodeJS.WriteStream, data: string): Promise<void> | void {
  if (!stream.write(data)) return new Promise((resolve) => stream.once("drain", resolve));
}
