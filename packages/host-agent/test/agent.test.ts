// The host agent end to end, over its RPC API, with real gVisor sandboxes: lifecycle, files,
// snapshots, bad input, isolation, limits, TTL, metrics, the port proxy and a crash-restart.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import http from "node:http";
import { copyFile, mkdir, mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test, type TestContext } from "node:test";
import { create } from "@bufbuild/protobuf";
import { WriteFileStreamRequestSchema } from "@wrenn/proto/hostagent";
import { runCommand } from "../src/exec/command.js";
import { mountsUnder } from "../src/sandbox/storage/rootfs.js";
import { Cleanup } from "../src/sandbox/cleanup.js";
import { createNetwork } from "../src/sandbox/network/namespace.js";
import { SlotAllocator } from "../src/sandbox/network/slots.js";
import { TEST_TEMPLATE, codeOf, envdDir, terminateAgent, skipAgent, startAgentProcess, text, type AgentUnderTest } from "./agent-harness.js";

const POOL = "10.220.0.0/26";

async function netnsOf(prefix: string): Promise<string[]> {
  const out = await runCommand("ip", ["-json", "netns", "list"], { timeoutMs: 5000 });
  return (out.trim() ? (JSON.parse(out) as { name: string }[]) : []).map((n) => n.name).filter((n) => n.startsWith(prefix));
}

/**
 * The `wrenn-*` namespaces of this file's agent, not of another test file's agent running beside
 * it: those whose host-side veth has an address in POOL, and those made since `sinceMs` that still
 * have no address a second later (a create that stopped before addressing; another agent's
 * network in the making is addressed within milliseconds).
 */
async function netnsInPool(sinceMs: number): Promise<string[]> {
  const pool = new SlotAllocator(POOL);
  const look = async () => {
    const out = await runCommand("ip", ["-json", "netns", "list"], { timeoutMs: 5000 });
    const namespaces = (out.trim() ? (JSON.parse(out) as { name: string; id?: number }[]) : []).filter((n) => n.name.startsWith("wrenn-"));
    const veths = JSON.parse((await runCommand("ip", ["-json", "addr", "show", "type", "veth"], { timeoutMs: 5000 })).trim() || "[]") as {
      link_netnsid?: number;
      addr_info?: { family: string; local: string }[];
    }[];
    const addresses = (id: number | undefined) =>
      id === undefined ? [] : veths.filter((v) => v.link_netnsid === id).flatMap((v) => (v.addr_info ?? []).filter((a) => a.family === "inet").map((a) => a.local));
    const ours: string[] = [];
    const addressless: string[] = [];
    for (const namespace of namespaces) {
      const local = addresses(namespace.id);
      if (local.some((address) => pool.contains(address))) ours.push(namespace.name);
      else if (local.length === 0) {
        const made = await stat(`/var/run/netns/${namespace.name}`).then((s) => s.mtimeMs, () => 0);
        if (made >= sinceMs) addressless.push(namespace.name);
      }
    }
    return { ours, addressless };
  };
  const first = await look();
  if (first.addressless.length === 0) return first.ours.sort();
  await sleep(1000);
  const second = await look();
  return [...second.ours, ...second.addressless.filter((name) => first.addressless.includes(name))].sort();
}

async function sh(agent: AgentUnderTest, sandboxId: string, script: string, timeoutSec = 30, user = "root") {
  const result = await agent.client.exec({ sandboxId, cmd: "/bin/sh", args: ["-c", script], timeoutSec, user });
  return { stdout: text(result.stdout), stderr: text(result.stderr), exitCode: result.exitCode };
}

/** Asserts nothing of `sandboxId` is left on the host: netns, runsc container, sandbox dir, mounts. */
/** Destroys these sandboxes when the test ends, however it ends (a no-op for those already gone). */
function destroyAfter(t: TestContext, agentRef: () => AgentUnderTest, ...sandboxIds: string[]): void {
  t.after(async () => {
    for (const sandboxId of sandboxIds) await agentRef().client.destroySandbox({ sandboxId }).catch(() => undefined);
  });
}

async function assertGone(agent: AgentUnderTest, sandboxId: string): Promise<void> {
  assert.deepEqual(await netnsOf(`wrenn-${sandboxId}`), [], "netns left behind");
  assert.ok(!existsSync(path.join(agent.dataDir, "sandboxes", sandboxId)), "sandbox dir left behind");
  assert.deepEqual(await mountsUnder(path.join(agent.dataDir, "sandboxes", sandboxId)), []);
  const containers = await runCommand("runsc", ["--root", path.join(agent.dataDir, "runsc"), "list", "--quiet"], { timeoutMs: 10_000 }).catch(() => "");
  assert.doesNotMatch(containers, new RegExp(`^${sandboxId}\\.sandbox$`, "m"), "runsc container left behind");
  const processes = await runCommand("ps", ["-eo", "args"], { timeoutMs: 5000 });
  assert.ok(!processes.includes(path.join(agent.dataDir, "sandboxes", sandboxId, "bundle")), "a runsc process outlived the sandbox");
  for (const controller of ["memory", "pids", "cpu"]) {
    assert.ok(!existsSync(`/sys/fs/cgroup/${controller}/wrenn/${sandboxId}`), `cgroup ${controller}/wrenn/${sandboxId} left behind`);
  }
  const rules = await runCommand("nft", ["list", "table", "inet", agent.table], { timeoutMs: 5000 });
  assert.doesNotMatch(rules, new RegExp(sandboxId), "firewall rules left behind");
}

describe("the host agent", { skip: skipAgent }, () => {
  let agent: AgentUnderTest;

  before(async () => {
    agent = await startAgentProcess({ pool: POOL, host: "0.0.0.0" });
  });

  after(async () => {
    if (!agent) return;
    await terminateAgent(agent);
  });

  test("reports the runtimes its start-up probe found", async () => {
    const info = await agent.client.getHostInfo({});
    const gvisor = info.runtimes.find((r) => r.name === "gvisor");
    assert.ok(gvisor?.available, `gvisor probe: ${gvisor?.detail}`);
    assert.match(gvisor.detail, /runsc version/);
    assert.equal(gvisor.memorySnapshots, false);
    assert.equal(info.defaultRuntime, "gvisor");
    // qemu: tested in qemu.test.ts (available where build/vm is built). Firecracker needs its
    // binary and a KVM that runs guests, neither of which this machine has: the probe says why.
    const firecracker = info.runtimes.find((r) => r.name === "firecracker");
    assert.ok(firecracker, "the firecracker driver is probed");
    assert.equal(firecracker.available, false);
    assert.match(firecracker.detail, /firecracker not usable|KVM runs no guests|\/dev\/kvm/);
    assert.equal(firecracker.memorySnapshots, true);
    assert.ok(info.runtimes.some((r) => r.name === "qemu"), "the qemu driver is probed too");
    assert.equal(info.slotsTotal, 16);
  });

  test("refuses calls without the host token", async () => {
    assert.equal(await codeOf(agent.anonymous.listSandboxes({})), "Unauthenticated");
  });

  test("create → exec → files → pause/resume → snapshot → create from the snapshot → destroy", async (t) => {
    destroyAfter(t, () => agent, "life1", "life2");
    const created = await agent.client.createSandbox({ sandboxId: "life1", template: TEST_TEMPLATE, envVars: { GREETING: "hi there" }, metadata: { owner: "test" } });
    assert.equal(created.status, "running");
    assert.equal(created.runtime, "gvisor");
    assert.match(created.envdVersion, /^\d+\.\d+\.\d+$/, "envd's version, for the control plane's envdVersion");
    assert.equal(created.fromWarmPool, false);
    assert.equal((await agent.client.getHostInfo({})).proxyPort, agent.proxyPort);
    assert.match(created.hostIp, /^10\.220\.0\.\d+$/);
    assert.equal((await sh(agent, "life1", "echo $GREETING; id -un", 30, "")).stdout, "hi there\nuser\n", "the default user is `user`");
    const failing = await sh(agent, "life1", "echo oops >&2; exit 3");
    assert.deepEqual(failing, { stdout: "", stderr: "oops\n", exitCode: 3 });

    await agent.client.writeFile({ sandboxId: "life1", path: "/home/user/notes/a.txt", content: Buffer.from("first") });
    assert.equal(text((await agent.client.readFile({ sandboxId: "life1", path: "/home/user/notes/a.txt" })).content), "first");
    assert.equal((await sh(agent, "life1", "stat -c %U /home/user/notes/a.txt")).stdout, "user\n");

    // Streaming both ways: 8 MiB in 64 KiB chunks.
    const chunk = Buffer.alloc(64 * 1024, 7);
    async function* upload() {
      yield create(WriteFileStreamRequestSchema, { content: { case: "meta", value: { sandboxId: "life1", path: "/home/user/big.bin" } } });
      for (let i = 0; i < 128; i++) yield create(WriteFileStreamRequestSchema, { content: { case: "chunk", value: chunk } });
    }
    const written = await agent.client.writeFileStream(upload());
    assert.equal(written.sizeBytes, BigInt(8 * 1024 * 1024));
    let downloaded = 0;
    for await (const piece of agent.client.readFileStream({ sandboxId: "life1", path: "/home/user/big.bin" })) downloaded += piece.chunk.length;
    assert.equal(downloaded, 8 * 1024 * 1024);

    const events: string[] = [];
    for await (const event of agent.client.execStream({ sandboxId: "life1", cmd: "/bin/sh", args: ["-c", "echo one; sleep 0.2; echo two >&2; exit 4"] })) {
      if (event.event.case === "start") events.push("start");
      if (event.event.case === "data") events.push(`${event.event.value.output.case}:${text(event.event.value.output.value as Uint8Array).trim()}`);
      if (event.event.case === "end") events.push(`end:${event.event.value.exitCode}`);
    }
    assert.deepEqual(events, ["start", "stdout:one", "stderr:two", "end:4"]);

    await agent.client.pauseSandbox({ sandboxId: "life1" });
    await agent.client.pauseSandbox({ sandboxId: "life1" }); // a no-op
    assert.equal((await agent.client.listSandboxes({})).sandboxes.find((s) => s.sandboxId === "life1")?.status, "paused");
    assert.equal(await codeOf(sh(agent, "life1", "true")), "FailedPrecondition");
    const resumed = await agent.client.resumeSandbox({ sandboxId: "life1", timeoutSec: 0 });
    assert.equal(resumed.status, "running");
    assert.equal((await sh(agent, "life1", "cat /home/user/notes/a.txt")).stdout, "first");

    await sh(agent, "life1", "rm /bin/vi; echo snap > /etc/snapshot-marker");
    const snapshot = await agent.client.createSnapshot({ sandboxId: "life1", name: "life1-snap", keepRunning: true });
    assert.equal(snapshot.includesMemory, false);
    assert.match(snapshot.note, /filesystem only/);
    assert.ok(snapshot.sizeBytes > 0n);
    const marker = await sh(agent, "life1", "cat /etc/snapshot-marker");
    assert.equal(marker.stdout, "snap\n", `the source keeps running: ${JSON.stringify(marker)}`);
    const templates = await agent.client.listTemplates({});
    assert.equal(templates.templates.find((t) => t.name === "life1-snap")?.parent, TEST_TEMPLATE);

    await agent.client.createSandbox({ sandboxId: "life2", template: "life1-snap" });
    assert.equal((await sh(agent, "life2", "cat /etc/snapshot-marker; cat /home/user/notes/a.txt; test -e /bin/vi || echo vi-gone")).stdout, "snap\nfirstvi-gone\n");
    assert.equal(await codeOf(agent.client.deleteSnapshot({ name: "life1-snap" })), "FailedPrecondition", "a template in use is deleted");
    assert.equal(await codeOf(agent.client.deleteSnapshot({ name: TEST_TEMPLATE })), "FailedPrecondition", "a parent template is deleted");

    await agent.client.destroySandbox({ sandboxId: "life2" });
    await agent.client.destroySandbox({ sandboxId: "life1" });
    await agent.client.deleteSnapshot({ name: "life1-snap" });
    assert.equal(await codeOf(agent.client.destroySandbox({ sandboxId: "life1" })), "NotFound");
    await assertGone(agent, "life1");
    await assertGone(agent, "life2");
  });

  test("a snapshot without keep_running consumes the sandbox, and flatten writes a standalone template", async (t) => {
    destroyAfter(t, () => agent, "flat1", "flat2");
    await agent.client.createSandbox({ sandboxId: "flat1", template: TEST_TEMPLATE });
    await sh(agent, "flat1", "echo flat > /root/flat.txt");
    await agent.client.flattenRootfs({ sandboxId: "flat1", name: "flat-image" });
    assert.equal(await codeOf(agent.client.exec({ sandboxId: "flat1", cmd: "true" })), "NotFound");
    await assertGone(agent, "flat1");
    const image = (await agent.client.listTemplates({})).templates.find((t) => t.name === "flat-image");
    assert.equal(image?.kind, "image");
    assert.equal(image?.parent, "");
    await agent.client.createSandbox({ sandboxId: "flat2", template: "flat-image" });
    assert.equal((await sh(agent, "flat2", "cat /root/flat.txt")).stdout, "flat\n");
    await agent.client.createSnapshot({ sandboxId: "flat2", name: "flat-snap" });
    assert.equal((await agent.client.listSandboxes({})).sandboxes.some((s) => s.sandboxId === "flat2"), false);
    await agent.client.deleteSnapshot({ name: "flat-snap" });
    await agent.client.deleteSnapshot({ name: "flat-image" });
    await assertGone(agent, "flat2");
  });

  test("bad input gets a clear code and leaves nothing half-made", async () => {
    const started = Date.now() - 1000;
    const before = await readdir(path.join(agent.dataDir, "sandboxes"));
    const cases: [string, () => Promise<unknown>, string][] = [
      ["unknown sandbox exec", () => agent.client.exec({ sandboxId: "nope", cmd: "true" }), "NotFound"],
      ["unknown sandbox pause", () => agent.client.pauseSandbox({ sandboxId: "nope" }), "NotFound"],
      ["unknown sandbox metrics", () => agent.client.getSandboxMetrics({ sandboxId: "nope", range: "10m" }), "NotFound"],
      ["unknown sandbox ping", () => agent.client.pingSandbox({ sandboxId: "nope" }), "NotFound"],
      ["unknown template", () => agent.client.createSandbox({ template: "no-such-template" }), "NotFound"],
      ["malformed template name", () => agent.client.createSandbox({ template: "../etc" }), "InvalidArgument"],
      ["malformed sandbox id", () => agent.client.createSandbox({ sandboxId: "bad id!", template: TEST_TEMPLATE }), "InvalidArgument"],
      ["negative memory", () => agent.client.createSandbox({ template: TEST_TEMPLATE, memoryMb: -5 }), "InvalidArgument"],
      ["absurd memory", () => agent.client.createSandbox({ template: TEST_TEMPLATE, memoryMb: 10_000_000 }), "InvalidArgument"],
      ["negative disk", () => agent.client.createSandbox({ template: TEST_TEMPLATE, diskSizeMb: -1 }), "InvalidArgument"],
      ["absurd disk", () => agent.client.createSandbox({ template: TEST_TEMPLATE, diskSizeMb: 2_000_000_000 }), "InvalidArgument"],
      ["too many vcpus", () => agent.client.createSandbox({ template: TEST_TEMPLATE, vcpus: 4096 }), "InvalidArgument"],
      ["negative timeout", () => agent.client.createSandbox({ template: TEST_TEMPLATE, timeoutSec: -1 }), "InvalidArgument"],
      ["bad egress rule", () => agent.client.createSandbox({ template: TEST_TEMPLATE, allowOut: ["not a cidr/99"] }), "InvalidArgument"],
      ["unknown runtime", () => agent.client.createSandbox({ template: TEST_TEMPLATE, runtime: "hyperv" }), "InvalidArgument"],
      ["bad metrics range", () => agent.client.getSandboxMetrics({ sandboxId: "nope", range: "1y" }), "NotFound"],
      ["snapshot name", () => agent.client.createSnapshot({ sandboxId: "nope", name: "Bad Name" }), "InvalidArgument"],
      ["delete unknown template", () => agent.client.deleteSnapshot({ name: "no-such-template" }), "NotFound"],
    ];
    for (const [name, call, code] of cases) assert.equal(await codeOf(call()), code, name);
    assert.deepEqual(await readdir(path.join(agent.dataDir, "sandboxes")), before, "a failed create left a sandbox dir");
    // Only this agent's namespaces: another test file's agent may be running beside this one.
    assert.deepEqual(await netnsInPool(started), (await agent.client.listSandboxes({})).sandboxes.map((s) => `wrenn-${s.sandboxId}`).sort());
  });

  test("a sandbox id is unique, even one that prefixes another, and paths resolve inside the sandbox's own root", async (t) => {
    destroyAfter(t, () => agent, "uniq1", "uniq11");
    // runsc looks containers up by id prefix: "uniq1" must still name exactly one of these.
    await Promise.all([agent.client.createSandbox({ sandboxId: "uniq1", template: TEST_TEMPLATE }), agent.client.createSandbox({ sandboxId: "uniq11", template: TEST_TEMPLATE })]);
    await agent.client.pauseSandbox({ sandboxId: "uniq1" });
    await agent.client.resumeSandbox({ sandboxId: "uniq1" });
    await agent.client.destroySandbox({ sandboxId: "uniq11" });
    assert.equal(await codeOf(agent.client.createSandbox({ sandboxId: "uniq1", template: TEST_TEMPLATE })), "AlreadyExists");
    const hosts = text((await agent.client.readFile({ sandboxId: "uniq1", path: "/../../../../etc/hosts" })).content);
    assert.match(hosts, /\tuniq1\n/, "read the host's /etc/hosts instead of the sandbox's");
    assert.equal(await codeOf(agent.client.readFile({ sandboxId: "uniq1", path: "/no/such/file" })), "NotFound");
    assert.equal(await codeOf(agent.client.readFile({ sandboxId: "uniq1", path: "" })), "InvalidArgument");
    assert.equal(await codeOf(agent.client.exec({ sandboxId: "uniq1", cmd: "/no/such/binary" })), "NotFound");
    await agent.client.destroySandbox({ sandboxId: "uniq1" });
  });

  test("concurrent lifecycle calls on one sandbox are serialized", async (t) => {
    destroyAfter(t, () => agent, "conc1");
    await agent.client.createSandbox({ sandboxId: "conc1", template: TEST_TEMPLATE });
    const calls = [];
    for (let i = 0; i < 6; i++) {
      calls.push(agent.client.pauseSandbox({ sandboxId: "conc1" }), agent.client.resumeSandbox({ sandboxId: "conc1" }));
    }
    await Promise.all(calls);
    assert.equal((await sh(agent, "conc1", "echo alive")).stdout, "alive\n");
    await Promise.all([agent.client.destroySandbox({ sandboxId: "conc1" }), codeOf(agent.client.destroySandbox({ sandboxId: "conc1" }))]);
    await assertGone(agent, "conc1");
  });

  test("a sandbox cannot see host processes, reach the agent's port or reach another sandbox", async (t) => {
    destroyAfter(t, () => agent, "iso-a", "iso-b");
    const [a, b] = await Promise.all([
      agent.client.createSandbox({ sandboxId: "iso-a", template: TEST_TEMPLATE }),
      agent.client.createSandbox({ sandboxId: "iso-b", template: TEST_TEMPLATE }),
    ]);
    const ps = await sh(agent, "iso-a", "ps -o pid,comm");
    assert.doesNotMatch(ps.stdout, /runsc|node|sshd|systemd/);
    const hostSide = a.hostIp.replace(/\.(\d+)$/, (_, last: string) => `.${Number(last) - 1}`);
    // The agent listens on 0.0.0.0 in this test: its port is open on the veth's host address.
    for (const [target, port] of [[hostSide, agent.port], [hostSide, agent.proxyPort], [b.hostIp, 49983]] as const) {
      const probe = await sh(agent, "iso-a", `nc -w 2 ${target} ${port} </dev/null && echo reached || echo blocked`);
      assert.equal(probe.stdout.trim(), "blocked", `sandbox reached ${target}:${port}`);
    }
    // The host itself still reaches both sandboxes' envd.
    for (const sandbox of [a, b]) assert.equal((await fetch(`http://${sandbox.hostIp}:49983/health`)).status, 204);
    await Promise.all([agent.client.destroySandbox({ sandboxId: "iso-a" }), agent.client.destroySandbox({ sandboxId: "iso-b" })]);
  });

  test("a full disk stays inside its quota", async (t) => {
    destroyAfter(t, () => agent, "disk1");
    await agent.client.createSandbox({ sandboxId: "disk1", template: TEST_TEMPLATE, diskSizeMb: 96 });
    const fill = await sh(agent, "disk1", "dd if=/dev/zero of=/root/fill bs=1M count=200 2>&1; echo exit=$?", 60);
    assert.match(fill.stdout, /No space left on device/);
    assert.match(fill.stdout, /exit=1/);
    const image = await stat(path.join(agent.dataDir, "sandboxes", "disk1", "disk.img"));
    assert.ok(image.size <= 96 * 1024 * 1024, `disk image is ${image.size} bytes`);
    assert.equal((await sh(agent, "disk1", "rm /root/fill && echo ok > /root/after && cat /root/after")).stdout, "ok\n");
    await agent.client.destroySandbox({ sandboxId: "disk1" });
  });

  test("a new sandbox's disk is sparse", async (t) => {
    destroyAfter(t, () => agent, "sparse1");
    await agent.client.createSandbox({ sandboxId: "sparse1", template: TEST_TEMPLATE });
    const image = await stat(path.join(agent.dataDir, "sandboxes", "sparse1", "disk.img"));
    assert.ok(image.blocks * 512 < 64 * 1024 * 1024, `a fresh 5 GiB disk uses ${image.blocks * 512} bytes`);
    await agent.client.destroySandbox({ sandboxId: "sparse1" });
  });

  test("a memory hog and a fork bomb take down only their own sandbox, which is reported and cleaned up", async (t) => {
    destroyAfter(t, () => agent, "hog", "bomb", "neighbour");
    await Promise.all([
      agent.client.createSandbox({ sandboxId: "hog", template: TEST_TEMPLATE, memoryMb: 256 }),
      agent.client.createSandbox({ sandboxId: "bomb", template: TEST_TEMPLATE, memoryMb: 256 }),
      agent.client.createSandbox({ sandboxId: "neighbour", template: TEST_TEMPLATE }),
    ]);
    await agent.client.exec({ sandboxId: "hog", cmd: "/bin/sh", args: ["-c", "dd if=/dev/zero of=/dev/null bs=400M count=1"], timeoutSec: 20 }).catch(() => undefined);
    void agent.client.exec({ sandboxId: "bomb", cmd: "/bin/sh", args: ["-c", "f(){ f | f & }; f"], timeoutSec: 5 }).catch(() => undefined);
    const exited = new Map<string, string>();
    const deadline = Date.now() + 60_000;
    while ((!exited.has("hog") || !exited.has("bomb")) && Date.now() < deadline) {
      for (const exit of (await agent.client.listSandboxes({})).exited) exited.set(exit.sandboxId, exit.reason);
      await sleep(250);
    }
    assert.match(exited.get("hog") ?? "", /out of memory/);
    assert.ok(exited.has("bomb"), "the fork bomb's sandbox was not stopped");
    assert.equal((await sh(agent, "neighbour", "echo fine")).stdout, "fine\n");
    await assertGone(agent, "hog");
    await assertGone(agent, "bomb");
    await agent.client.destroySandbox({ sandboxId: "neighbour" });
  });

  test("an idle sandbox is auto-paused after its timeout, and a ping keeps one running", async (t) => {
    destroyAfter(t, () => agent, "ttl1", "ttl2");
    await Promise.all([
      agent.client.createSandbox({ sandboxId: "ttl1", template: TEST_TEMPLATE }),
      agent.client.createSandbox({ sandboxId: "ttl2", template: TEST_TEMPLATE }),
    ]);
    // Timeouts start together only now: under load one create can finish seconds before the other.
    await agent.client.setSandboxTimeout({ sandboxId: "ttl2", timeoutSec: 3 });
    await agent.client.setSandboxTimeout({ sandboxId: "ttl1", timeoutSec: 3 });
    await agent.client.listSandboxes({}); // drain
    // 3 s of timeout, then the reaper (every 200 ms) and the pause itself: 8 s leaves room for a busy machine.
    const until = Date.now() + 8000;
    while (Date.now() < until) {
      await agent.client.pingSandbox({ sandboxId: "ttl2" });
      await sleep(500);
    }
    const listed = await agent.client.listSandboxes({});
    assert.deepEqual(listed.autoPausedSandboxIds, ["ttl1"]);
    assert.equal(listed.sandboxes.find((s) => s.sandboxId === "ttl1")?.status, "paused");
    assert.equal(listed.sandboxes.find((s) => s.sandboxId === "ttl2")?.status, "running");
    assert.deepEqual((await agent.client.listSandboxes({})).autoPausedSandboxIds, [], "drained on read");
    await agent.client.resumeSandbox({ sandboxId: "ttl1", timeoutSec: 0 });
    assert.equal((await sh(agent, "ttl1", "echo back")).stdout, "back\n");
    await Promise.all([agent.client.destroySandbox({ sandboxId: "ttl1" }), agent.client.destroySandbox({ sandboxId: "ttl2" })]);
  });

  test("metrics are sampled into tiers and flushed", async (t) => {
    destroyAfter(t, () => agent, "met1");
    await agent.client.createSandbox({ sandboxId: "met1", template: TEST_TEMPLATE });
    await sh(agent, "met1", "dd if=/dev/zero of=/root/ten bs=1M count=10 2>/dev/null; i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done");
    await sleep(2500); // samples every 500 ms; a few to spare for a busy machine
    const { points } = await agent.client.getSandboxMetrics({ sandboxId: "met1", range: "10m" });
    assert.ok(points.length >= 2, `only ${points.length} points`);
    const last = points.at(-1)!;
    assert.ok(last.memBytes > 0n && last.diskBytes >= 10n * 1024n * 1024n, JSON.stringify(last, (_, v) => (typeof v === "bigint" ? String(v) : v)));
    assert.ok(points.some((p) => p.cpuPct > 0));
    assert.equal(await codeOf(agent.client.getSandboxMetrics({ sandboxId: "met1", range: "1y" })), "InvalidArgument");
    const flushed = await agent.client.flushSandboxMetrics({ sandboxId: "met1" });
    assert.ok(flushed.points10m.length >= 2);
    assert.ok((await agent.client.getSandboxMetrics({ sandboxId: "met1", range: "10m" })).points.length <= 1, "flush did not clear");
    await agent.client.destroySandbox({ sandboxId: "met1" });
  });

  test("the port proxy forwards HTTP to a port a sandbox listens on", async (t) => {
    destroyAfter(t, () => agent, "web1");
    await agent.client.createSandbox({ sandboxId: "web1", template: TEST_TEMPLATE });
    await sh(agent, "web1", "mkdir -p /srv && echo served > /srv/index.html && (httpd -p 8080 -h /srv &)");
    // httpd listens a moment after the shell returns (longer on a loaded host): until then the proxy
    // rightly answers 502, so wait for the port rather than for a fixed time.
    const fetchIndex = () =>
      fetch(`http://127.0.0.1:${agent.proxyPort}/index.html`, {
        headers: { "x-wrenn-sandbox-id": "web1", "x-wrenn-sandbox-port": "8080", "x-wrenn-host-token": agent.token },
      });
    let viaHeaders = await fetchIndex();
    for (const deadline = Date.now() + 30_000; viaHeaders.status === 502 && Date.now() < deadline; viaHeaders = await fetchIndex()) {
      await viaHeaders.arrayBuffer();
      await sleep(100);
    }
    assert.equal(viaHeaders.status, 200);
    assert.equal(await viaHeaders.text(), "served\n");
    // fetch() may not set Host; http.request does, as a browser reaching {port}-{id}.{domain} would.
    const envdStatus = await new Promise<number | undefined>((resolve, reject) => {
      http.get({ host: "127.0.0.1", port: agent.proxyPort, path: "/health", headers: { host: "49983-web1.wrenn.local", "x-wrenn-host-token": agent.token } }, (res) => {
        res.resume();
        resolve(res.statusCode);
      }).on("error", reject);
    });
    assert.equal(envdStatus, 204);
    const noToken = await fetch(`http://127.0.0.1:${agent.proxyPort}/`, { headers: { "x-wrenn-sandbox-id": "web1", "x-wrenn-sandbox-port": "8080" } });
    assert.equal(noToken.status, 401);
    const closed = await fetch(`http://127.0.0.1:${agent.proxyPort}/`, { headers: { "x-wrenn-sandbox-id": "web1", "x-wrenn-sandbox-port": "9999", "x-wrenn-host-token": agent.token } });
    assert.equal(closed.status, 502);
    await agent.client.destroySandbox({ sandboxId: "web1" });
  });

  test("a crashed agent's successor takes its running sandboxes back and sweeps leftovers", async (t) => {
    destroyAfter(t, () => agent, "keep1", "keep2", "keep3");
    await agent.client.createSandbox({ sandboxId: "keep1", template: TEST_TEMPLATE, metadata: { k: "v" } });
    await agent.client.createSandbox({ sandboxId: "keep2", template: TEST_TEMPLATE });
    await agent.client.pauseSandbox({ sandboxId: "keep2" });
    await agent.kill();
    // A leftover the new agent cannot account for, as a crash between building a sandbox's
    // network and recording the sandbox leaves it: namespace, veth and address from the pool.
    const pool = new SlotAllocator(POOL);
    await createNetwork("orphan1", pool.total - 1, pool, new Cleanup());
    agent = await startAgentProcess({ pool: POOL, host: "0.0.0.0", dataDir: agent.dataDir });
    const listed = await agent.client.listSandboxes({});
    assert.deepEqual(listed.sandboxes.map((s) => [s.sandboxId, s.status]).sort(), [["keep1", "running"], ["keep2", "paused"]]);
    assert.deepEqual(listed.sandboxes.find((s) => s.sandboxId === "keep1")?.metadata, { k: "v" });
    assert.equal((await sh(agent, "keep1", "echo survived")).stdout, "survived\n");
    await agent.client.resumeSandbox({ sandboxId: "keep2" });
    assert.equal((await sh(agent, "keep2", "echo thawed")).stdout, "thawed\n");
    assert.deepEqual(await netnsOf("wrenn-orphan"), []);
    // New sandboxes do not get the survivors' addresses.
    const fresh = await agent.client.createSandbox({ sandboxId: "keep3", template: TEST_TEMPLATE });
    assert.ok(!listed.sandboxes.some((s) => s.hostIp === fresh.hostIp));
    await Promise.all(["keep1", "keep2", "keep3"].map((sandboxId) => agent.client.destroySandbox({ sandboxId })));
    for (const id of ["keep1", "keep2", "keep3"]) await assertGone(agent, id);
  });

  test("Terminate destroys every sandbox and stops the agent", async () => {
    await agent.client.createSandbox({ sandboxId: "term1", template: TEST_TEMPLATE });
    await agent.client.terminate({});
    await new Promise<void>((resolve) => (agent.child.exitCode !== null ? resolve() : agent.child.once("exit", () => resolve())));
    await assertGone(agent, "term1");
  });
});

describe("a host agent out of capacity", { skip: skipAgent }, () => {
  test("running out of addresses or memory is resource_exhausted and leaves nothing", async () => {
    const small = await startAgentProcess({ pool: "10.220.1.0/29" }); // two slots
    try {
      await small.client.createSandbox({ sandboxId: "cap1", template: TEST_TEMPLATE });
      await small.client.createSandbox({ sandboxId: "cap2", template: TEST_TEMPLATE });
      assert.equal(await codeOf(small.client.createSandbox({ sandboxId: "cap3", template: TEST_TEMPLATE })), "ResourceExhausted");
      assert.ok(!existsSync(path.join(small.dataDir, "sandboxes", "cap3")));
      await small.client.destroySandbox({ sandboxId: "cap2" });
      await small.client.createSandbox({ sandboxId: "cap3", template: TEST_TEMPLATE });
    } finally {
      await terminateAgent(small);
    }
    const greedy = await startAgentProcess({ pool: "10.220.2.0/29", args: ["--memory-reserve-mb", String(10_000_000)] });
    try {
      assert.equal(await codeOf(greedy.client.createSandbox({ sandboxId: "mem1", template: TEST_TEMPLATE })), "ResourceExhausted");
      assert.deepEqual(await readdir(path.join(greedy.dataDir, "sandboxes")), []);
    } finally {
      await terminateAgent(greedy);
    }
  });
});

describe("a sandbox whose envd cannot start", { skip: skipAgent }, () => {
  test("fails its create within seconds, not at the 30 s deadline, says why with the console's words, and leaves nothing", async () => {
    // A real envd directory whose start command names a program that is not there: tini (which the
    // gVisor probe runs) starts, cannot exec it, and the sandbox ends at once.
    const broken = await mkdtemp(path.join(tmpdir(), "wrenn-broken-envd-"));
    await mkdir(path.join(broken, "bin"));
    await copyFile(path.join(envdDir, "bin", "tini"), path.join(broken, "bin", "tini"));
    await writeFile(path.join(broken, "envd.argv"), "bin/no-such-envd\n");
    const agent = await startAgentProcess({ pool: "10.220.3.0/29", table: `wrenn_ab${process.pid}`, args: ["--envd-dir", broken] });
    try {
      const started = Date.now();
      const failure = await agent.client.createSandbox({ sandboxId: "noenvd", template: TEST_TEMPLATE }).then(
        () => assert.fail("a sandbox without envd was created"),
        (err: Error) => err,
      );
      assert.ok(Date.now() - started < 15_000, `the create failed after ${Date.now() - started} ms, as if it waited out the deadline`);
      assert.match(failure.message, /will never answer: the gvisor sandbox is (gone|stopped)/);
      assert.match(failure.message, /no-such-envd/, "the console's words are not in the error");
      assert.deepEqual((await agent.client.listSandboxes({})).sandboxes, []);
      await assertGone(agent, "noenvd");
    } finally {
      await terminateAgent(agent);
      await rm(broken, { recursive: true, force: true });
    }
  });
});
