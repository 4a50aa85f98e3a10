// wrenn: the command line of Wrenn. Each command is a function of its arguments that answers an
// exit code (or nothing: 0); failures are printed as one line that says what to do.
import { AuthenticationError, ConnectionError, NotFoundError, PermissionError, WrennError } from "@wrenn/sdk";
import { USAGE_EXIT_CODE } from "./command-line/args.js";
import { completion } from "./commands/completion.js";
import { cp } from "./commands/cp.js";
import { exec } from "./commands/exec.js";
import { HOST_COMMANDS } from "./commands/host.js";
import { login, logout } from "./commands/login.js";
import { logs } from "./commands/logs.js";
import { metrics } from "./commands/metrics.js";
import { SANDBOX_COMMANDS, snapshot } from "./commands/sandbox.js";
import { shell } from "./commands/shell.js";
import { TEMPLATE_COMMANDS } from "./commands/template.js";
import { CliError } from "./output/cli-error.js";

type Run = (argv: string[]) => Promise<number | void> | number | void;

const GROUPS: Record<string, Record<string, Run>> = { sandbox: SANDBOX_COMMANDS, template: TEMPLATE_COMMANDS, host: HOST_COMMANDS };

const COMMANDS: Record<string, Run> = {
  login,
  logout,
  exec,
  logs,
  cp,
  shell,
  metrics,
  snapshot,
  completion: (argv) => completion(argv, completionTree()),
};

const HELP = `wrenn: sandboxes on your Wrenn control plane

  wrenn login [--api-url URL] [--api-key KEY]    check a key and keep it in ~/.config/wrenn/config.json
  wrenn sandbox create|list|info|kill|pause|resume|timeout
  wrenn exec <id> -- <command...>                run a command, streaming its output; exits with its code
  wrenn shell <id>                               an interactive terminal in the sandbox
  wrenn cp <src> <dst>                           copy files or directories; <id>:<path> is the sandbox's side
  wrenn logs <id>                                envd's log of the sandbox
  wrenn metrics <id>                             CPU, memory and disk, live on a terminal
  wrenn snapshot <id> --name NAME                save the sandbox's files as a template
  wrenn template list|delete|build
  wrenn host list                                the hosts (admin key)
  wrenn completion bash

WRENN_API_URL and WRENN_API_KEY override the saved login. Add --help to any command for its options;
--json prints what the API answered, for scripts.
`;

function completionTree(): Record<string, string[]> {
  const tree: Record<string, string[]> = {};
  for (const [group, commands] of Object.entries(GROUPS)) tree[group] = Object.keys(commands);
  for (const command of Object.keys(COMMANDS)) tree[command] = command === "completion" ? ["bash"] : [];
  tree.help = [];
  return tree;
}

function resolve(argv: string[]): { run: Run; rest: string[] } | undefined {
  const [first, second, ...rest] = argv;
  if (first === undefined) return undefined;
  const group = GROUPS[first];
  if (group) {
    if (second === undefined || second === "--help" || second === "-h") {
      process.stdout.write(`usage: wrenn ${first} ${Object.keys(group).join("|")} ...\n`);
      process.exit(second === undefined ? USAGE_EXIT_CODE : 0);
    }
    const run = group[second];
    if (!run) throw new CliError(`unknown command "wrenn ${first} ${second}": one of ${Object.keys(group).join(", ")}`, USAGE_EXIT_CODE);
    return { run, rest };
  }
  const run = COMMANDS[first];
  if (!run) throw new CliError(`unknown command "${first}": run wrenn --help`, USAGE_EXIT_CODE);
  return { run, rest: argv.slice(1) };
}

/** The message a user sees for an error, with what to do next. */
function describe(err: unknown): string {
  if (err instanceof CliError) return err.message;
  if (err instanceof AuthenticationError) {
    return err.code === "no_api_key" ? "no API key: run wrenn login or set WRENN_API_KEY" : `${err.message.replace(/\.?$/, "")}: run wrenn login with a valid key, or set WRENN_API_KEY`;
  }
  if (err instanceof NotFoundError) return `${err.message.replace(/\.?$/, "")}: wrenn sandbox list shows your sandboxes, wrenn template list your templates`;
  if (err instanceof PermissionError) return err.message;
  if (err instanceof ConnectionError) return `${err.message} (or run wrenn login --api-url URL)`;
  if (err instanceof WrennError) return err.message;
  // Anything else (a local file error: ENOENT, EACCES…) by its message; the stack with WRENN_DEBUG=1.
  if (err instanceof Error) return (process.env.WRENN_DEBUG ? err.stack : undefined) ?? err.message;
  return String(err);
}

async function main(argv: string[]): Promise<number> {
  if (argv.length === 0 || argv[0] === "--help" || argv[0] === "-h" || argv[0] === "help") {
    process.stdout.write(HELP);
    return argv.length === 0 ? USAGE_EXIT_CODE : 0;
  }
  try {
    const command = resolve(argv)!;
    return (await command.run(command.rest)) ?? 0;
  } catch (err) {
    process.stderr.write(`wrenn: ${describe(err)}\n`);
    return err instanceof CliError ? err.exitCode : 1;
  }
}

const code = await main(process.argv.slice(2));
// Let stdout drain to a pipe before leaving; open handles (SDK sockets) must not keep us alive.
process.stdout.write("", () => process.exit(code));
