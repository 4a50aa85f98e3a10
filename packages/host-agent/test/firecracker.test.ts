// The firecracker runtime end to end, through the host agent's RPC API: a real Firecracker microVM
// booted from the busybox test template, where a `firecracker` binary is on PATH and KVM runs
// guests. Elsewhere (the machines this project is built on: Debian packages no firecracker, and
// their /dev/kvm hangs a guest) it reports itself skipped with the reason; what the driver sends
// Firecracker is checked there against the API's specification (firecracker-contract.test.ts).
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { FirecrackerRuntime } from "../src/sandbox/runtime/firecracker.js";
import { kvmDeviceProblem } from "../src/sandbox/runtime/kvm-probe.js";
import { QemuRuntime } from "../src/sandbox/runtime/qemu.js";
import { TEST_TEMPLATE, codeOf, terminateAgent, repoRoot, skipAgent, startAgentProcess, text, type AgentUnderTest } from "./agent-harness.js";
import { shAsRoot, vmLeftovers, type Vmm } from "./vm-harness.js";
import { commandRuns } from "./host-tools.js";

const POOL = "10.218.0.0/27";
const vmDir = path.join(repoRoot, "build", "vm");

/**
 * Why a real Firecracker VM cannot boot here, or false. With a firecracker binary, the driver's
 * own probe decides; without one, the qemu driver's KVM probe (cached until the host reboots)
 * tells whether KVM would have run it.
 */
async function whyNotHere(): Promise<string | false> {
  if (skipAgent) return skipAgent;
  const built = existsSync(path.join(vmDir, "guest.json"));
  const scratch = await mkdtemp(path.join(tmpdir(), "wrenn-fcprobe-"));
  try {
    const options = { stateDir: scratch, vmDir, dnsServers: ["192.0.2.53"] };
    if (!commandRuns("firecracker")) {
      const reasons = ["no firecracker binary on PATH (Debian packages none: install a release binary on a KVM host)"];
      const kvmProblem = await kvmDeviceProblem();
      if (kvmProblem) reasons.push(`and ${kvmProblem}`);
      else if (built && commandRuns("qemu-system-x86_64") && / tcg /.test((await new QemuRuntime(options).probe()).detail)) {
        reasons.push("and KVM runs no guests here (a kernel booted under KVM hangs: the qemu driver's KVM probe)");
      }
      return reasons.join(" ");
    }
    if (!built) return "needs the VM guest (make vm-guest)";
    const probe = await new FirecrackerRuntime(options).probe();
    return probe.available ? false : `the firecracker probe: ${probe.detail}`;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

const skip = await whyNotHere().catch((err: Error) => `the firecracker probe failed: ${err.message}`);

const FIRECRACKER: Vmm = {
  name: "firecracker",
  stateFiles: (id) => [`${id}.sock`, `${id}.json`],
  isProcessOf: (line, id) => line.includes("firecracker") && line.includes(`${id}.sock`),
};

describe("the firecracker runtime (microVMs on KVM)", { skip }, () => {
  let agent: AgentUnderTest;

  before(async () => {
    agent = await startAgentProcess({ pool: POOL, table: `wrenn_fc${process.pid}`, host: "0.0.0.0" });
  });

  after(async () => {
    if (!agent) return;
    await terminateAgent(agent);
  });

  test("the probe finds firecracker and KVM, and firecracker becomes the default runtime", async () => {
    const info = await agent.client.getHostInfo({});
    const firecracker = info.runtimes.find((r) => r.name === "firecracker");
    assert.ok(firecracker?.available, `firecracker probe: ${firecracker?.detail}`);
    assert.match(firecracker.detail, /Firecracker v\d+\.\d+\.\d+.*; kvm; guest kernel /);
    assert.equal(firecracker.memorySnapshots, true);
    assert.equal(info.defaultRuntime, "firecracker");
  });

  test("a Firecracker sandbox boots, runs commands and files, pauses and resumes, and leaves nothing behind", async (t) => {
    const sandboxId = "fc-a";
    t.after(() => agent.client.destroySandbox({ sandboxId }).catch(() => undefined));
    const started = performance.now();
    const created = await agent.client.createSandbox({ sandboxId, template: TEST_TEMPLATE, runtime: "firecracker", memoryMb: 256, diskSizeMb: 512, envVars: { GREETING: "hi from firecracker" } });
    t.diagnostic(`created in ${Math.round(performance.now() - started)} ms`);
    assert.equal(created.runtime, "firecracker");
    assert.equal(created.status, "running");

    // The guest's own kernel, and the guest contract's command line.
    const [release, cmdline, hostname, greeting] = (await shAsRoot(agent, sandboxId, "uname -r; cat /proc/cmdline; hostname; echo $GREETING")).stdout.split("\n");
    assert.match(release!, /cloud-amd64$/);
    assert.match(cmdline!, /wrenn\.ip=169\.254\.0\.21\/30/);
    assert.equal(hostname, sandboxId);
    assert.equal(greeting, "hi from firecracker");
    assert.deepEqual(await shAsRoot(agent, sandboxId, "echo oops >&2; exit 3"), { stdout: "", stderr: "oops\n", exitCode: 3 });

    // The raw disk is the size asked for; the guest grew its filesystem to it.
    const df = await shAsRoot(agent, sandboxId, "df -m / | tail -1");
    const sizeMb = Number(df.stdout.trim().split(/\s+/)[1]);
    assert.ok(sizeMb > 400 && sizeMb <= 512, `root filesystem of ${sizeMb} MiB for a 512 MiB disk: ${df.stdout}`);
    await agent.client.writeFile({ sandboxId, path: "/home/user/notes/a.txt", content: Buffer.from("written in firecracker") });
    assert.equal(text((await agent.client.readFile({ sandboxId, path: "/home/user/notes/a.txt" })).content), "written in firecracker");
    assert.equal((await fetch(`http://${created.hostIp}:49983/health`)).status, 204);
    const image = path.join(agent.dataDir, "templates", TEST_TEMPLATE, "rootfs.ext4");
    const imageBefore = await stat(image);

    // Pause stops the vCPUs: envd does not answer; resume brings the same processes back.
    const sleeper = (await shAsRoot(agent, sandboxId, "sleep 600 >/dev/null 2>&1 & echo $!")).stdout.trim();
    await agent.client.pauseSandbox({ sandboxId });
    const whilePaused = await fetch(`http://${created.hostIp}:49983/health`, { signal: AbortSignal.timeout(1500) }).then((r) => `answered ${r.status}`, () => "no answer");
    assert.equal(whilePaused, "no answer");
    assert.equal(await codeOf(shAsRoot(agent, sandboxId, "true")), "FailedPrecondition");
    await agent.client.resumeSandbox({ sandboxId });
    assert.equal((await shAsRoot(agent, sandboxId, `kill -0 ${sleeper} && echo alive`)).stdout.trim(), "alive");

    const console = await readFile(path.join(agent.dataDir, "sandboxes", sandboxId, "bundle", "console.log"), "utf8");
    assert.match(console, new RegExp(`wrenn-init: starting envd on 169\\.254\\.0\\.21:49983 as ${sandboxId}`));

    await agent.client.destroySandbox({ sandboxId });
    assert.deepEqual(await vmLeftovers(agent, sandboxId, FIRECRACKER), []);
    assert.equal((await stat(image)).mtimeMs, imageBefore.mtimeMs, "the template image was never written");
  });
});
