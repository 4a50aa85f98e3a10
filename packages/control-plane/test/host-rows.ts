// Host rows that stand for hosts in placement tests run without any agent: ready, holding the
// templates named, never called (their address does not resolve and their token is no token).
import { randomUUID } from "node:crypto";
import type { Repositories } from "../src/db/repositories.js";
import { PLATFORM_TEAM_ID, type Host } from "../src/db/schema.js";

/** A ready host row `name` with `memoryMb` (more memory ranks it higher among idle hosts), holding `template`. */
export async function addHostRow(repos: Repositories, name: string, options: { runtimes: string[]; memoryMb: number; template: string }): Promise<Host> {
  const host = await repos.hosts.createRegistered(
    randomUUID(),
    { address: `${name}.invalid:5008`, runtimes: options.runtimes, capacity: { cpu: 8, memoryMb: options.memoryMb, diskMb: 100_000, slots: 50 } },
    "never opened: no call is made to these hosts",
  );
  await repos.hostTemplates.replace(host.id, [{ name: options.template, teamId: PLATFORM_TEAM_ID, kind: "base", sizeBytes: 0 }]);
  return host;
}
