// Renames the sandbox's machine. A VM restored from a memory snapshot wakes with the hostname of
// the VM that was saved; the host tells envd the sandbox's own in /init's `hostname`. Node cannot
// call sethostname(2), but root may write /proc/sys/kernel/hostname (the UTS namespace's name).
import { readFile, writeFile } from "node:fs/promises";
import os from "node:os";

/** What the kernel takes as a hostname and /etc/hosts can hold: 1–64 letters, digits, '-', '_' or '.'. */
export function isHostname(value: string): boolean {
  return /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/.test(value);
}

export type HostnameOutcome = { changed: false } | { changed: true; from: string } | { changed: false; error: string };

/** Sets the hostname and rewrites /etc/hostname and the old name's entries in /etc/hosts. */
export async function setHostname(name: string): Promise<HostnameOutcome> {
  const from = os.hostname();
  if (from === name) return { changed: false };
  try {
    await writeFile("/proc/sys/kernel/hostname", name);
  } catch (err) {
    return { changed: false, error: (err as Error).message };
  }
  await writeFile("/etc/hostname", `${name}\n`).catch(() => undefined);
  const hosts = await readFile("/etc/hosts", "utf8").catch(() => undefined);
  if (hosts !== undefined) {
    const renamed = hosts
      .split("\n")
      .map((line) => (line.trimStart().startsWith("#") ? line : line.replace(/(\s)(\S+)/g, (whole, space: string, word: string) => (word === from ? `${space}${name}` : whole))))
      .join("\n");
    if (renamed !== hosts) await writeFile("/etc/hosts", renamed).catch(() => undefined);
  }
  return { changed: true, from };
}
