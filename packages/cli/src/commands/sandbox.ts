// wrenn sandbox create|list|info|kill|pause|resume|timeout, and wrenn snapshot.
import { Sandbox, type SandboxInfo, type SandboxRuntime, type SandboxState } from "@wrenn/sdk";
import { integer, pairs, parse, usageError } from "../command-line/args.js";
import { resolveConnection } from "../config/config-file.js";
import { sandboxHandle } from "../connection/sandbox-handle.js";
import { formatAge, formatFields, formatPairs, formatTable, printJson } from "../output/table.js";

const STATES: SandboxState[] = ["starting", "running", "paused", "stopped", "error", "unknown"];
const RUNTIMES: SandboxRuntime[] = ["gvisor", "qemu", "firecracker"];

function printSandbox(info: SandboxInfo, json: boolean | undefined): void {
  if (json) return printJson(info);
  process.stdout.write(
    formatFields([
      ["id", info.id],
      ["template", info.template],
      ["runtime", info.runtime ?? "-"],
      ["state", info.state],
      ["vcpus", String(info.vcpus)],
      ["memory", `${info.memoryMb} MiB`],
      ["disk", `${info.diskSizeMb} MiB`],
      ["timeout", info.timeoutSec === 0 ? "never" : `${info.timeoutSec}s`],
      ["metadata", formatPairs(info.metadata)],
      ["host", info.hostId ?? "-"],
      ["envd", info.envdVersion ?? "-"],
      ["created", `${info.createdAt} (${formatAge(info.createdAt)})`],
      ...(info.endedAt ? ([["ended", info.endedAt]] as Array<[string, string]>) : []),
    ]),
  );
}

const CREATE_USAGE =
  "wrenn sandbox create [--template NAME] [--runtime gvisor|qemu|firecracker] [--timeout SEC] [--vcpus N] [--memory MB] [--disk MB] [--metadata k=v]... [--env k=v]... [--quiet | --json]";

async function create(argv: string[]): Promise<void> {
  const { values } = parse(
    argv,
    {
      template: { type: "string", short: "t" },
      runtime: { type: "string", short: "r" },
      timeout: { type: "string" },
      vcpus: { type: "string" },
      memory: { type: "string" },
      disk: { type: "string" },
      metadata: { type: "string", short: "m", multiple: true },
      env: { type: "string", short: "e", multiple: true },
      quiet: { type: "boolean", short: "q" },
      json: { type: "boolean" },
    },
    CREATE_USAGE,
    { max: 0 },
  );
  const runtime = values.runtime as SandboxRuntime | undefined;
  if (runtime !== undefined && !RUNTIMES.includes(runtime)) throw usageError(`unknown runtime "${runtime}" (one of ${RUNTIMES.join(", ")})`, CREATE_USAGE);
  const sandbox = await Sandbox.create(
    {
      template: values.template,
      runtime,
      timeoutSec: integer(values.timeout, "timeout", CREATE_USAGE),
      vcpus: integer(values.vcpus, "vcpus", CREATE_USAGE),
      memoryMb: integer(values.memory, "memory", CREATE_USAGE),
      diskSizeMb: integer(values.disk, "disk", CREATE_USAGE),
      metadata: pairs(values.metadata, "metadata", CREATE_USAGE),
      envs: pairs(values.env, "env", CREATE_USAGE),
    },
    await resolveConnection(),
  );
  if (values.quiet) return void process.stdout.write(sandbox.sandboxId + "\n");
  printSandbox(await sandbox.getInfo(), values.json);
}

const LIST_USAGE = "wrenn sandbox list [--state running,paused,...] [--all] [--metadata k=v]... [--json]";

async function list(argv: string[]): Promise<void> {
  const { values } = parse(
    argv,
    { state: { type: "string", short: "s" }, all: { type: "boolean", short: "a" }, metadata: { type: "string", short: "m", multiple: true }, json: { type: "boolean" } },
    LIST_USAGE,
    { max: 0 },
  );
  let state: SandboxState[] | undefined = values.all ? STATES : undefined;
  if (values.state) {
    state = values.state.split(",").map((s) => s.trim()) as SandboxState[];
    const unknown = state.find((s) => !STATES.includes(s));
    if (unknown) throw usageError(`unknown state "${unknown}" (one of ${STATES.join(", ")})`, LIST_USAGE);
  }
  const sandboxes: SandboxInfo[] = [];
  for await (const page of Sandbox.list({ state, metadata: pairs(values.metadata, "metadata", LIST_USAGE), limit: 100 }, await resolveConnection())) sandboxes.push(...page);
  if (values.json) return printJson(sandboxes);
  if (sandboxes.length === 0) return void process.stderr.write("no sandboxes (wrenn sandbox create starts one)\n");
  process.stdout.write(
    formatTable(
      ["ID", "TEMPLATE", "STATE", "VCPUS", "MEMORY", "CREATED", "METADATA"],
      sandboxes.map((s) => [s.id, s.template, s.state, String(s.vcpus), `${s.memoryMb} MiB`, formatAge(s.createdAt), formatPairs(s.metadata)]),
    ),
  );
}

async function info(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, { json: { type: "boolean" } }, "wrenn sandbox info <id> [--json]", { min: 1, max: 1 });
  printSandbox(await (await sandboxHandle(positionals[0]!)).getInfo(), values.json);
}

async function kill(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, { json: { type: "boolean" } }, "wrenn sandbox kill <id>... [--json]", { min: 1 });
  const killed: SandboxInfo[] = [];
  for (const id of positionals) {
    killed.push(await (await sandboxHandle(id)).kill());
    if (!values.json) process.stderr.write(`killed ${id}\n`);
  }
  if (values.json) printJson(killed);
}

async function pause(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, { json: { type: "boolean" } }, "wrenn sandbox pause <id> [--json]", { min: 1, max: 1 });
  const result = await (await sandboxHandle(positionals[0]!)).pause();
  if (values.json) printJson(result);
  else process.stderr.write(`paused ${result.id}\n`);
}

const RESUME_USAGE = "wrenn sandbox resume <id> [--timeout SEC] [--json]";

async function resume(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, { timeout: { type: "string" }, json: { type: "boolean" } }, RESUME_USAGE, { min: 1, max: 1 });
  const result = await (await sandboxHandle(positionals[0]!)).resume({ timeoutSec: integer(values.timeout, "timeout", RESUME_USAGE) });
  if (values.json) printJson(result);
  else process.stderr.write(`resumed ${result.id} (${result.state})\n`);
}

const TIMEOUT_USAGE = "wrenn sandbox timeout <id> <seconds>   (0: never pause for inactivity)";

async function timeout(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, { json: { type: "boolean" } }, TIMEOUT_USAGE, { min: 2, max: 2 });
  const seconds = integer(positionals[1], "seconds", TIMEOUT_USAGE)!;
  const result = await (await sandboxHandle(positionals[0]!)).setTimeout(seconds);
  if (values.json) printJson(result);
  else process.stderr.write(`${result.id}: timeout ${result.timeoutSec === 0 ? "never" : `${result.timeoutSec}s`}\n`);
}

export const SNAPSHOT_USAGE = "wrenn snapshot <id> --name TEMPLATE [--keep-running] [--json]";

export async function snapshot(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, { name: { type: "string", short: "n" }, "keep-running": { type: "boolean" }, json: { type: "boolean" } }, SNAPSHOT_USAGE, {
    min: 1,
    max: 1,
  });
  if (!values.name) throw usageError("--name is required", SNAPSHOT_USAGE);
  const template = await (await sandboxHandle(positionals[0]!)).snapshot({ name: values.name, keepRunning: values["keep-running"], timeoutMs: 600_000 });
  if (values.json) printJson(template);
  else process.stderr.write(`saved ${positionals[0]} as template ${template.name}\n`);
}

export const SANDBOX_COMMANDS: Record<string, (argv: string[]) => Promise<void>> = { create, list, ls: list, info, kill, rm: kill, pause, resume, timeout };
