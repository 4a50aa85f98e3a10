// The host's memory, from /proc/meminfo: what admission control and GetHostInfo both report.
import { readFile } from "node:fs/promises";

export interface HostMemoryBytes {
  totalBytes: number;
  availableBytes: number;
}

export async function hostMemoryBytes(): Promise<HostMemoryBytes> {
  const meminfo = await readFile("/proc/meminfo", "utf8");
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(meminfo)?.[1] ?? 0);
  return { totalBytes: kib("MemTotal") * 1024, availableBytes: kib("MemAvailable") * 1024 };
}

/** The same in whole MiB, rounded down. */
export async function hostMemoryMb(): Promise<{ totalMb: number; availableMb: number }> {
  const { totalBytes, availableBytes } = await hostMemoryBytes();
  return { totalMb: Math.floor(totalBytes / 2 ** 20), availableMb: Math.floor(availableBytes / 2 ** 20) };
}
