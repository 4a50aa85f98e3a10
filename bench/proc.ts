// /proc readings the benchmarks share: what CPU time a process has used, and the processes below it.
import { readdirSync, readFileSync } from "node:fs";

/** CPU time (user + system, all threads; its children not included) a process has used so far, in ms. */
export function cpuMsOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14, 15 of proc(5))
  return (ticks * 1000) / 100; // USER_HZ is 100 on Linux
}

/** The processes below `pid` (children, grandchildren, …), nearest first; gone ones are skipped. */
export function descendants(pid: number): number[] {
  const found: number[] = [];
  for (const queue = [pid]; queue.length > 0; ) {
    const current = queue.shift()!;
    for (const task of readOr(() => readdirSync(`/proc/${current}/task`), [])) {
      const children = readOr(() => readFileSync(`/proc/${current}/task/${task}/children`, "utf8"), "").split(" ").filter(Boolean).map(Number);
      found.push(...children);
      queue.push(...children);
    }
  }
  return found;
}

function readOr<T>(read: () => T, fallback: T): T {
  try {
    return read();
  } catch {
    return fallback;
  }
}
