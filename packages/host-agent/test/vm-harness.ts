// What the VM runtimes' end-to-end tests (qemu, firecracker) share: a root shell command and the
// list of what a VM sandbox could leave on the host.
import { existsSync } from "node:fs";
import path from "node:path";
import { runCommand } from "../src/exec/command.js";
import { mountsUnder } from "../src/sandbox/storage/rootfs.js";
import { text, type AgentUnderTest } from "./agent-harness.js";

/** Runs `script` with /bin/sh as root in the sandbox. */
export async function shAsRoot(agent: AgentUnderTest, sandboxId: string, script: string, timeoutSec = 60) {
  const result = await agent.client.exec({ sandboxId, cmd: "/bin/sh", args: ["-c", script], timeoutSec, user: "root" });
  return { stdout: text(result.stdout), stderr: text(result.stderr), exitCode: result.exitCode };
}

export interface Vmm {
  /** The driver's name: its state dir under the agent's data dir, and what a leftover is called. */
  name: string;
  /** The driver's files per sandbox in its state dir. */
  stateFiles: (sandboxId: string) => string[];
  /** Whether a `ps -eo args` line is this sandbox's VMM process. */
  isProcessOf: (line: string, sandboxId: string) => boolean;
}

/** Every trace of the sandbox on the host, each as a string naming what is left; empty when none. */
export async function vmLeftovers(agent: AgentUnderTest, sandboxId: string, vmm: Vmm): Promise<string[]> {
  const left: string[] = [];
  const processes = await runCommand("ps", ["-eo", "args"], { timeoutMs: 5000 });
  if (processes.split("\n").some((line) => vmm.isProcessOf(line, sandboxId))) left.push(`a ${vmm.name} process`);
  const namespaces = await runCommand("ip", ["netns", "list"], { timeoutMs: 5000 });
  if (namespaces.includes(`wrenn-${sandboxId}`)) left.push("its netns (and the TAP in it)");
  const dir = path.join(agent.dataDir, "sandboxes", sandboxId);
  if (existsSync(dir)) left.push(`its dir ${dir} (disk, console log)`);
  if ((await mountsUnder(dir)).length > 0) left.push("a mount");
  for (const file of vmm.stateFiles(sandboxId)) if (existsSync(path.join(agent.dataDir, vmm.name, file))) left.push(`${vmm.name}/${file}`);
  for (const cgroup of [`/sys/fs/cgroup/wrenn/${sandboxId}`, ...["memory", "pids", "cpu"].map((c) => `/sys/fs/cgroup/${c}/wrenn/${sandboxId}`)]) {
    if (existsSync(cgroup)) left.push(cgroup);
  }
  return left;
}
