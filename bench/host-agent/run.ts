// Benchmarks the host agent against the floor this machine gives in the same run: a bare
// `runsc run` of the same rootfs until a command's output comes back. Reports create→first exec
// (sequential and 10 at once), and the idle memory one sandbox costs the host, then how many
// idle sandboxes actually fit. Usage: `make bench-agent`, or
// `node --import tsx bench/host-agent/run.ts [--runs 30] [--concurrent 10] [--density 100]`.
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { runCommand } from "../../packages/host-agent/src/exec/command.js";
import { hostMemoryBytes, hostMemoryMb } from "../../packages/host-agent/src/host/memory.js";
import { ociSpec } from "../../packages/host-agent/src/sandbox/runtime/gvisor.js";
import { buildBusyboxTemplate } from "../../packages/host-agent/test/template.js";
import { TEST_TEMPLATE, envdDir, terminateAgent, startAgentProcess, text, waitForWarmPool, type AgentUnderTest } from "../../packages/host-agent/test/agent-harness.js";

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "30" },
    concurrent: { type: "string", default: "10" },
    density: { type: "string", default: "100" },
  },
});
const RUNS = Number(values.runs);
const CONCURRENT = Number(values.concurrent);
const DENSITY = Number(values.density);
const GOALS = { createToExecRatio: 1.5, idleSandboxesOn24GiB: 100 };

const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
const summary = (samples: number[]) => {
  const sorted = [...samples].sort((a, b) => a - b);
  return { p50: quantile(sorted, 0.5), p95: quantile(sorted, 0.95), n: samples.length };
};
const ms = (value: number) => `${value.toFixed(0)} ms`;

/** Bare runsc: the busybox rootfs, `echo ready` as the only program, no network; until its output is back. */
async function bareRunsc(templateDir: string, runs: number): Promise<number[]> {
  const work = await mkdtemp(path.join(tmpdir(), "wrenn-bench-runsc-"));
  const samples: number[] = [];
  try {
    for (let i = 0; i < runs; i++) {
      const id = `bench-floor-${process.pid}-${i}`;
      const bundle = path.join(work, id);
      await mkdir(bundle);
      const spec = ociSpec({ sandboxId: id, rootfsDir: templateDir, args: ["/bin/echo", "ready"], envdDir });
      await writeFile(path.join(bundle, "config.json"), JSON.stringify(spec));
      const started = performance.now();
      const out = await runCommand("runsc", ["--network=none", "--root", path.join(work, "state"), "run", "--bundle", bundle, id], { timeoutMs: 30_000 });
      samples.push(performance.now() - started);
      if (out.trim() !== "ready") throw new Error(`bare runsc printed ${JSON.stringify(out)}`);
      await runCommand("runsc", ["--root", path.join(work, "state"), "delete", "--force", id], { timeoutMs: 10_000 }).catch(() => undefined);
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return samples;
}

async function createThenExec(agent: AgentUnderTest, sandboxId: string, expectWarm = false): Promise<number> {
  const started = performance.now();
  const created = await agent.client.createSandbox({ sandboxId, template: TEST_TEMPLATE });
  const result = await agent.client.exec({ sandboxId, cmd: "/bin/echo", args: ["ready"] });
  const elapsed = performance.now() - started;
  if (text(result.stdout).trim() !== "ready") throw new Error(`exec printed ${JSON.stringify(text(result.stdout))}`);
  if (created.fromWarmPool !== expectWarm) throw new Error(`${sandboxId}: expected ${expectWarm ? "a pooled" : "a booted"} sandbox`);
  return elapsed;
}

const ratio = (a: number, b: number) => +(a / b).toFixed(2);

async function memAvailableMiB(): Promise<number> {
  return (await hostMemoryBytes()).availableBytes / 2 ** 20;
}

/** Memory charged to all sandboxes' cgroups together (the /wrenn parent), in MiB; undefined without v1 memory. */
async function sandboxCgroupsMiB(): Promise<number | undefined> {
  const usage = await readFile("/sys/fs/cgroup/memory/wrenn/memory.usage_in_bytes", "utf8").catch(() => undefined);
  return usage === undefined ? undefined : Number(usage) / 2 ** 20;
}

async function settle(): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, 3000));
}

async function main(): Promise<void> {
  const templateDir = await mkdtemp(path.join(tmpdir(), "wrenn-bench-template-"));
  await buildBusyboxTemplate(templateDir);
  const agentArgs = ["--metrics-interval-ms", "5000", "--reaper-interval-ms", "1000"];
  const agent = await startAgentProcess({ pool: "10.230.0.0/22", args: agentArgs });
  // A second agent keeps a warm pool: its creates hand out pre-booted sandboxes. Before each
  // measured create it is refilled, so no boot runs in the background of any measurement.
  const warmTarget = Math.max(1, CONCURRENT);
  let pooled: AgentUnderTest | undefined = await startAgentProcess({ pool: "10.231.0.0/24", table: `wrenn_bw${process.pid}`, args: [...agentArgs, "--warm-pool", `${TEST_TEMPLATE}=${warmTarget}`] });
  const refilled = () => waitForWarmPool(pooled!, TEST_TEMPLATE, warmTarget);
  const report: Record<string, unknown> = { host: { cpus: availableParallelism(), memTotalMiB: (await hostMemoryMb()).totalMb } };
  try {
    // Interleaved, so drift on a noisy machine hits both sides alike.
    await bareRunsc(templateDir, 2);
    await createThenExec(agent, "warmup").then(() => agent.client.destroySandbox({ sandboxId: "warmup" }));
    await refilled();
    await createThenExec(pooled, "warmup", true).then(() => pooled!.client.destroySandbox({ sandboxId: "warmup" }));
    const floor: number[] = [];
    const ours: number[] = [];
    const warm: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      floor.push(...(await bareRunsc(templateDir, 1)));
      ours.push(await createThenExec(agent, `seq${i}`));
      await agent.client.destroySandbox({ sandboxId: `seq${i}` });
      await refilled();
      warm.push(await createThenExec(pooled, `warm${i}`, true));
      await pooled.client.destroySandbox({ sandboxId: `warm${i}` });
    }
    const floorStats = summary(floor);
    const oursStats = summary(ours);
    const warmStats = summary(warm);
    report.sequential = {
      floor: floorStats,
      createToFirstExec: oursStats,
      ratioP50: ratio(oursStats.p50, floorStats.p50),
      ratioP95: ratio(oursStats.p95, floorStats.p95),
      warmPool: { createToFirstExec: warmStats, ratioP50: ratio(warmStats.p50, floorStats.p50), ratioP95: ratio(warmStats.p95, floorStats.p95) },
    };
    console.log(`bare runsc run → output: p50 ${ms(floorStats.p50)}, p95 ${ms(floorStats.p95)}`);
    console.log(`CreateSandbox (booting) → first Exec: p50 ${ms(oursStats.p50)}, p95 ${ms(oursStats.p95)} (${ratio(oursStats.p50, floorStats.p50)}× floor p50)`);
    console.log(`CreateSandbox (warm pool) → first Exec: p50 ${ms(warmStats.p50)}, p95 ${ms(warmStats.p95)} (${ratio(warmStats.p50, floorStats.p50)}× floor p50, goal ≤ ${GOALS.createToExecRatio}×)`);
    // Where a create's time goes, from the agent's own "sandbox created" log lines (p50 per phase).
    const phaseSamples = new Map<string, number[]>();
    for (const line of agent.log().split("\n")) {
      if (!line.includes('"sandbox created"') || !/"sandboxId":"seq\d+"/.test(line)) continue;
      for (const [name, value] of Object.entries((JSON.parse(line) as { phases: Record<string, number> }).phases)) {
        phaseSamples.set(name, [...(phaseSamples.get(name) ?? []), value]);
      }
    }
    const phases = Object.fromEntries([...phaseSamples].map(([name, values]) => [name, summary(values).p50]));
    report.createPhasesP50Ms = phases;
    console.log(`create phases (p50, ms): ${JSON.stringify(phases)}`);

    if (CONCURRENT > 0) {
      const wallStarted = performance.now();
      const concurrent = await Promise.all(Array.from({ length: CONCURRENT }, (_, i) => createThenExec(agent, `con${i}`)));
      const wall = performance.now() - wallStarted;
      await Promise.all(Array.from({ length: CONCURRENT }, (_, i) => agent.client.destroySandbox({ sandboxId: `con${i}` })));
      const concurrentStats = summary(concurrent);
      await refilled();
      const warmWallStarted = performance.now();
      const concurrentWarm = await Promise.all(Array.from({ length: CONCURRENT }, (_, i) => createThenExec(pooled!, `wcon${i}`, true)));
      const warmWall = performance.now() - warmWallStarted;
      await Promise.all(Array.from({ length: CONCURRENT }, (_, i) => pooled!.client.destroySandbox({ sandboxId: `wcon${i}` })));
      const concurrentWarmStats = summary(concurrentWarm);
      report.concurrent = {
        count: CONCURRENT,
        wallMs: Math.round(wall),
        createToFirstExec: concurrentStats,
        ratioP50ToFloor: ratio(concurrentStats.p50, floorStats.p50),
        warmPool: { wallMs: Math.round(warmWall), createToFirstExec: concurrentWarmStats, ratioP50ToFloor: ratio(concurrentWarmStats.p50, floorStats.p50) },
      };
      console.log(`${CONCURRENT} creates at once (booting): all done in ${ms(wall)}; each p50 ${ms(concurrentStats.p50)}, p95 ${ms(concurrentStats.p95)}`);
      console.log(`${CONCURRENT} creates at once (warm pool of ${warmTarget}): all done in ${ms(warmWall)}; each p50 ${ms(concurrentWarmStats.p50)}, p95 ${ms(concurrentWarmStats.p95)}`);
      // Gone before the density run, so its pooled sandboxes do not count against the other agent's.
      await terminateAgent(pooled);
      pooled = undefined;
    }

    if (DENSITY > 0) await density(agent, report);
  } finally {
    await terminateAgent(agent);
    if (pooled) await terminateAgent(pooled);
    await rm(templateDir, { recursive: true, force: true });
  }
  console.log(JSON.stringify(report));
}

/** Density: idle sandboxes, and the host memory they take (MemAvailable drop, after settling). */
async function density(agent: AgentUnderTest, report: Record<string, unknown>): Promise<void> {
  await settle();
  const before = await memAvailableMiB();
  const cgroupsBefore = await sandboxCgroupsMiB();
  let created = 0;
  let stoppedBy = "";
  for (; created < DENSITY; created++) {
    try {
      await agent.client.createSandbox({ sandboxId: `idle${created}`, template: TEST_TEMPLATE });
    } catch (err) {
      stoppedBy = (err as Error).message;
      break;
    }
  }
  await settle();
  const afterCreate = await memAvailableMiB();
  const perSandbox = (before - afterCreate) / Math.max(1, created);
  const cgroupsAfter = await sandboxCgroupsMiB();
  const cgroupPerSandbox = cgroupsBefore === undefined || cgroupsAfter === undefined ? undefined : (cgroupsAfter - cgroupsBefore) / Math.max(1, created);
  const probe = await agent.client.exec({ sandboxId: `idle${Math.max(0, created - 1)}`, cmd: "/bin/echo", args: ["still here"] });
  const fitsIn16 = Math.floor((16 * 1024) / perSandbox);
  const fitsIn24 = Math.floor((24 * 1024 - 1024) / perSandbox);
  console.log(`  charged to the sandboxes' cgroups (sentry, gofer, envd, page cache): ${cgroupPerSandbox?.toFixed(1) ?? "n/a"} MiB each`);
  report.density = { created, stoppedBy, memPerIdleSandboxMiB: +perSandbox.toFixed(1), cgroupMiBPerSandbox: cgroupPerSandbox === undefined ? null : +cgroupPerSandbox.toFixed(1), fitIn16GiB: fitsIn16, fitIn24GiBLeaving1GiB: fitsIn24, lastAnswers: text(probe.stdout).trim() === "still here" };
  console.log(`${created} idle sandboxes${stoppedBy ? ` (stopped: ${stoppedBy})` : ""}: ${perSandbox.toFixed(1)} MiB of host memory each (agent + runsc + envd); ~${fitsIn16} fit in 16 GiB, ~${fitsIn24} on a 24 GiB host (goal ≥ ${GOALS.idleSandboxesOn24GiB})`);
  const destroyStarted = performance.now();
  for (let i = 0; i < created; i++) await agent.client.destroySandbox({ sandboxId: `idle${i}` });
  report.destroyMsEach = Math.round((performance.now() - destroyStarted) / Math.max(1, created));
}

await main();
