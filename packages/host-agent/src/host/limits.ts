// Host-wide kernel settings a sandbox host needs. Under gVisor's ptrace platform every guest
// address space is a host process with a thread per sentry thread that ran in it, so one busy
// sandbox holds thousands of host tasks (docs/host-agent-gvisor.md): the default pid_max (32768)
// would let a handful of them exhaust the host's pids.
import { readFile, writeFile } from "node:fs/promises";
import { logger } from "../logging/logger.js";

const PID_MAX = 4_194_304;

export async function raiseHostLimits(): Promise<void> {
  const file = "/proc/sys/kernel/pid_max";
  const current = Number((await readFile(file, "utf8")).trim());
  if (current < PID_MAX) {
    await writeFile(file, String(PID_MAX));
    logger.info({ from: current, to: PID_MAX }, "raised kernel.pid_max");
  }
}
