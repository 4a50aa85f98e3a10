// wrenn template list|delete|build.
import { Template, type BuildLogEvent } from "@wrenn/sdk";
import { integer, parse, usageError } from "../command-line/args.js";
import { resolveConnection } from "../config/config-file.js";
import { formatAge, formatBytes, formatTable, printJson } from "../output/table.js";

async function list(argv: string[]): Promise<void> {
  const { values } = parse(argv, { json: { type: "boolean" } }, "wrenn template list [--json]", { max: 0 });
  const templates = await Template.list({}, await resolveConnection());
  if (values.json) return printJson(templates);
  process.stdout.write(
    formatTable(
      ["NAME", "KIND", "SCOPE", "SIZE", "CREATED"],
      templates.map((t) => [t.name, t.kind, t.platform ? "platform" : "team", formatBytes(t.sizeBytes), formatAge(t.createdAt)]),
    ),
  );
}

async function remove(argv: string[]): Promise<void> {
  const { positionals } = parse(argv, {}, "wrenn template delete <name>...", { min: 1 });
  const connection = await resolveConnection();
  for (const name of positionals) {
    await Template.delete(name, {}, connection);
    process.stderr.write(`deleted template ${name}\n`);
  }
}

const BUILD_USAGE = "wrenn template build <name> [--from BASE] --step 'shell command'... [--vcpus N] [--memory MB] [--disk MB] [--step-timeout SEC] [--json]";

async function build(argv: string[]): Promise<void> {
  const { values, positionals } = parse(
    argv,
    {
      from: { type: "string" },
      step: { type: "string", multiple: true },
      vcpus: { type: "string" },
      memory: { type: "string" },
      disk: { type: "string" },
      "step-timeout": { type: "string" },
      json: { type: "boolean" },
    },
    BUILD_USAGE,
    { min: 1, max: 1 },
  );
  if (!values.step?.length) throw usageError("at least one --step is required", BUILD_USAGE);
  const onLog = (event: BuildLogEvent) => {
    if (event.type === "step") process.stderr.write(`\n[step ${event.step}] ${event.command}\n`);
    else if (event.type === "stdout" || event.type === "stderr") process.stderr.write(event.data);
    else if (event.type === "exit") process.stderr.write(`[step ${event.step}] exit ${event.exitCode}\n`);
  };
  const template = await Template.build(
    {
      name: positionals[0]!,
      baseTemplate: values.from ?? "base",
      steps: values.step,
      vcpus: integer(values.vcpus, "vcpus", BUILD_USAGE),
      memoryMb: integer(values.memory, "memory", BUILD_USAGE),
      diskSizeMb: integer(values.disk, "disk", BUILD_USAGE),
      stepTimeoutSec: integer(values["step-timeout"], "step-timeout", BUILD_USAGE),
      onLog,
    },
    await resolveConnection(),
  );
  if (values.json) printJson(template);
  else process.stderr.write(`built template ${template.name} (${formatBytes(template.sizeBytes)})\n`);
}

export const TEMPLATE_COMMANDS: Record<string, (argv: string[]) => Promise<void>> = { list, ls: list, delete: remove, rm: remove, build };
