// The firecracker driver against Firecracker's published API specification
// (test/specs/firecracker.yaml). The real binary cannot run on the machines this project is built
// on (Debian has no package; their KVM runs no guest), so the driver runs as the agent runs it —
// its raw disk made, its TAP device and address translation in a real network namespace, nsenter,
// a real cgroup — against a stand-in for the binary (fake-firecracker.ts) that serves the API on
// the socket and records every request. Each recorded request must be an operation the spec has,
// with a body that validates against the spec's schema. What a real Firecracker and a real guest
// do with those requests is firecracker.test.ts's part, on a host that has them.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { chmod, mkdir, mkdtemp, open, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, test, type TestContext } from "node:test";
import { runCommand } from "../src/exec/command.js";
import { Cleanup } from "../src/sandbox/cleanup.js";
import type { BootRequest } from "../src/sandbox/runtime/driver.js";
import { FirecrackerApiError } from "../src/sandbox/runtime/firecracker-api.js";
import { FirecrackerRuntime, hibernationFilesOf, instanceId, kvmProbeConfig } from "../src/sandbox/runtime/firecracker.js";
import { GUEST_MAC, kernelCommandLine } from "../src/sandbox/runtime/qemu-guest.js";
import type { RecordedRequest, RecordedStart } from "./fake-firecracker.js";
import { FirecrackerSpec } from "./firecracker-spec.js";
import { commandRuns } from "./host-tools.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const DNS = ["192.0.2.53"];
/** Inside the test's own namespaces only: nothing is ever sent to it. */
const SANDBOX_ADDRESS = "192.0.2.2";

const spec = new FirecrackerSpec();

/** A script that runs the stand-in as `firecracker`, recording into `recordFile`. */
async function standIn(dir: string, name: string, recordFile: string, options: string[] = []): Promise<string> {
  const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
  const file = path.join(dir, name);
  const command = [process.execPath, "--import", import.meta.resolve("tsx"), path.join(here, "fake-firecracker.ts"), ...options, "--record", recordFile];
  // exec: the stand-in keeps the pid nsenter gave firecracker, as the real binary would.
  await writeFile(file, `#!/bin/sh\nexec ${command.map(quote).join(" ")} "$@"\n`);
  await chmod(file, 0o755);
  return file;
}

/** What the stand-in wrote: how each process started (`starts`), and every request, in order. */
function recorded(recordFile: string): { start: RecordedStart; starts: RecordedStart[]; requests: RecordedRequest[] } {
  const entries = readFileSync(recordFile, "utf8").trim().split("\n").map((line) => JSON.parse(line) as RecordedStart | RecordedRequest);
  const starts = entries.filter((e): e is RecordedStart => "argv" in e);
  return { start: starts[0]!, starts, requests: entries.filter((e): e is RecordedRequest => !("argv" in e)) };
}

/** Every recorded request checked against the spec and Firecracker's HTTP server: no problems. */
function contractProblems(requests: RecordedRequest[]): string[] {
  const problems: string[] = [];
  for (const request of requests) {
    problems.push(...spec.problems(request));
    if (request.raw === "") continue;
    if (request.contentType !== "application/json") problems.push(`${request.method} ${request.path}: Content-Type ${request.contentType}`);
    // Firecracker's HTTP server reads a body by its Content-Length and takes no chunked encoding.
    if (request.transferEncoding !== undefined) problems.push(`${request.method} ${request.path}: Transfer-Encoding ${request.transferEncoding}`);
    if (request.contentLength !== String(Buffer.byteLength(request.raw))) problems.push(`${request.method} ${request.path}: Content-Length ${request.contentLength} for ${Buffer.byteLength(request.raw)} bytes`);
  }
  return problems;
}

/** A guest build as guest.json describes it (the files' content does not matter to a stand-in). */
async function fakeGuest(vmDir: string): Promise<void> {
  await mkdir(vmDir, { recursive: true });
  for (const file of ["vmlinuz", "vmlinux", "initrd.img", "opt-wrenn.ext4"]) await writeFile(path.join(vmDir, file), `${file}\n`);
  await writeFile(path.join(vmDir, "guest.json"), JSON.stringify({ kernelVersion: "6.1.0-test", vmlinux: "vmlinux", inputsHash: "test", envdHash: "test" }));
}

/** A network namespace of the test's own, deleted after the test. */
async function namespace(t: TestContext, suffix: string): Promise<string> {
  const name = `wrenn-fctest-${process.pid}${suffix}`;
  await runCommand("ip", ["netns", "add", name], { timeoutMs: 5000 });
  t.after(() => runCommand("ip", ["netns", "delete", name], { timeoutMs: 5000 }).catch(() => undefined));
  return name;
}

async function cgroupOf(pid: number): Promise<string> {
  return readFile(`/proc/${pid}/cgroup`, "utf8");
}

async function netnsInode(name: string): Promise<string> {
  return `net:[${(await stat(`/var/run/netns/${name}`)).ino}]`;
}

describe("Firecracker's API specification as a validator", () => {
  test("it refuses what Firecracker refuses: wrong types, unknown fields, missing fields, bad enums, unknown operations", () => {
    assert.deepEqual(spec.problems({ method: "PUT", path: "/machine-config", body: { vcpu_count: 2, mem_size_mib: 512 } }), []);
    const wrong: [string, { method: string; path: string; body?: unknown }, RegExp][] = [
      ["a string for an integer", { method: "PUT", path: "/machine-config", body: { vcpu_count: 1, mem_size_mib: "512" } }, /mem_size_mib must be integer/],
      ["a misspelt field", { method: "PUT", path: "/machine-config", body: { vcpu_count: 1, mem_size_mib: 512, mem_size_mb: 512 } }, /additional properties \(mem_size_mb\)/],
      ["too many vCPUs", { method: "PUT", path: "/machine-config", body: { vcpu_count: 33, mem_size_mib: 512 } }, /vcpu_count must be <= 32/],
      ["no kernel", { method: "PUT", path: "/boot-source", body: { boot_args: "console=ttyS0" } }, /required property 'kernel_image_path'/],
      ["a state in the wrong case", { method: "PATCH", path: "/vm", body: { state: "paused" } }, /allowed values/],
      ["an unknown action", { method: "PUT", path: "/actions", body: { action_type: "Boot" } }, /allowed values/],
      ["a nested unknown field", { method: "PUT", path: "/drives/root", body: { drive_id: "root", is_root_device: true, rate_limiter: { bandwidth: { size: 1, refill_time: 1, burst: 1 } } } }, /additional properties \(burst\)/],
      ["a drive id unlike the path's", { method: "PUT", path: "/drives/root", body: { drive_id: "other", is_root_device: true } }, /is not the path's/],
      ["no body where one is required", { method: "PUT", path: "/entropy" }, /requires a body/],
      ["a method the path has not", { method: "GET", path: "/actions" }, /no GET on \/actions/],
      ["a path the API has not", { method: "PUT", path: "/machine", body: {} }, /no such path/],
    ];
    for (const [what, request, problem] of wrong) {
      const problems = spec.problems(request);
      assert.ok(problems.some((p) => problem.test(p)), `${what}: expected a problem like ${problem}, got ${JSON.stringify(problems)}`);
    }
  });

  test("the KVM probe's --config-file is a full VM configuration by the spec", () => {
    const config = kvmProbeConfig("/build/vm/vmlinux");
    assert.deepEqual(spec.definitionProblems("FullVmConfiguration", config), []);
    assert.deepEqual(spec.definitionProblems("FullVmConfiguration", { ...config, "machine-config": { vcpu_count: 1 } }).length > 0, true);
  });
});

describe("the firecracker driver's probe", () => {
  let work: string;
  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "wrenn-fcprobe-"));
    await fakeGuest(path.join(work, "vm"));
  });
  after(() => rm(work, { recursive: true, force: true }));

  test("a missing binary or one older than v1.8 makes it unavailable, and the detail says why", async () => {
    const missing = await new FirecrackerRuntime({ stateDir: path.join(work, "state"), vmDir: path.join(work, "vm"), dnsServers: DNS, firecracker: path.join(work, "no-such-firecracker") }).probe();
    assert.equal(missing.available, false);
    assert.match(missing.detail, /^firecracker not usable: .*ENOENT/);
    assert.equal(missing.memorySnapshots, true);
    const old = await standIn(work, "old-firecracker", path.join(work, "old.jsonl"), ["--version-says", "Firecracker v1.7.0"]);
    const tooOld = await new FirecrackerRuntime({ stateDir: path.join(work, "state"), vmDir: path.join(work, "vm"), dnsServers: DNS, firecracker: old }).probe();
    assert.equal(tooOld.available, false);
    assert.match(tooOld.detail, /Firecracker v1\.7\.0: needs v1\.8 or later/);
  });
});

const skip = process.getuid?.() !== 0
  ? "needs root: the driver makes a TAP device and nftables rules in a network namespace, and a cgroup, as the agent does"
  : !commandRuns("nft", ["--version"]) || !commandRuns("nsenter", ["--version"])
    ? "needs nft and nsenter (scripts/install-system-deps.sh)"
    : false;

describe("the firecracker driver against a stand-in Firecracker", { skip }, () => {
  let work: string;
  let vmDir: string;
  let templateImage: string;

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "wrenn-fccontract-"));
    vmDir = path.join(work, "vm");
    await fakeGuest(vmDir);
    // A sparse template image: 32 MiB with 1 MiB of data at its start.
    templateImage = path.join(work, "template.ext4");
    const image = await open(templateImage, "w");
    await image.write(Buffer.alloc(2 ** 20, 0x5a), 0, 2 ** 20, 0);
    await image.truncate(32 * 2 ** 20);
    await image.close();
  });

  after(() => rm(work, { recursive: true, force: true }));

  function driverWith(firecracker: string): FirecrackerRuntime {
    return new FirecrackerRuntime({ stateDir: path.join(work, "state"), vmDir, dnsServers: DNS, firecracker });
  }

  async function bootRequest(sandboxId: string, ns: string): Promise<BootRequest> {
    const sandboxDir = path.join(work, "sandboxes", sandboxId);
    await mkdir(sandboxDir, { recursive: true });
    return {
      sandboxId,
      sandboxDir,
      rootfs: { kind: "block", path: templateImage, disk: { path: path.join(sandboxDir, "root.img"), sizeMb: 64 } },
      netnsPath: `/var/run/netns/${ns}`,
      sandboxAddress: SANDBOX_ADDRESS,
      hostname: sandboxId,
      vcpus: 0.5,
      memoryMb: 256,
      envdBootToken: "contract-token",
    };
  }

  /** What the driver leaves of a sandbox on the host: nothing once it is stopped. */
  async function leftovers(sandboxId: string, pid: number): Promise<string[]> {
    const left: string[] = [];
    for (const file of [`${sandboxId}.json`, `${sandboxId}.sock`]) if (existsSync(path.join(work, "state", file))) left.push(`state/${file}`);
    if (existsSync(`/proc/${pid}`)) left.push(`process ${pid}`);
    for (const dir of [`/sys/fs/cgroup/wrenn/${sandboxId}`, ...["memory", "pids", "cpu"].map((c) => `/sys/fs/cgroup/${c}/wrenn/${sandboxId}`)]) if (existsSync(dir)) left.push(dir);
    return left;
  }

  test("boot, pause, snapshot, resume and stop send only requests the spec allows, in the order Firecracker takes them", async (t) => {
    const ns = await namespace(t, "");
    const recordFile = path.join(work, "boot.jsonl");
    const driver = driverWith(await standIn(work, "firecracker", recordFile));
    const sandboxId = `fc_contract-${process.pid}`; // '_' is not allowed in Firecracker's --id
    const request = await bootRequest(sandboxId, ns);
    const cleanup = new Cleanup();
    t.after(() => cleanup.run());
    const templateBefore = await stat(templateImage);

    await driver.boot(request, cleanup);
    const { start } = recorded(recordFile);
    const socket = path.join(work, "state", `${sandboxId}.sock`);
    assert.deepEqual(start.argv, ["--api-sock", socket, "--id", instanceId(sandboxId)]);
    assert.equal(instanceId(sandboxId), `fc-contract-${process.pid}`);
    // Firecracker runs inside the sandbox's namespace, beside the TAP device made for it, and in the sandbox's cgroup.
    assert.equal(start.netns, await netnsInode(ns));
    assert.match(await runCommand("ip", ["-n", ns, "-o", "link", "show", "tap0"], { timeoutMs: 5000 }), /tap0/);
    assert.match(await runCommand("nsenter", [`--net=/var/run/netns/${ns}`, "--", "nft", "list", "table", "ip", "wrenn_vm"], { timeoutMs: 5000 }), /dnat to 169\.254\.0\.21/);
    assert.match(await cgroupOf(start.pid), new RegExp(`/wrenn/${sandboxId}$`, "m"));
    assert.deepEqual(await driver.list(), [{ id: sandboxId, status: "running" }]);

    // The disk: raw, as large as asked, holding the template's data, sparse; the template untouched.
    const disk = await stat(request.rootfs.disk!.path);
    assert.equal(disk.size, 64 * 2 ** 20);
    assert.ok(disk.blocks * 512 <= 2 * 2 ** 20, `the disk allocates ${disk.blocks * 512} bytes for 1 MiB of data`);
    assert.deepEqual((await readFile(request.rootfs.disk!.path)).subarray(0, 2 ** 20), Buffer.alloc(2 ** 20, 0x5a));
    assert.equal((await stat(templateImage)).mtimeMs, templateBefore.mtimeMs);

    await driver.pause(sandboxId);
    assert.deepEqual(await driver.list(), [{ id: sandboxId, status: "paused" }]);
    const files = { snapshotPath: path.join(work, "vm.state"), memFilePath: path.join(work, "vm.mem") };
    await driver.snapshotCreate(sandboxId, files);
    assert.ok(existsSync(files.snapshotPath) && existsSync(files.memFilePath));
    await driver.resume(sandboxId);
    assert.deepEqual(await driver.list(), [{ id: sandboxId, status: "running" }]);
    // A Firecracker whose API does not answer (busy, here stopped by a signal) lives all the same:
    // the reaper must never take a busy VM for a dead one.
    process.kill(start.pid, "SIGSTOP");
    try {
      assert.deepEqual(await driver.list(), [{ id: sandboxId, status: "running" }]);
    } finally {
      process.kill(start.pid, "SIGCONT");
    }
    // Firecracker's refusal reaches the caller with its status and fault message.
    await assert.rejects(driver.snapshotCreate(sandboxId, files), (err: FirecrackerApiError) => err instanceof FirecrackerApiError && err.status === 400 && /must be paused/.test(err.message));

    await driver.stop(sandboxId);
    assert.deepEqual(await leftovers(sandboxId, start.pid), []);
    assert.deepEqual(await driver.list(), []);

    const { requests } = recorded(recordFile);
    assert.deepEqual(contractProblems(requests), []);
    t.diagnostic(`operations sent: ${[...new Set(requests.map((r) => spec.operationOf(r)))].join(", ")} (spec ${spec.version})`);
    const changes = requests.filter((r) => r.method !== "GET");
    const kernel = path.join(vmDir, "vmlinux");
    assert.deepEqual(
      changes.map((r) => [r.method, r.path, r.body, r.status]),
      [
        ["PUT", "/machine-config", { vcpu_count: 1, mem_size_mib: 256, smt: false }, 204],
        ["PUT", "/boot-source", { kernel_image_path: kernel, initrd_path: path.join(vmDir, "initrd.img"), boot_args: kernelCommandLine({ hostname: sandboxId, dnsServers: DNS, envdBootToken: "contract-token" }) }, 204],
        ["PUT", "/drives/root", { drive_id: "root", path_on_host: request.rootfs.disk!.path, is_root_device: true, is_read_only: false, cache_type: "Writeback" }, 204],
        ["PUT", "/drives/envd", { drive_id: "envd", path_on_host: path.join(vmDir, "opt-wrenn.ext4"), is_root_device: false, is_read_only: true }, 204],
        ["PUT", "/network-interfaces/eth0", { iface_id: "eth0", host_dev_name: "tap0", guest_mac: GUEST_MAC }, 204],
        ["PUT", "/entropy", {}, 204],
        ["PUT", "/actions", { action_type: "InstanceStart" }, 204],
        ["PATCH", "/vm", { state: "Paused" }, 204],
        ["PUT", "/snapshot/create", { snapshot_type: "Full", snapshot_path: files.snapshotPath, mem_file_path: files.memFilePath }, 204],
        ["PATCH", "/vm", { state: "Resumed" }, 204],
        ["PUT", "/snapshot/create", { snapshot_type: "Full", snapshot_path: files.snapshotPath, mem_file_path: files.memFilePath }, 400],
      ],
    );
    // What the driver read back (GET /) is an InstanceInfo by the spec too: the stand-in answers as Firecracker would.
    assert.deepEqual(spec.definitionProblems("InstanceInfo", { app_name: "Firecracker", id: instanceId(sandboxId), state: "Running", vmm_version: "1.17.0-dev" }), []);
  });

  test("a snapshot loads into a fresh Firecracker with one request the spec allows, and runs, again in the same namespace", async (t) => {
    const ns = await namespace(t, "-load");
    const recordFile = path.join(work, "load.jsonl");
    const driver = driverWith(await standIn(work, "firecracker-load", recordFile));
    const sandboxId = `fc-load-${process.pid}`;
    const sandboxDir = path.join(work, "sandboxes", sandboxId);
    await mkdir(sandboxDir, { recursive: true });
    const files = { snapshotPath: path.join(sandboxDir, "vm.state"), memFilePath: path.join(sandboxDir, "vm.mem") };
    const cleanup = new Cleanup();
    t.after(() => cleanup.run());

    const load = { sandboxId, sandboxDir, netnsPath: `/var/run/netns/${ns}`, sandboxAddress: SANDBOX_ADDRESS, vcpus: 1, memoryMb: 256, ...files };
    await driver.snapshotLoad({ ...load, resume: true }, cleanup);
    assert.deepEqual(await driver.list(), [{ id: sandboxId, status: "running" }]);
    await cleanup.run();
    // Where a VM ran before (hibernated, then restored), the TAP device is there already.
    await driver.snapshotLoad({ ...load, resume: false }, cleanup);
    assert.deepEqual(await driver.list(), [{ id: sandboxId, status: "paused" }]);
    await cleanup.run();
    const { starts, requests } = recorded(recordFile);
    assert.equal(starts.length, 2);
    for (const start of starts) assert.deepEqual(await leftovers(sandboxId, start.pid), []);
    assert.deepEqual(contractProblems(requests), []);
    const loadBody = (resume: boolean) => ({ snapshot_path: files.snapshotPath, mem_backend: { backend_type: "File", backend_path: files.memFilePath }, resume_vm: resume });
    assert.deepEqual(
      requests.filter((r) => r.method !== "GET").map((r) => [r.method, r.path, r.body, r.status]),
      [
        ["PUT", "/snapshot/load", loadBody(true), 204],
        ["PUT", "/snapshot/load", loadBody(false), 204],
      ],
    );
  });

  test("hibernate snapshots the VM beside its disk and ends Firecracker; restore loads it into a fresh one, running; a failed restore stays hibernated", async (t) => {
    const ns = await namespace(t, "-hib");
    const recordFile = path.join(work, "hibernate.jsonl");
    const driver = driverWith(await standIn(work, "firecracker-hib", recordFile));
    const sandboxId = `fc-hib-${process.pid}`;
    const request = await bootRequest(sandboxId, ns);
    const files = hibernationFilesOf(request.sandboxDir);
    const cleanup = new Cleanup();
    t.after(() => cleanup.run());
    await driver.boot(request, cleanup);
    const booted = recorded(recordFile).start;

    await driver.hibernate(sandboxId);
    assert.deepEqual(await driver.list(), [{ id: sandboxId, status: "hibernated" }]);
    assert.ok(existsSync(files.snapshotPath) && existsSync(files.memFilePath), "the snapshot is beside the disk");
    assert.ok(existsSync(request.rootfs.disk!.path), "the disk stays");
    assert.deepEqual(await leftovers(sandboxId, booted.pid), ["state/" + `${sandboxId}.json`], "only its record is left: no process, cgroup or socket");

    // A Firecracker that dies at start: the restore fails, the sandbox stays hibernated, its snapshot kept.
    const failing = driverWith(await standIn(work, "firecracker-hib-dies", path.join(work, "hibernate-dies.jsonl"), ["--exit-at-start"]));
    await assert.rejects(failing.restore(sandboxId), /firecracker exited with 1 before its API answered/);
    assert.deepEqual(await driver.list(), [{ id: sandboxId, status: "hibernated" }]);
    assert.ok(existsSync(files.snapshotPath) && existsSync(files.memFilePath), "a failed restore kept the snapshot");

    await driver.restore(sandboxId);
    assert.deepEqual(await driver.list(), [{ id: sandboxId, status: "running" }]);
    assert.ok(!existsSync(files.snapshotPath) && !existsSync(files.memFilePath), "the snapshot is removed once loaded");
    const { starts, requests } = recorded(recordFile);
    assert.equal(starts.length, 2);
    assert.equal(starts[1]!.netns, await netnsInode(ns), "restored in the sandbox's own namespace (its TAP is there)");
    assert.match(await cgroupOf(starts[1]!.pid), new RegExp(`/wrenn/${sandboxId}$`, "m"));
    assert.deepEqual(contractProblems(requests), []);
    const snapshotBody = { snapshot_type: "Full", snapshot_path: files.snapshotPath, mem_file_path: files.memFilePath };
    const loadBody = { snapshot_path: files.snapshotPath, mem_backend: { backend_type: "File", backend_path: files.memFilePath }, resume_vm: true };
    assert.deepEqual(
      requests.filter((r) => r.path === "/vm" || r.path.startsWith("/snapshot")).map((r) => [r.method, r.path, r.body, r.status]),
      [
        ["PATCH", "/vm", { state: "Paused" }, 204],
        ["PUT", "/snapshot/create", snapshotBody, 204],
        ["PUT", "/snapshot/load", loadBody, 204],
      ],
    );

    await driver.stop(sandboxId);
    for (const start of starts) assert.deepEqual(await leftovers(sandboxId, start.pid), []);
    assert.ok(!existsSync(files.snapshotPath) && !existsSync(files.memFilePath));
  });

  test("a Firecracker that exits before its API answers fails the boot with its console, and the undo leaves nothing", async (t) => {
    const ns = await namespace(t, "-dies");
    const recordFile = path.join(work, "dies.jsonl");
    const driver = driverWith(await standIn(work, "firecracker-dies", recordFile, ["--exit-at-start"]));
    const sandboxId = `fc-dies-${process.pid}`;
    const request = await bootRequest(sandboxId, ns);
    const cleanup = new Cleanup();
    await assert.rejects(cleanup.undoOnFailure(() => driver.boot(request, cleanup)), /firecracker exited with 1 before its API answered: .*exiting at start, as asked/);
    const { start, requests } = recorded(recordFile);
    assert.deepEqual(requests, []);
    assert.deepEqual(await leftovers(sandboxId, start.pid), []);
    assert.equal(existsSync(request.rootfs.disk!.path), false, "the disk was removed");
  });
});
