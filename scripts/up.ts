// `make up`: the whole stack in the foreground. Starts the host agent, waits for it to listen,
// starts the control plane with that agent as its local host, relays both logs (pretty, prefixed
// [agent] / [api]) and prints the API's URL and admin key once ready, with the three `export` lines
// that point the e2b SDK at this Wrenn and the dashboard's URL, user and password. Ctrl-C stops the
// control plane, then the agent; sandboxes keep running and the next `make up` takes them back.
// Usage: node --import tsx scripts/up.ts [--data-dir .data] [--warm-pool base=2] [-- <more host agent flags>]
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { prettyFactory } from "pino-pretty";
import { ADMIN_PASSWORD_FILE, ADMIN_USER_EMAIL } from "../packages/control-plane/src/bootstrap.js";
import { e2bKeyFor } from "../packages/control-plane/src/db/api-keys.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { values, positionals: agentFlags } = parseArgs({
  allowPositionals: true,
  options: {
    "data-dir": { type: "string", default: path.join(repoRoot, ".data") },
    "warm-pool": { type: "string", default: "base=2" },
  },
});
const dataDir = path.resolve(values["data-dir"]!);
const agentDataDir = path.join(dataDir, "agent");
/** Long enough for the control plane to stop its loops and close the database; then SIGKILL. */
const STOP_GRACE_MS = 20_000;

const color = process.stdout.isTTY && !process.env.NO_COLOR;
const pretty = prettyFactory({ colorize: color, translateTime: "HH:MM:ss.l", ignore: "pid,hostname,name", singleLine: true });
const paint = (code: number, text: string) => (color ? `\x1b[${code}m${text}\x1b[0m` : text);
const PREFIX = { agent: paint(36, "[agent]"), api: paint(35, "[api]  "), up: paint(1, "[up]   ") };
const say = (line: string) => console.log(`${PREFIX.up} ${line}`);

/** Relays a child's output line by line: pino JSON made readable, everything prefixed; `onLine` sees raw lines first. */
function relay(stream: Readable, prefix: string, onLine: (line: string) => boolean = () => false): void {
  createInterface({ input: stream, crlfDelay: Infinity }).on("line", (line) => {
    if (onLine(line)) return;
    const text = line.startsWith("{") ? pretty(line).trimEnd() : line;
    for (const part of text.split("\n")) console.log(`${prefix} ${part}`);
  });
}

function start(command: string[], env: NodeJS.ProcessEnv): ChildProcess {
  // Own process group: the terminal's Ctrl-C reaches only this launcher, which stops the children in order.
  return spawn(process.execPath, ["--import", "tsx", ...command], { cwd: repoRoot, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"], detached: true });
}

const exited = (child: ChildProcess) =>
  new Promise<void>((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.once("exit", () => resolve())));

/** Stops a child with SIGTERM (SIGKILL after the grace); true when it stopped cleanly (exit code 0). */
async function stopChild(child: ChildProcess | undefined, name: string): Promise<boolean> {
  if (!child) return true;
  if (child.exitCode === null && child.signalCode === null) {
    say(`stopping the ${name}…`);
    child.kill("SIGTERM");
    const timer = setTimeout(() => {
      say(`the ${name} did not stop within ${STOP_GRACE_MS / 1000} s; killing it`);
      child.kill("SIGKILL");
    }, STOP_GRACE_MS);
    await exited(child);
    clearTimeout(timer);
  }
  return child.exitCode === 0;
}

let agent: ChildProcess | undefined;
let controlPlane: ChildProcess | undefined;
let stopping: Promise<void> | undefined;

function stopAll(exitCode: number): Promise<void> {
  stopping ??= (async () => {
    const clean = [await stopChild(controlPlane, "control plane"), await stopChild(agent, "host agent")].every(Boolean);
    const code = exitCode || (clean ? 0 : 1);
    // make reports only "Interrupt" after a Ctrl-C, whatever this exits with: say how it went.
    say(`${code === 0 ? "stopped cleanly" : `stopped after a failure (exit code ${code})`}; sandboxes keep running and the next \`make up\` takes them back`);
    process.exit(code);
  })();
  return stopping;
}

for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => {
    if (stopping) {
      // A second Ctrl-C: no more waiting.
      for (const child of [controlPlane, agent]) child?.kill("SIGKILL");
      process.exit(130);
    }
    void stopAll(0);
  });
}
// Never leave the children behind, whatever ends this process.
process.on("exit", () => {
  for (const child of [controlPlane, agent]) if (child && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
});

say(`starting the host agent (data in ${agentDataDir})`);
agent = start(["packages/host-agent/src/main.ts", "--data-dir", agentDataDir, "--warm-pool", values["warm-pool"]!, ...agentFlags], {});
const agentPort = await new Promise<number>((resolve, reject) => {
  relay(agent!.stdout!, PREFIX.agent, (line) => {
    const match = /host agent listening on port (\d+), port proxy on (\d+)/.exec(line);
    if (match) resolve(Number(match[1]));
    return false;
  });
  relay(agent!.stderr!, PREFIX.agent);
  agent!.once("exit", (code, signal) => reject(new Error(`the host agent exited (${signal ?? code}) before it listened`)));
}).catch((err: Error) => {
  say(err.message);
  return process.exit(1);
});
agent.on("exit", (code, signal) => {
  if (stopping) return;
  say(`the host agent exited (${signal ?? code}); stopping`);
  void stopAll(1);
});

say("starting the control plane");
const controlPlaneDataDir = path.join(dataDir, "control-plane");
/** The first admin user's password, which the control plane saved at its first start (bootstrap.ts). */
function dashboardPassword(): string {
  try {
    return readFileSync(path.join(controlPlaneDataDir, ADMIN_PASSWORD_FILE), "utf8").trim();
  } catch {
    return `(not saved: ${ADMIN_USER_EMAIL}'s password was changed since the first start)`;
  }
}
controlPlane = start(["packages/control-plane/src/main.ts"], {
  WRENN_DATA_DIR: controlPlaneDataDir,
  WRENN_LOCAL_AGENT: `127.0.0.1:${agentPort}`,
  WRENN_LOCAL_AGENT_TOKEN_FILE: path.join(agentDataDir, "host-token"),
});
const ready = new Map<string, string>();
let printed = false;
relay(controlPlane.stdout!, PREFIX.api, (line) => {
  // The lines a user copies: alone, unprefixed.
  const match = /^(API|API key): (\S+)$/.exec(line);
  if (!match) return false;
  ready.set(match[1]!, match[2]!);
  const url = ready.get("API");
  const key = ready.get("API key");
  if (url && key && !printed) {
    printed = true;
    // The edge proxy serves envd on the API's own port (routing by the SDK's E2b-Sandbox-* headers),
    // so one URL is both; the e2b_ alias suits every e2b SDK, including those that check the key's shape.
    const e2b = [`export E2B_API_URL=${url}`, `export E2B_SANDBOX_URL=${url}`, `export E2B_API_KEY=${e2bKeyFor(key)}`];
    // The control plane printed its lines after its first-start setup, so the password file is there.
    const dashboard = [`Dashboard: ${url}/`, `Dashboard user: ${ADMIN_USER_EMAIL}`, `Dashboard password: ${dashboardPassword()}`];
    console.log(`\nAPI: ${url}\nAPI key: ${key}\n\n# the e2b SDK (npm e2b, Python e2b) against this Wrenn:\n${e2b.join("\n")}\n\n${dashboard.join("\n")}\n`);
    say("Wrenn is up. Ctrl-C stops it.");
  }
  return true;
});
relay(controlPlane.stderr!, PREFIX.api);
controlPlane.on("exit", (code, signal) => {
  if (stopping) return;
  say(`the control plane exited (${signal ?? code}); stopping`);
  void stopAll(1);
});
