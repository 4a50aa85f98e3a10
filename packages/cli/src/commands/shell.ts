// wrenn shell <id>: an interactive terminal in the sandbox. Raw mode passes every key (Ctrl-C
// included) to the sandbox; SIGWINCH resizes the remote terminal; the shell's exit code is ours.
import { parse } from "../command-line/args.js";
import { connectSandbox } from "../connection/sandbox-handle.js";

const USAGE = "wrenn shell <id> [--user USER] [--cwd DIR] [-- <program> [args...]]";

export async function shell(argv: string[]): Promise<number> {
  const split = argv.indexOf("--");
  const own = split < 0 ? argv : argv.slice(0, split);
  const program = split < 0 ? [] : argv.slice(split + 1);
  const { values, positionals } = parse(own, { user: { type: "string", short: "u" }, cwd: { type: "string" } }, USAGE, { min: 1, max: 1 });
  const sandbox = await connectSandbox(positionals[0]!);
  const size = () => ({ cols: process.stdout.columns || 80, rows: process.stdout.rows || 24 });
  const terminal = await sandbox.pty.create({
    ...size(),
    onData: (data) => process.stdout.write(data),
    ...(program.length ? { cmd: program[0], args: program.slice(1) } : {}),
    user: values.user,
    cwd: values.cwd,
    envs: { TERM: process.env.TERM || "xterm-256color" },
  });
  const stdin = process.stdin;
  const wasRaw = stdin.isTTY ? stdin.isRaw : false;
  if (stdin.isTTY) stdin.setRawMode(true);
  // Keystrokes in order: each waits for the one before.
  let sending: Promise<void> = Promise.resolve();
  const onInput = (chunk: Buffer) => {
    sending = sending.then(() => terminal.sendInput(new Uint8Array(chunk))).catch(() => undefined);
  };
  const onResize = () => void terminal.resize(size()).catch(() => undefined);
  stdin.on("data", onInput);
  stdin.resume();
  process.stdout.on("resize", onResize);
  process.on("SIGWINCH", onResize);
  try {
    const { exitCode } = await terminal.wait();
    return exitCode < 0 ? 1 : exitCode;
  } finally {
    stdin.off("data", onInput);
    process.stdout.off("resize", onResize);
    process.off("SIGWINCH", onResize);
    if (stdin.isTTY) stdin.setRawMode(wasRaw);
    stdin.pause();
  }
}
