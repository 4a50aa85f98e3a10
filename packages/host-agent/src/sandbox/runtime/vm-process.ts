// A VMM process started detached (an agent restart leaves it running) and found again by its pid
// and start time: a pid the kernel handed to another process since is never taken for the VM.
import { spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { readdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { readCgroupLimitHits } from "../metrics/cgroup.js";

export interface VmProcess {
  pid: number;
  /** The process's start time (field 22 of /proc/<pid>/stat). */
  startTicks: string;
}

/** Field 22 of /proc/<pid>/stat: when the process started, in clock ticks since boot. */
export async function startTicks(pid: number): Promise<string> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  // The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? "";
}

/** Whether `vm.pid` is still that process (not exited, not a zombie, not reused). */
export async function isRunning(vm: VmProcess): Promise<boolean> {
  const stat = await readFile(`/proc/${vm.pid}/stat`, "utf8").catch(() => undefined);
  if (!stat) return false;
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return fields[0] !== "Z" && fields[19] === vm.startTicks;
}

/** Waits until the process has exited (after a SIGKILL); fails after `timeoutMs`. */
export async function waitUntilGone(vm: VmProcess, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (await isRunning(vm)) {
    if (performance.now() > deadline) throw new Error(`pid ${vm.pid} still running ${timeoutMs} ms after SIGKILL`);
    await sleep(5);
  }
}

/** A VM driver's record of each sandbox, `<stateDir>/<id>.json`: what finds its VM after an agent restart. */
export class VmRecords<T extends VmProcess & { sandboxDir: string }> {
  constructor(private readonly stateDir: string) {}

  file(sandboxId: string): string {
    return path.join(this.stateDir, `${sandboxId}.json`);
  }

  async read(sandboxId: string): Promise<T | undefined> {
    return readFile(this.file(sandboxId), "utf8").then((text) => JSON.parse(text) as T, () => undefined);
  }

  async write(sandboxId: string, record: T): Promise<void> {
    await writeFile(this.file(sandboxId), JSON.stringify(record));
  }

  /** Every recorded sandbox: its id, and its record (undefined when unreadable). */
  async all(): Promise<Array<{ id: string; record: T | undefined }>> {
    const names = await readdir(this.stateDir).catch(() => [] as string[]);
    const ids = names.filter((name) => name.endsWith(".json")).map((name) => name.slice(0, -".json".length));
    return Promise.all(ids.map(async (id) => ({ id, record: await this.read(id) })));
  }

  async remove(sandboxId: string): Promise<void> {
    await rm(this.file(sandboxId), { force: true });
  }
}

/** Why a VM stopped by itself: an OOM kill of its cgroup, or the last line its guest's init or kernel left on the console. */
export async function vmExitReason(cgroupPath: string, consoleLog: string | undefined): Promise<string | undefined> {
  const hits = await readCgroupLimitHits(cgroupPath);
  if (hits.oomKills > 0) return `out of memory: the VM used its whole memory limit (${Math.round(hits.memoryLimitBytes / 2 ** 20)} MiB) and was killed`;
  if (!consoleLog) return undefined;
  const line = (await readFile(consoleLog, "utf8").catch(() => "")).split("\n").reverse().find((l) => /wrenn-init:|Kernel panic/.test(l));
  return line ? `the VM stopped: ${line.trim()}` : undefined;
}

/** The end of a VM's console, quoted: what an error about a VM that died says. */
export async function consoleTail(file: string): Promise<string> {
  const text = await readFile(file, "utf8").catch(() => "");
  return JSON.stringify(text.slice(-600));
}

/**
 * Starts a VMM through nsenter (which execs it in place: the pid is the VMM's), detached so an
 * agent restart leaves it running, its stdout and stderr appended to `consoleLog`. `exited`
 * resolves with how it ended, if it does.
 */
export async function spawnVmm(nsenterArgs: string[], consoleLog: string, what: string): Promise<{ pid: number; exited: Promise<string> }> {
  const output = openSync(consoleLog, "a");
  let child;
  try {
    child = spawn("nsenter", nsenterArgs, { detached: true, stdio: ["ignore", output, output] });
  } finally {
    closeSync(output);
  }
  const exited = new Promise<string>((resolve) => {
    child.once("exit", (code, signal) => resolve(signal ? `killed by ${signal}` : `exited with ${code}`));
    child.once("error", (err) => resolve(err.message));
  });
  child.unref();
  if (child.pid === undefined) throw new Error(`${what} did not start: ${await exited}`);
  return { pid: child.pid, exited };
}
