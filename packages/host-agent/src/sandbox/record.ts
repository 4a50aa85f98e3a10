// What the agent knows of a sandbox, persisted as `<sandboxDir>/sandbox.json` so an agent restart
// can find its sandboxes again (the agent keeps no database). Written atomically, readable only by root:
// it holds envd's access token.
import { readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";
import type { RuntimeName } from "./runtime/driver.js";

/** "hibernated": a VM whose memory is on the host's disk and whose process has ended (resume restores it). */
export type SandboxStatus = "running" | "paused" | "hibernated";
/** What the reaper does once a sandbox's timeout ran out. */
export type TimeoutAction = "pause" | "kill";

export interface SandboxRecord {
  /** The id callers know it by. */
  id: string;
  /**
   * The name its parts carry on the host (directory, netns, veth, runsc container, cgroup,
   * firewall chain). Equal to `id`, except for a sandbox taken from the warm pool: it was built
   * before anyone named it.
   */
  runtimeId: string;
  /** Booted ahead of demand and not handed out yet (the warm pool); never listed. */
  warm?: boolean;
  template: string;
  runtime: RuntimeName;
  vcpus: number;
  memoryMb: number;
  diskSizeMb: number;
  /** Seconds of inactivity before the reaper pauses (or kills) it; 0: never. */
  timeoutSec: number;
  /** Pause or destroy it when `timeoutSec` ran out; absent in records written before the choice existed: pause. */
  onTimeout?: TimeoutAction;
  metadata: Record<string, string>;
  allowOut: string[];
  denyOut: string[];
  /** The network slot (its /30 in the address pool). */
  slot: number;
  /** envd's access token; empty when envd is open to the host only. */
  envdAccessToken: string;
  /** The user envd runs commands as when none is named. */
  defaultUser: string;
  status: SandboxStatus;
  createdAt: number;
  lastActiveAt: number;
}

const RECORD_FILE = "sandbox.json";

export async function writeRecord(sandboxDir: string, record: SandboxRecord): Promise<void> {
  const file = path.join(sandboxDir, RECORD_FILE);
  await writeFile(`${file}.tmp`, JSON.stringify(record, null, 2), { mode: 0o600 });
  await rename(`${file}.tmp`, file);
}

/** The record in `sandboxDir`, or undefined when there is none or it cannot be read. */
export async function readRecord(sandboxDir: string): Promise<SandboxRecord | undefined> {
  try {
    const record = JSON.parse(await readFile(path.join(sandboxDir, RECORD_FILE), "utf8")) as SandboxRecord;
    record.runtimeId ??= record.id; // written before sandboxes had a separate runtime name
    return record;
  } catch {
    return undefined;
  }
}
