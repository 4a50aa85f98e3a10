// wrenn login / logout: the API's URL and key, checked against the API, kept in the config file.
import { createInterface } from "node:readline/promises";
import { Template } from "@wrenn/sdk";
import { parse } from "../command-line/args.js";
import { configPath, DEFAULT_API_URL, readConfig, removeConfig, writeConfig } from "../config/config-file.js";
import { CliError } from "../output/cli-error.js";

const LOGIN_USAGE = "wrenn login [--api-url URL] [--api-key KEY]   (asks for what is missing; the key can also come on stdin)";

export async function login(argv: string[]): Promise<void> {
  const { values } = parse(argv, { "api-url": { type: "string" }, "api-key": { type: "string" } }, LOGIN_USAGE, { max: 0 });
  const stored = await readConfig();
  const defaultUrl = process.env.WRENN_API_URL || stored.apiUrl || DEFAULT_API_URL;
  let apiUrl = values["api-url"];
  let apiKey = values["api-key"];
  if (apiUrl === undefined && process.stdin.isTTY) apiUrl = (await ask(`API URL [${defaultUrl}]: `)).trim() || defaultUrl;
  if (apiKey === undefined) apiKey = (process.stdin.isTTY ? await askHidden("API key (wrn_…; make up prints one): ") : await readLine()).trim();
  apiUrl = (apiUrl ?? defaultUrl).replace(/\/+$/, "");
  if (!apiKey) throw new CliError("no API key given: pass --api-key KEY (make up prints the admin key)");
  // Any authenticated read proves the key; the templates list is small.
  await Template.list({ timeoutMs: 15_000 }, { apiUrl, apiKey, maxRetries: 1 });
  await writeConfig({ apiUrl, apiKey });
  process.stderr.write(`logged in to ${apiUrl}; saved to ${configPath()}\n`);
}

export async function logout(argv: string[]): Promise<void> {
  parse(argv, {}, "wrenn logout", { max: 0 });
  await removeConfig();
  process.stderr.write(`removed ${configPath()}\n`);
}

async function ask(question: string): Promise<string> {
  const prompt = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return await prompt.question(question);
  } finally {
    prompt.close();
  }
}

/** The first line of stdin (a key piped in by a script), or "" when there is none. */
async function readLine(): Promise<string> {
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    lines.close();
    return line;
  }
  return "";
}

/** A prompt whose answer is not echoed (the key is a secret); Ctrl-C aborts. */
function askHidden(question: string): Promise<string> {
  process.stderr.write(question);
  const stdin = process.stdin;
  stdin.setRawMode(true);
  stdin.resume();
  let answer = "";
  return new Promise((resolve, reject) => {
    const done = (error?: Error) => {
      stdin.off("data", onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write("\n");
      if (error) reject(error);
      else resolve(answer);
    };
    const onData = (chunk: Buffer) => {
      for (const char of chunk.toString("utf8")) {
        if (char === "\r" || char === "\n") return done();
        if (char === "\u0003") return done(new CliError("login cancelled", 130));
        if (char === "\u007f" || char === "\b") answer = answer.slice(0, -1);
        else answer += char;
      }
    };
    stdin.on("data", onData);
  });
}
