// The real stack for CLI tests (the control plane's API harness: a host agent, gVisor sandboxes,
// PGlite) and the real `wrenn` entry point run as a child process with its own HOME.
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startApi, type ApiUnderTest } from "../../control-plane/test/api-harness.js";

export { skipAgent, TEST_TEMPLATE, waitFor } from "../../control-plane/test/orchestration-harness.js";
export type { ApiUnderTest };

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const MAIN = path.join(REPO_ROOT, "packages/cli/src/main.ts");

/** One /24 of 10.249.0.0/16 and one nftables table per test file. */
export function startStack(slot: number, table: string): Promise<ApiUnderTest> {
  return startApi({ database: "pglite", agents: [{ pool: `10.249.${slot}.0/24`, table: `wrenn_hc4_${table}` }] });
}

/** A temporary HOME for the CLI's config; removed by `remove()`. */
export async function tempHome(): Promise<{ home: string; remove: () => Promise<void> }> {
  const home = await mkdtemp(path.join(tmpdir(), "wrenn-cli-test-"));
  return { home, remove: () => rm(home, { recursive: true, force: true }) };
}

export interface WrennRun {
  code: number | null;
  stdout: string;
  stderr: string;
  /** When each stdout chunk arrived, ms after the start, with the chunk. */
  chunks: Array<{ atMs: number; data: string }>;
  /** When the process ended, ms after the start. */
  endedMs: number;
}

/** Runs `wrenn <args>` with only the given environment (plus PATH), as a user would. */
export function wrenn(args: string[], env: Record<string, string | undefined>, options: { input?: string; cwd?: string; timeoutMs?: number } = {}): Promise<WrennRun> {
  return startWrenn(args, env, options).done;
}

/** `wrenn` with its process at hand (to signal it); `done` resolves when it ends. */
export function startWrenn(
  args: string[],
  env: Record<string, string | undefined>,
  options: { input?: string; cwd?: string; timeoutMs?: number } = {},
): { child: ChildProcessWithoutNullStreams; done: Promise<WrennRun> } {
  const started = Date.now();
  const child = spawn(process.execPath, ["--import", "tsx", MAIN, ...args], {
    cwd: options.cwd ?? REPO_ROOT,
    env: { PATH: process.env.PATH, ...env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  const run: WrennRun = { code: null, stdout: "", stderr: "", chunks: [], endedMs: 0 };
  child.stdout.setEncoding("utf8").on("data", (data: string) => {
    run.stdout += data;
    run.chunks.push({ atMs: Date.now() - started, data });
  });
  child.stderr.setEncoding("utf8").on("data", (data: string) => (run.stderr += data));
  child.stdin.end(options.input ?? "");
  const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 120_000);
  const done = new Promise<WrennRun>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      run.code = code;
      run.endedMs = Date.now() - started;
      resolve(run);
    });
  });
  return { child, done };
}
