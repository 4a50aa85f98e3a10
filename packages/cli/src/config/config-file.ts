// Where the CLI keeps the API's URL and key: ~/.config/wrenn/config.json (mode 0600), written by
// `wrenn login`; WRENN_API_URL and WRENN_API_KEY override what it holds.
import { chmod, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import path from "node:path";
import type { ConnectionOptions } from "@wrenn/sdk";
import { CliError } from "../output/cli-error.js";

export const DEFAULT_API_URL = "http://127.0.0.1:8080";

export interface StoredConfig {
  apiUrl?: string;
  apiKey?: string;
}

export function configPath(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CONFIG_HOME || path.join(env.HOME || homedir(), ".config");
  return path.join(base, "wrenn", "config.json");
}

export async function readConfig(file = configPath()): Promise<StoredConfig> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw err;
  }
  try {
    const parsed = JSON.parse(text) as StoredConfig;
    return { apiUrl: typeof parsed.apiUrl === "string" ? parsed.apiUrl : undefined, apiKey: typeof parsed.apiKey === "string" ? parsed.apiKey : undefined };
  } catch {
    throw new CliError(`${file} is not valid JSON: fix it, or run wrenn login to write it again`);
  }
}

/** Writes the config readable by its owner only (the key is a secret). */
export async function writeConfig(config: StoredConfig, file = configPath()): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  await writeFile(file, JSON.stringify(config, null, 2) + "\n", { mode: 0o600 });
  await chmod(file, 0o600); // writeFile's mode applies only to a new file
}

export async function removeConfig(file = configPath()): Promise<void> {
  await rm(file, { force: true });
}

/** The connection every command uses: the environment first, then the config file. */
export async function resolveConnection(env: NodeJS.ProcessEnv = process.env): Promise<ConnectionOptions & { apiUrl: string; apiKey: string }> {
  const stored = await readConfig(configPath(env));
  const apiKey = env.WRENN_API_KEY || stored.apiKey;
  if (!apiKey) throw new CliError("no API key: run wrenn login or set WRENN_API_KEY");
  const apiUrl = env.WRENN_API_URL || stored.apiUrl || DEFAULT_API_URL;
  return { apiUrl, apiKey };
}
