// A VMM process started detached (an agent restart leaves it running) and found again by its pid
// and start time: a pid the kernel handed to another process since is never taken for the VM.
import { readFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";

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
