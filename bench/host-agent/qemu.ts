// Benchmarks the qemu runtime against its floor in the same run: the same guest booted by hand
// (qemu with the driver's own arguments, in a namespace of its own, the same template image under
// a fresh overlay), until envd runs a first command. Reports cold boot → first command through the
// agent vs. that floor, and per guest memory size: the host memory (qemu's RSS) of an idle VM, and
// hibernate and resume → first command times; and creates from a memory-snapshot template and from a
// plain template once its boot snapshot is saved (both restores) vs. the cold boot.
// Under TCG where KVM runs no guest (these machines): the figures say which.
// Usage: `make bench-qemu`, or `node --import tsx bench/host-agent/qemu.ts [--runs 5]`.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { runCommand } from "../../packages/host-agent/src/exec/command.js";
import { Cleanup } from "../../packages/host-agent/src/sandbox/cleanup.js";
import { EnvdClient } from "../../packages/host-agent/src/sandbox/envd/client.js";
import { createNetwork } from "../../packages/host-agent/src/sandbox/network/namespace.js";
import { SlotAllocator } from "../../packages/host-agent/src/sandbox/network/slots.js";
import { guestArtifacts, kernelCommandLine } from "../../packages/host-agent/src/sandbox/runtime/qemu-guest.js";
import { addGuestLink, vmArguments, type Accelerator } from "../../packages/host-agent/src/sandbox/runtime/qemu.js";
import { TemplateStore } from "../../packages/host-agent/src/sandbox/storage/templates.js";
import { TEST_TEMPLATE, terminateAgent, repoRoot, startAgentProcess, text, type AgentUnderTest } from "../../packages/host-agent/test/agent-harness.js";

const { values } = parseArgs({ options: { runs: { type: "string", default: "5" } } });
const RUNS = Number(values.runs);
const MEMORY_SIZES_MB = [256, 512, 1024];
const vmDir = path.join(repoRoot, "build", "vm");

const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
const summary = (samples: number[]) => {
  const sorted = [...samples].sort((a, b) => a - b);
  return { p50: Math.round(quantile(sorted, 0.5)), p95: Math.round(quantile(sorted, 0.95)), n: samples.length };
};

/** The floor: qemu started by hand with the driver's arguments, until envd's first command answers. */
async function bareBoot(image: string, accelerator: Accelerator, pool: SlotAllocator, index: number): Promise<number> {
  const guest = await guestArtifacts(vmDir);
  const work = await mkdtemp(path.join(tmpdir(), "wrenn-bench-qemu-"));
  const cleanup = new Cleanup();
  cleanup.defer(`remove ${work}`, () => rm(work, { recursive: true, force: true }));
  const slot = pool.allocate();
  cleanup.defer("release slot", () => pool.release(slot));
  try {
    const network = await createNetwork(`qbench${process.pid}x${index}`, slot, pool, cleanup);
    const disk = path.join(work, "root.qcow2");
    await runCommand("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "raw", "-b", image, disk, "1024M"], { timeoutMs: 10_000 });
    await addGuestLink(network.namespacePath, network.sandboxAddress);
    const started = performance.now();
    const args = vmArguments({
      guest,
      accelerator,
      name: `bench-floor-${index}`,
      memoryMb: 512,
      vcpus: 1,
      commandLine: kernelCommandLine({ hostname: "floor", dnsServers: ["192.0.2.53"] }),
      rootDisk: disk,
      qmpSocket: path.join(work, "qmp.sock"),
    });
    const child = spawn("nsenter", [`--net=${network.namespacePath}`, "--", "qemu-system-x86_64", ...args], { stdio: "ignore" });
    cleanup.defer("kill qemu", async () => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once("exit", resolve));
        child.kill("SIGKILL");
        await exited;
      }
    });
    const envd = new EnvdClient({ baseUrl: `http://${network.sandboxAddress}:49983` });
    cleanup.defer("close envd client", () => envd.close());
    await envd.waitUntilReady({ timeoutMs: 60_000 });
    const result = await envd.exec({ cmd: "/bin/echo", args: ["ready"] });
    const elapsed = performance.now() - started;
    if (text(result.stdout).trim() !== "ready") throw new Error(`bare VM printed ${JSON.stringify(text(result.stdout))}`);
    return elapsed;
  } finally {
    await cleanup.run();
  }
}

async function createThenExec(agent: AgentUnderTest, sandboxId: string, memoryMb = 512): Promise<number> {
  const started = performance.now();
  await agent.client.createSandbox({ sandboxId, template: TEST_TEMPLATE, runtime: "qemu", memoryMb });
  const result = await agent.client.exec({ sandboxId, cmd: "/bin/echo", args: ["ready"] });
  const elapsed = performance.now() - started;
  if (text(result.stdout).trim() !== "ready") throw new Error(`exec printed ${JSON.stringify(text(result.stdout))}`);
  return elapsed;
}

/** RSS of the qemu process of `sandboxId`, in MiB. */
async function qemuRssMiB(sandboxId: string): Promise<number> {
  const ps = await runCommand("ps", ["-eo", "pid,args"], { timeoutMs: 5000 });
  const line = ps.split("\n").find((l) => l.includes("qemu-system") && l.includes(`wrenn-${sandboxId} `));
  if (!line) throw new Error(`no qemu process for ${sandboxId}`);
  const status = await readFile(`/proc/${line.trim().split(/\s+/)[0]}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) / 1024;
}

async function main(): Promise<void> {
  // Boot snapshots off: every create from the plain template here boots (they have their own agent below).
  const agent = await startAgentProcess({ pool: "10.243.16.0/26", table: `wrenn_bq${process.pid}`, args: ["--metrics-interval-ms", "5000", "--vm-boot-snapshots", "off"] });
  const pool = new SlotAllocator("10.243.17.0/26");
  const report: Record<string, unknown> = {};
  try {
    const qemu = (await agent.client.getHostInfo({})).runtimes.find((r) => r.name === "qemu");
    if (!qemu?.available) throw new Error(`qemu is not available: ${qemu?.detail}`);
    const accelerator: Accelerator = /; kvm/.test(qemu.detail) ? "kvm" : "tcg";
    report.accelerator = accelerator;
    console.log(`qemu runtime: ${qemu.detail}`);
    // The first VM makes the template's image; then both sides boot from it.
    await createThenExec(agent, "warmup");
    await agent.client.destroySandbox({ sandboxId: "warmup" });
    const image = await new TemplateStore(path.join(agent.dataDir, "templates")).blockImage(TEST_TEMPLATE);
    const floor: number[] = [];
    const ours: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      floor.push(await bareBoot(image, accelerator, pool, i));
      ours.push(await createThenExec(agent, `cold${i}`));
      await agent.client.destroySandbox({ sandboxId: `cold${i}` });
    }
    const floorStats = summary(floor);
    const oursStats = summary(ours);
    report.coldBootToFirstCommand = { floor: floorStats, agent: oursStats, ratioP50: +(oursStats.p50 / floorStats.p50).toFixed(2) };
    console.log(`[${accelerator}] bare qemu boot → envd's first command: p50 ${floorStats.p50} ms, p95 ${floorStats.p95} ms`);
    console.log(`[${accelerator}] CreateSandbox(qemu) → first Exec: p50 ${oursStats.p50} ms, p95 ${oursStats.p95} ms (${report.coldBootToFirstCommand && (oursStats.p50 / floorStats.p50).toFixed(2)}× the floor)`);

    // Restore: sandboxes from a template that carries a memory snapshot, first command answered.
    await createThenExec(agent, "snap-source");
    const snapshot = await agent.client.createSnapshot({ sandboxId: "snap-source", name: "bench-mem", keepRunning: false });
    if (!snapshot.includesMemory) throw new Error("the snapshot carries no memory");
    const restored: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const started = performance.now();
      await agent.client.createSandbox({ sandboxId: `restored${i}`, template: "bench-mem", runtime: "qemu" });
      const result = await agent.client.exec({ sandboxId: `restored${i}`, cmd: "/bin/echo", args: ["ready"] });
      restored.push(performance.now() - started);
      if (text(result.stdout).trim() !== "ready") throw new Error(`exec after restore printed ${JSON.stringify(text(result.stdout))}`);
      await agent.client.destroySandbox({ sandboxId: `restored${i}` });
    }
    await agent.client.deleteSnapshot({ name: "bench-mem" });
    const restoredStats = summary(restored);
    report.restoreFromSnapshotToFirstCommand = { restored: restoredStats, coldP50: oursStats.p50, speedupP50: +(oursStats.p50 / restoredStats.p50).toFixed(2) };
    console.log(`[${accelerator}] CreateSandbox from a memory-snapshot template → first Exec: p50 ${restoredStats.p50} ms, p95 ${restoredStats.p95} ms — ${(oursStats.p50 / restoredStats.p50).toFixed(2)}× faster than a cold boot (goal ≥ 5×)`);

    // A plain template with boot snapshots on: the first create boots (and a copy of its first boot
    // is saved in the background); the ones after restore it.
    const bootAgent = await startAgentProcess({ pool: "10.243.18.0/26", table: `wrenn_bqb${process.pid}`, args: ["--metrics-interval-ms", "5000", "--vm-boot-snapshots", "on"] });
    try {
      await createThenExec(bootAgent, "first-of-shape");
      await bootAgent.client.destroySandbox({ sandboxId: "first-of-shape" });
      const bootDir = path.join(bootAgent.dataDir, "templates", TEST_TEMPLATE, "vm-boot");
      const savedAt = performance.now();
      const saved = async () => (await readdir(bootDir).catch(() => [] as string[])).some((name) => !name.includes(".saving-") && existsSync(path.join(bootDir, name, "vm.json")));
      while (!(await saved())) {
        if (performance.now() - savedAt > 300_000) throw new Error("no boot snapshot was saved within 5 min");
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
      const fromBoot: number[] = [];
      for (let i = 0; i < RUNS; i++) {
        fromBoot.push(await createThenExec(bootAgent, `fromboot${i}`));
        await bootAgent.client.destroySandbox({ sandboxId: `fromboot${i}` });
      }
      const fromBootStats = summary(fromBoot);
      report.plainTemplateFromBootSnapshotToFirstCommand = { restored: fromBootStats, coldP50: oursStats.p50, speedupP50: +(oursStats.p50 / fromBootStats.p50).toFixed(2) };
      console.log(`[${accelerator}] CreateSandbox from a plain template once its boot snapshot is saved → first Exec: p50 ${fromBootStats.p50} ms, p95 ${fromBootStats.p95} ms — ${(oursStats.p50 / fromBootStats.p50).toFixed(2)}× faster than a cold boot (goal ≥ 5×)`);
    } finally {
      await terminateAgent(bootAgent);
    }

    const rss: Record<string, number> = {};
    const hibernation: Record<string, { hibernateMs: number; stateMiB: number; resumeToFirstCommandMs: number }> = {};
    for (const memoryMb of MEMORY_SIZES_MB) {
      const id = `idle${memoryMb}`;
      await createThenExec(agent, id, memoryMb);
      await new Promise((resolve) => setTimeout(resolve, 5000));
      rss[`${memoryMb}MiB`] = Math.round(await qemuRssMiB(id));
      // Hibernate (state to disk, process gone), then resume until a command's answer is back.
      let started = performance.now();
      await agent.client.pauseSandbox({ sandboxId: id, hibernate: true });
      const hibernateMs = Math.round(performance.now() - started);
      const stateMiB = Math.round((await stat(path.join(agent.dataDir, "sandboxes", id, "memory.state"))).size / 2 ** 20);
      started = performance.now();
      await agent.client.resumeSandbox({ sandboxId: id });
      const result = await agent.client.exec({ sandboxId: id, cmd: "/bin/echo", args: ["ready"] });
      const resumeToFirstCommandMs = Math.round(performance.now() - started);
      if (text(result.stdout).trim() !== "ready") throw new Error(`exec after resume printed ${JSON.stringify(text(result.stdout))}`);
      hibernation[`${memoryMb}MiB`] = { hibernateMs, stateMiB, resumeToFirstCommandMs };
      await agent.client.destroySandbox({ sandboxId: id });
    }
    report.idleVmRssMiB = rss;
    report.hibernation = hibernation;
    console.log(`[${accelerator}] host RSS of an idle VM (qemu process, 5 s after its first command), by guest memory: ${JSON.stringify(rss)}`);
    for (const [size, figures] of Object.entries(hibernation)) {
      console.log(`[${accelerator}] ${size} guest: hibernate ${figures.hibernateMs} ms (${figures.stateMiB} MiB state), resume → first command ${figures.resumeToFirstCommandMs} ms (cold boot → first command p50 ${oursStats.p50} ms: ${(oursStats.p50 / figures.resumeToFirstCommandMs).toFixed(1)}× slower)`);
    }
  } finally {
    await terminateAgent(agent);
  }
  console.log(JSON.stringify(report));
}

await main();
