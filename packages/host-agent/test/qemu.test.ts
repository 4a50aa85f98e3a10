// The qemu runtime end to end, through the host agent's RPC API: real microVMs (TCG here: this
// machine's KVM runs no guests), booted from the busybox test template. TCG is slow, so the VMs
// are few and shared between checks, and the two that run at once are booted together.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readdir, readFile, stat } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import { runCommand } from "../src/exec/command.js";
import { TEST_TEMPLATE, codeOf, terminateAgent, repoRoot, skipAgent, startAgentProcess, text, type AgentUnderTest } from "./agent-harness.js";
import { shAsRoot, vmLeftovers, type Vmm } from "./vm-harness.js";

const POOL = "10.219.0.0/27";
const vmDir = path.join(repoRoot, "build", "vm");
const skip = skipAgent || (!existsSync(path.join(vmDir, "guest.json")) ? "needs the VM guest (make vm-guest)" : false);

const QEMU: Vmm = {
  name: "qemu",
  stateFiles: (id) => [`${id}.qmp`, `${id}.json`],
  isProcessOf: (line, id) => line.includes("qemu-system") && line.includes(`wrenn-${id}`),
};

/**
 * The status of envd's /envs on a sandbox's address with `token`. Known, not yet understood: the
 * first connection from a new peer to a VM restored from memory is sometimes reset (seen 2 times
 * in 4 runs; the agent's client retries such a connection). Retried once here, and counted in
 * `resets`, so the token check itself stays exact.
 */
async function envdStatusWith(hostIp: string, token: string, resets: { count: number }): Promise<number | string> {
  for (let attempt = 0; ; attempt++) {
    try {
      return (await fetch(`http://${hostIp}:49983/envs`, { headers: { "x-access-token": token } })).status;
    } catch (err) {
      const cause = (err as Error & { cause?: NodeJS.ErrnoException }).cause;
      if (attempt > 0 || cause?.code !== "ECONNRESET") return `${(err as Error).message}: ${cause?.message}`;
      resets.count++;
    }
  }
}

describe("the qemu runtime (microVMs)", { skip }, () => {
  let agent: AgentUnderTest;

  before(async () => {
    // Boot snapshots off: each test here boots what it says; they have a test (and an agent) of their own below.
    agent = await startAgentProcess({ pool: POOL, table: `wrenn_qemu${process.pid}`, host: "0.0.0.0", args: ["--vm-boot-snapshots", "off"] });
  });

  after(async () => {
    if (!agent) return;
    await terminateAgent(agent);
  });

  test("the probe finds qemu and says which accelerator it uses; gvisor stays the default", async () => {
    const info = await agent.client.getHostInfo({});
    const qemu = info.runtimes.find((r) => r.name === "qemu");
    assert.ok(qemu?.available, `qemu probe: ${qemu?.detail}`);
    assert.match(qemu.detail, /QEMU emulator version .*; (kvm|tcg)/);
    assert.equal(qemu.memorySnapshots, true);
    assert.equal(info.defaultRuntime, "gvisor");
  });

  test("a VM sandbox boots, runs commands and files, is isolated, pauses and resumes, and leaves nothing behind", async (t) => {
    t.after(async () => {
      for (const sandboxId of ["vm-a", "vm-b"]) await agent.client.destroySandbox({ sandboxId }).catch(() => undefined);
    });
    const started = performance.now();
    const [a, b] = await Promise.all([
      agent.client.createSandbox({ sandboxId: "vm-a", template: TEST_TEMPLATE, runtime: "qemu", memoryMb: 256, diskSizeMb: 512, envVars: { GREETING: "hi from a VM" } }),
      agent.client.createSandbox({ sandboxId: "vm-b", template: TEST_TEMPLATE, runtime: "qemu", memoryMb: 256 }),
    ]);
    t.diagnostic(`two VMs booted at once in ${Math.round(performance.now() - started)} ms`);
    assert.equal(a.runtime, "qemu");
    assert.equal(a.status, "running");

    // A real kernel of its own: not the host's, not gVisor's.
    const kernel = await shAsRoot(agent, "vm-a", "uname -r; cat /proc/cmdline; hostname; echo $GREETING");
    const [release, cmdline, hostname, greeting] = kernel.stdout.split("\n");
    assert.match(release!, /cloud-amd64$/);
    assert.match(cmdline!, /wrenn\.ip=169\.254\.0\.21\/30/);
    assert.equal(hostname, "vm-a");
    assert.equal(greeting, "hi from a VM");
    assert.deepEqual(await shAsRoot(agent, "vm-a", "echo oops >&2; exit 3"), { stdout: "", stderr: "oops\n", exitCode: 3 });

    // The disk is the size asked for, and writes stay in the sandbox's own overlay.
    const df = await shAsRoot(agent, "vm-a", "df -m / | tail -1");
    const sizeMb = Number(df.stdout.trim().split(/\s+/)[1]);
    assert.ok(sizeMb > 400 && sizeMb <= 512, `root filesystem of ${sizeMb} MiB for a 512 MiB disk: ${df.stdout}`);
    await agent.client.writeFile({ sandboxId: "vm-a", path: "/home/user/notes/a.txt", content: Buffer.from("written in a VM") });
    assert.equal(text((await agent.client.readFile({ sandboxId: "vm-a", path: "/home/user/notes/a.txt" })).content), "written in a VM");
    assert.equal((await shAsRoot(agent, "vm-b", "cat /home/user/notes/a.txt 2>&1 || echo missing")).stdout.trim().split("\n").pop(), "missing");
    const image = path.join(agent.dataDir, "templates", TEST_TEMPLATE, "rootfs.ext4");
    const imageBefore = await stat(image);
    assert.ok(imageBefore.size > 0, "the template's image was made once and kept");

    // Isolation: the same fixed guest address in both, translated to each sandbox's own; neither
    // reaches the agent's port on the host nor the other sandbox; the host reaches both.
    assert.equal((await shAsRoot(agent, "vm-b", "ip -4 -o addr show eth0")).stdout.includes("169.254.0.21/30"), true);
    const hostSide = a.hostIp.replace(/\.(\d+)$/, (_, last: string) => `.${Number(last) - 1}`);
    for (const [target, port] of [[hostSide, agent.port], [b.hostIp, 49983]] as const) {
      const probe = await shAsRoot(agent, "vm-a", `nc -w 2 ${target} ${port} </dev/null && echo reached || echo blocked`);
      assert.equal(probe.stdout.trim(), "blocked", `a VM reached ${target}:${port}`);
    }
    for (const sandbox of [a, b]) assert.equal((await fetch(`http://${sandbox.hostIp}:49983/health`)).status, 204);

    // Pause is a real stop of the VM's CPUs: envd does not answer; resume brings the same processes back.
    const sleeper = (await shAsRoot(agent, "vm-a", "sleep 600 >/dev/null 2>&1 & echo $!")).stdout.trim();
    await agent.client.pauseSandbox({ sandboxId: "vm-a" });
    const whilePaused = await fetch(`http://${a.hostIp}:49983/health`, { signal: AbortSignal.timeout(1500) }).then((r) => `answered ${r.status}`, () => "no answer");
    assert.equal(whilePaused, "no answer");
    assert.equal(await codeOf(shAsRoot(agent, "vm-a", "true")), "FailedPrecondition");
    await agent.client.resumeSandbox({ sandboxId: "vm-a" });
    assert.equal((await shAsRoot(agent, "vm-a", `kill -0 ${sleeper} && echo alive`)).stdout.trim(), "alive");

    // Flattening (a gVisor sandbox's files into a template) is refused for a VM before anything is frozen.
    assert.equal(await codeOf(agent.client.flattenRootfs({ sandboxId: "vm-b", name: "vm-flat" })), "FailedPrecondition");
    assert.equal((await shAsRoot(agent, "vm-b", "echo still here")).stdout, "still here\n");

    // The console of each VM (kernel, init, envd) is kept as its log.
    const console = await readFile(path.join(agent.dataDir, "sandboxes", "vm-a", "bundle", "console.log"), "utf8");
    assert.match(console, /wrenn-init: starting envd on 169\.254\.0\.21:49983 as vm-a/);
    assert.match(console, /"msg":"envd listening"/);

    await Promise.all([agent.client.destroySandbox({ sandboxId: "vm-a" }), agent.client.destroySandbox({ sandboxId: "vm-b" })]);
    assert.deepEqual(await vmLeftovers(agent, "vm-a", QEMU), []);
    assert.deepEqual(await vmLeftovers(agent, "vm-b", QEMU), []);
    assert.equal((await stat(image)).mtimeMs, imageBefore.mtimeMs, "the template image was never written");
  });

  test("hibernate: memory to disk and the VM process gone; resume brings the same processes back, clock set", async (t) => {
    t.after(() => agent.client.destroySandbox({ sandboxId: "vm-h" }).catch(() => undefined));
    await agent.client.createSandbox({ sandboxId: "vm-h", template: TEST_TEMPLATE, runtime: "qemu", memoryMb: 256 });
    // A counter that keeps counting in memory and on disk, and a file written just before.
    const pid = (await shAsRoot(agent, "vm-h", "(i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done) >/dev/null 2>&1 & echo $!")).stdout.trim();
    await shAsRoot(agent, "vm-h", "echo kept > /root/before.txt; sync");
    const before = Number((await shAsRoot(agent, "vm-h", "sleep 1; cat /tmp/count")).stdout);
    assert.ok(before > 0);

    await agent.client.pauseSandbox({ sandboxId: "vm-h", hibernate: true });
    const listed = (await agent.client.listSandboxes({})).sandboxes.find((s) => s.sandboxId === "vm-h");
    assert.equal(listed?.status, "hibernated");
    const processes = await runCommand("ps", ["-eo", "args"], { timeoutMs: 5000 });
    assert.ok(!processes.split("\n").some((l) => l.includes("qemu-system") && l.includes("wrenn-vm-h ")), "no qemu process while hibernated");
    assert.ok(!existsSync("/sys/fs/cgroup/memory/wrenn/vm-h"), "its cgroup (memory, CPU) freed");
    const saved = await stat(path.join(agent.dataDir, "sandboxes", "vm-h", "memory.state"));
    t.diagnostic(`hibernated: ${Math.round(saved.size / 2 ** 20)} MiB of state on disk`);
    assert.equal(await codeOf(shAsRoot(agent, "vm-h", "true")), "FailedPrecondition");
    await new Promise((resolve) => setTimeout(resolve, 6000)); // the guest's clock stands still meanwhile

    const resumed = await agent.client.resumeSandbox({ sandboxId: "vm-h" });
    assert.equal(resumed.status, "running");
    const after = await shAsRoot(agent, "vm-h", `kill -0 ${pid} && echo alive; cat /root/before.txt; sleep 1; cat /tmp/count; date +%s`);
    const [alive, kept, count, guestNow] = after.stdout.trim().split("\n");
    assert.equal(alive, "alive", "the same process, same PID");
    assert.equal(kept, "kept");
    assert.ok(Number(count) > before, `the counter went on from ${before} (now ${count})`);
    assert.ok(Math.abs(Number(guestNow) - Date.now() / 1000) < 3, `the guest's clock was set to the host's (guest ${guestNow}, host ${Math.round(Date.now() / 1000)})`);
    assert.ok(!existsSync(path.join(agent.dataDir, "sandboxes", "vm-h", "memory.state")), "the state file goes once restored");

    // Hibernated, then destroyed: nothing left, state file included.
    await agent.client.pauseSandbox({ sandboxId: "vm-h", hibernate: true });
    await agent.client.destroySandbox({ sandboxId: "vm-h" });
    assert.deepEqual(await vmLeftovers(agent, "vm-h", QEMU), []);
  });

  test("a memory snapshot becomes a template: two sandboxes from it at once restore its processes", async (t) => {
    t.after(async () => {
      for (const sandboxId of ["vm-src", "vm-c1", "vm-c2"]) await agent.client.destroySandbox({ sandboxId }).catch(() => undefined);
      await agent.client.deleteSnapshot({ name: "vm-mem" }).catch(() => undefined);
    });
    let started = performance.now();
    await agent.client.createSandbox({ sandboxId: "vm-src", template: TEST_TEMPLATE, runtime: "qemu", memoryMb: 256, envdAccessToken: "source-token" });
    await shAsRoot(agent, "vm-src", "true");
    const coldMs = performance.now() - started;
    const pid = (await shAsRoot(agent, "vm-src", "(i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done) >/dev/null 2>&1 & echo $!")).stdout.trim();
    await shAsRoot(agent, "vm-src", "echo from-the-source > /root/mark.txt");

    const snapshot = await agent.client.createSnapshot({ sandboxId: "vm-src", name: "vm-mem", keepRunning: true });
    assert.equal(snapshot.includesMemory, true);
    assert.equal((await shAsRoot(agent, "vm-src", `kill -0 ${pid} && echo alive`)).stdout.trim(), "alive", "the source runs on");
    const templateDir = path.join(agent.dataDir, "templates", "vm-mem");
    assert.ok(existsSync(path.join(templateDir, "vm-state", "memory.state")) && existsSync(path.join(templateDir, "rootfs.ext4")));
    assert.equal(await readFile(path.join(templateDir, "rootfs", "root", "mark.txt"), "utf8"), "from-the-source\n", "its files too (gVisor boots them)");

    started = performance.now();
    const clones = await Promise.all(
      ["vm-c1", "vm-c2"].map(async (sandboxId) => {
        await agent.client.createSandbox({ sandboxId, template: "vm-mem", runtime: "qemu", envdAccessToken: `${sandboxId}-token` });
        // The guest reads its clock between these two host times (each copy's own: the two finish apart).
        const sent = Date.now() / 1000;
        const result = await shAsRoot(agent, sandboxId, `kill -0 ${pid} && echo alive; cat /root/mark.txt; date +%s; hostname`);
        return { sandboxId, sent, answered: Date.now() / 1000, ...result };
      }),
    );
    const restoreMs = performance.now() - started; // both at once; the speed is bench-qemu's figure
    t.diagnostic(`cold boot → first command ${Math.round(coldMs)} ms; two restores at once → first command ${Math.round(restoreMs)} ms`);
    for (const clone of clones) {
      const [alive, mark, now, hostname] = clone.stdout.trim().split("\n");
      assert.equal(alive, "alive", "the snapshot's process runs on in each copy, same PID");
      assert.equal(mark, "from-the-source");
      // `date +%s` truncates: a second's slack below, one above for the clocks' own difference.
      assert.ok(Number(now) >= Math.floor(clone.sent) - 1 && Number(now) <= clone.answered + 1, `the copy's clock is the host's (guest ${now}, host ${clone.sent.toFixed(1)}–${clone.answered.toFixed(1)})`);
      assert.equal(hostname, clone.sandboxId, "the copy's own hostname, not the source's");
    }
    // Each copy is its own: a write in one is not in the other, nor in the template.
    await shAsRoot(agent, "vm-c1", "echo only-c1 > /root/mark.txt");
    assert.equal((await shAsRoot(agent, "vm-c2", "cat /root/mark.txt")).stdout, "from-the-source\n");
    // The copy answers to its own token, not the source's.
    const c1 = (await agent.client.listSandboxes({})).sandboxes.find((s) => s.sandboxId === "vm-c1")!;
    const resets = { count: 0 };
    assert.equal(await envdStatusWith(c1.hostIp, "source-token", resets), 401);
    assert.equal(await envdStatusWith(c1.hostIp, "vm-c1-token", resets), 200);
    t.diagnostic(`connections reset on first contact: ${resets.count}`);

    // The template can not go while copies use it; then everything goes.
    assert.notEqual(await codeOf(agent.client.deleteSnapshot({ name: "vm-mem" })), "OK");
    for (const sandboxId of ["vm-src", "vm-c1", "vm-c2"]) await agent.client.destroySandbox({ sandboxId });
    await agent.client.deleteSnapshot({ name: "vm-mem" });
    for (const sandboxId of ["vm-src", "vm-c1", "vm-c2"]) assert.deepEqual(await vmLeftovers(agent, sandboxId, QEMU), []);
    assert.ok(!existsSync(templateDir));
  });

  test("a VM that dies while booting fails its create with the reason and leaves nothing", async () => {
    const create = codeOf(agent.client.createSandbox({ sandboxId: "vm-dies", template: TEST_TEMPLATE, runtime: "qemu", memoryMb: 256 }));
    let killed = false;
    for (let i = 0; i < 600 && !killed; i++) {
      const ps = await runCommand("ps", ["-eo", "pid,args"], { timeoutMs: 5000 });
      const line = ps.split("\n").find((l) => l.includes("qemu-system") && l.includes("wrenn-vm-dies"));
      if (line) {
        process.kill(Number(line.trim().split(/\s+/)[0]), "SIGKILL");
        killed = true;
      } else await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.ok(killed, "the VM's qemu process was never seen");
    assert.notEqual(await create, "OK");
    assert.deepEqual(await vmLeftovers(agent, "vm-dies", QEMU), []);
    assert.equal((await agent.client.listSandboxes({})).sandboxes.some((s) => s.sandboxId === "vm-dies"), false);
    // gVisor cannot hibernate: a clear refusal, and the sandbox runs on.
    await agent.client.createSandbox({ sandboxId: "gv-h", template: TEST_TEMPLATE });
    assert.equal(await codeOf(agent.client.pauseSandbox({ sandboxId: "gv-h", hibernate: true })), "InvalidArgument");
    assert.equal((await shAsRoot(agent, "gv-h", "echo on")).stdout, "on\n");
    await agent.client.destroySandbox({ sandboxId: "gv-h" });
    // Bad input is refused before anything is made.
    assert.equal(await codeOf(agent.client.createSandbox({ sandboxId: "vm-bad", template: TEST_TEMPLATE, runtime: "firecracker" })), "InvalidArgument");
    assert.equal(await codeOf(agent.client.createSandbox({ sandboxId: "vm-bad", template: "no-such-template", runtime: "qemu" })), "NotFound");
    assert.deepEqual(await vmLeftovers(agent, "vm-bad", QEMU), []);
  });
});

describe("a plain template's boot snapshot (qemu)", { skip }, () => {
  test("the first VM of a shape boots, its first boot is saved beside the template, and later ones restore it, each with its own name, token, env and disk", async (t) => {
    const agent = await startAgentProcess({ pool: "10.219.0.32/27", table: `wrenn_qboot${process.pid}`, host: "0.0.0.0", args: ["--vm-boot-snapshots", "on"] });
    const shape = { template: TEST_TEMPLATE, runtime: "qemu", memoryMb: 256, diskSizeMb: 512 };
    const ids = ["vm-first", "vm-r1", "vm-r2"];
    const bootDir = path.join(agent.dataDir, "templates", TEST_TEMPLATE, "vm-boot");
    const saved = async () => (await readdir(bootDir).catch(() => [] as string[])).filter((name) => !name.includes(".saving-") && existsSync(path.join(bootDir, name, "vm.json")));
    try {
      let started = performance.now();
      await agent.client.createSandbox({ sandboxId: "vm-first", ...shape });
      // Which boot a VM runs: the hostname its kernel was booted with (restored, it is the saved VM's).
      const bootedAs = "grep -o 'wrenn.hostname=[^ ]*' /proc/cmdline";
      assert.equal((await shAsRoot(agent, "vm-first", bootedAs)).stdout.trim(), "wrenn.hostname=vm-first");
      const coldMs = performance.now() - started;

      // Saved in the background from a VM of its own (booted after the first create answered).
      const deadline = Date.now() + 120_000;
      while ((await saved()).length === 0 && Date.now() < deadline) await sleep(250);
      const keys = await saved();
      assert.equal(keys.length, 1, `boot snapshots: ${keys.join(", ")}`);
      assert.match(keys[0]!, /^qemu-256m-1c-512d-[0-9a-f]{12}$/);
      const state = JSON.parse(await readFile(path.join(bootDir, keys[0]!, "vm.json"), "utf8")) as { envdAccessToken: string; sourceSandbox: string };
      assert.match(state.sourceSandbox, /^boot-/);
      assert.deepEqual(await vmLeftovers(agent, state.sourceSandbox, QEMU), [], "the VM it was saved from is gone");
      assert.deepEqual((await readdir(bootDir)).filter((name) => name.includes(".saving-")), []);

      started = performance.now();
      const clockWindows = new Map<string, [number, number]>();
      const restored = await Promise.all(
        ["vm-r1", "vm-r2"].map(async (sandboxId) => {
          await agent.client.createSandbox({ sandboxId, ...shape, envVars: { WHO: sandboxId }, envdAccessToken: `${sandboxId}-token` });
          // The host's time around its own command: the two restores finish seconds apart under TCG.
          const sent = Date.now() / 1000;
          const out = await shAsRoot(agent, sandboxId, `${bootedAs}; ` + 'hostname; cat /etc/hostname; grep -c "[[:space:]]$(hostname)$" /etc/hosts; echo "$WHO"; date +%s; df -m / | tail -1');
          clockWindows.set(sandboxId, [sent, Date.now() / 1000]);
          return out.stdout.trim().split("\n");
        }),
      );
      t.diagnostic(`cold boot → first command ${Math.round(coldMs)} ms; two restores of the boot snapshot at once → first command ${Math.round(performance.now() - started)} ms`);
      const [r1, r2] = restored as [string[], string[]];
      // Both woke from the one saved boot, not from a boot of their own.
      assert.equal(r1[0], `wrenn.hostname=${state.sourceSandbox}`);
      assert.equal(r2[0], `wrenn.hostname=${state.sourceSandbox}`);
      for (const [sandboxId, [, hostname, etcHostname, hostsLines, who, now, df]] of [["vm-r1", r1], ["vm-r2", r2]] as const) {
        assert.equal(hostname, sandboxId, "its own hostname, not the saved VM's");
        assert.equal(etcHostname, sandboxId);
        assert.equal(hostsLines, "1", "/etc/hosts names it");
        assert.equal(who, sandboxId, "its own env");
        const [sent, answered] = clockWindows.get(sandboxId)!;
        assert.ok(Number(now) > sent - 3 && Number(now) < answered + 3, `its clock is the host's (${now}, the command ran between ${sent} and ${answered})`);
        const sizeMb = Number(df!.split(/\s+/)[1]);
        assert.ok(sizeMb > 400 && sizeMb <= 512, `root filesystem of ${sizeMb} MiB for a 512 MiB disk`);
      }
      // Its own token: the saved VM's boot token opens nothing.
      const r1Ip = (await agent.client.listSandboxes({})).sandboxes.find((s) => s.sandboxId === "vm-r1")!.hostIp;
      const resets = { count: 0 };
      assert.equal(await envdStatusWith(r1Ip, state.envdAccessToken, resets), 401);
      assert.equal(await envdStatusWith(r1Ip, "vm-r1-token", resets), 200);
      t.diagnostic(`connections reset on first contact: ${resets.count}`);
      // Its own disk.
      await shAsRoot(agent, "vm-r1", "echo only-r1 > /root/mark.txt");
      assert.equal((await shAsRoot(agent, "vm-r2", "cat /root/mark.txt 2>/dev/null || echo none")).stdout, "none\n");

      // The boot snapshot goes with its template.
      for (const sandboxId of ids) await agent.client.destroySandbox({ sandboxId });
      await agent.client.deleteSnapshot({ name: TEST_TEMPLATE });
      assert.ok(!existsSync(path.dirname(bootDir)));
      for (const sandboxId of ids) assert.deepEqual(await vmLeftovers(agent, sandboxId, QEMU), []);
    } finally {
      for (const sandboxId of ids) await agent.client.destroySandbox({ sandboxId }).catch(() => undefined);
      await terminateAgent(agent);
    }
  });
});
