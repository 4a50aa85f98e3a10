// Argument parsing for every command: node:util parseArgs, strict, with usage errors as CliError (exit 2).
import { parseArgs, type ParseArgsConfig } from "node:util";
import { CliError } from "../output/cli-error.js";

export type Options = NonNullable<ParseArgsConfig["options"]>;

export const USAGE_EXIT_CODE = 2;

export function usageError(message: string, usage: string): CliError {
  return new CliError(`${message}\nusage: ${usage}`, USAGE_EXIT_CODE);
}

/** Parses `argv` against `options`; unknown flags and missing positionals are usage errors. */
export function parse<const O extends Options>(argv: string[], options: O, usage: string, positionals: { min?: number; max?: number } = {}) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: { ...options, help: { type: "boolean", short: "h" } }, allowPositionals: true, strict: true });
  } catch (err) {
    throw usageError((err as Error).message.split("\n")[0]!, usage);
  }
  if ((parsed.values as Record<string, unknown>).help) {
    process.stdout.write(`usage: ${usage}\n`);
    process.exit(0);
  }
  const count = parsed.positionals.length;
  if (count < (positionals.min ?? 0)) throw usageError("missing arguments", usage);
  if (positionals.max !== undefined && count > positionals.max) throw usageError(`unexpected argument "${parsed.positionals[positionals.max]}"`, usage);
  return parsed as { values: { [K in keyof O]?: O[K] extends { type: "boolean" } ? (O[K] extends { multiple: true } ? boolean[] : boolean) : O[K] extends { multiple: true } ? string[] : string }; positionals: string[] };
}

/** `key=value` flags (repeatable) as a record. */
export function pairs(values: string[] | undefined, flag: string, usage: string): Record<string, string> | undefined {
  if (!values?.length) return undefined;
  const record: Record<string, string> = {};
  for (const value of values) {
    const at = value.indexOf("=");
    if (at <= 0) throw usageError(`--${flag} takes key=value, got "${value}"`, usage);
    record[value.slice(0, at)] = value.slice(at + 1);
  }
  return record;
}

export function integer(value: string | undefined, flag: string, usage: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value)) throw usageError(`--${flag} takes a whole number, got "${value}"`, usage);
  return Number(value);
}
