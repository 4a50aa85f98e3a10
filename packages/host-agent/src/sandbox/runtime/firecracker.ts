// The firecracker driver: one Firecracker microVM per sandbox, configured over its HTTP API on a
// Unix socket (firecracker-api.ts). Hardware virtualization only: it is offered where a probe
// shows KVM runs guests and a `firecracker` binary is on PATH, and is then the default runtime.
//
// The guest is the qemu driver's (scripts/build-vm-guest.sh, qemu-guest.ts): the same kernel
// (uncompressed: Firecracker on x86_64 loads an ELF `vmlinux`, not a bzImage), initramfs, kernel
// command line, envd disk, fixed guest address and MAC, and the same TAP device and address
// translation in the sandbox's netns (addGuestLink). Firecracker reads only raw disks, so the
// sandbox's disk is a sparse copy of the template image (a reflink where the filesystem can).
// See docs/host-agent-firecracker.md.
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { runCommand } from "../../exec/command.js";
import { logger } from "../../logging/logger.js";
import { Cleanup } from "../cleanup.js";
import { cgroupDirs, killCgroup, placeInCgroup } from "./cgroup-tree.js";
import type { BootRequest, RuntimeDriver, RuntimeProbe, RuntimeSandbox } from "./driver.js";
import { FirecrackerClient, type VmConfigFile } from "./firecracker-api.js";
import { kvmDeviceProblem, kvmRunsGuests } from "./kvm-probe.js";
import { addGuestLink, consoleLogOf, TAP_DEVICE } from "./qemu.js";
import { GUEST_MAC, guestArtifacts, kernelCommandLine, type GuestArtifacts } from "./qemu-guest.js";
import { consoleTail, isRunning, spawnVmm, startTicks, VmRecords, vmExitReason, waitUntilGone, type VmProcess } from "./vm-process.js";

const FIRECRACKER = "firecracker";
const CONTROL_TIMEOUT_MS = 10_000;
/** Until the API answers after firecracker is started. */
const START_TIMEOUT_MS = 15_000;
/** A copy of the template image on a filesystem without reflinks copies every written block. */
const DISK_COPY_TIMEOUT_MS = 10 * 60_000;
/** Host memory a VM needs besides its guest's RAM: Firecracker itself takes a few MiB. */
const VMM_OVERHEAD_MB = 64;
/** Where the KVM probe's verdict is kept until the host reboots. */
const KVM_PROBE_CACHE = "/run/wrenn/firecracker-kvm-probe.json";
/**
 * The first release whose x86_64 VMs describe their virtio-mmio devices in ACPI tables. The
 * guest loads virtio_mmio as a module (insmod, which ignores the `virtio_mmio.device=` options
 * older releases put on the kernel command line), so it finds its disks only through ACPI.
 */
const MIN_VERSION = [1, 8] as const;
/** The drive and interface ids the guest's devices are made from; `root` is vda, `envd` vdb. */
const ROOT_DRIVE = "root";
const ENVD_DRIVE = "envd";
const GUEST_INTERFACE = "eth0";

export interface FirecrackerConfig {
  /** The driver's own records: one `<id>.json` and `<id>.sock` (the API socket) per sandbox. */
  stateDir: string;
  /** build/vm: kernel, initramfs, envd's image (scripts/build-vm-guest.sh). */
  vmDir: string;
  dnsServers: string[];
  /** The firecracker binary; default `firecracker` on PATH. */
  firecracker?: string;
}

/** What the driver keeps per sandbox, to find its VM again after an agent restart (and to start it again from a hibernation). */
interface VmRecord extends VmProcess {
  sandboxDir: string;
  placement?: VmPlacement;
  /** Its VM state and memory are in `hibernationFilesOf(sandboxDir)` and no process runs. */
  hibernated?: boolean;
}

/** Where and how big a sandbox's VM is, for starting a Firecracker process for it. */
export interface VmPlacement {
  sandboxId: string;
  sandboxDir: string;
  /** The sandbox's network namespace (its TAP device is made there). */
  netnsPath: string;
  sandboxAddress: string;
  vcpus: number;
  memoryMb: number;
}

export interface SnapshotFiles {
  /** The VM's device and vCPU state. */
  snapshotPath: string;
  /** Its memory (as large as the guest's RAM, sparse where never touched). */
  memFilePath: string;
}

export class FirecrackerRuntime implements RuntimeDriver {
  readonly name = "firecracker" as const;
  readonly rootfsKind = "block" as const;
  readonly memorySnapshots = true;
  private readonly firecracker: string;
  private guest: GuestArtifacts | undefined;

  private readonly records: VmRecords<VmRecord>;

  constructor(private readonly config: FirecrackerConfig) {
    this.records = new VmRecords(config.stateDir);
    this.firecracker = config.firecracker ?? FIRECRACKER;
  }

  /**
   * Available when firecracker runs (and is recent enough), /dev/kvm opens read-write, the guest
   * is built with its uncompressed kernel, and a kernel booted under Firecracker reaches its panic
   * within a few seconds (a host whose KVM runs no guest, as here, hangs instead).
   */
  async probe(): Promise<RuntimeProbe> {
    const result = { name: this.name, memorySnapshots: this.memorySnapshots };
    const unavailable = (detail: string): RuntimeProbe => ({ ...result, available: false, detail });
    let version: string;
    try {
      version = (await runCommand(this.firecracker, ["--version"], { timeoutMs: CONTROL_TIMEOUT_MS })).trim().split("\n")[0] ?? "";
    } catch (err) {
      return unavailable(`firecracker not usable: ${(err as Error).message}`);
    }
    const release = /v?(\d+)\.(\d+)\.\d+/.exec(version);
    if (!release || Number(release[1]) < MIN_VERSION[0] || (Number(release[1]) === MIN_VERSION[0] && Number(release[2]) < MIN_VERSION[1])) {
      return unavailable(`${version || "firecracker"}: needs v${MIN_VERSION.join(".")} or later (ACPI tables for the guest's virtio-mmio devices)`);
    }
    const kvmProblem = await kvmDeviceProblem();
    if (kvmProblem) return unavailable(`${version}; ${kvmProblem}`);
    let guest: GuestArtifacts;
    try {
      guest = await guestArtifacts(this.config.vmDir);
    } catch (err) {
      return unavailable((err as Error).message);
    }
    const vmlinux = guest.vmlinux;
    if (!vmlinux) return unavailable(`the VM guest in ${this.config.vmDir} has no uncompressed kernel (vmlinux), which Firecracker needs: run 'make vm-guest'`);
    this.guest = guest;
    const runs = await kvmRunsGuests({
      driver: this.name,
      cacheFile: KVM_PROBE_CACHE,
      key: `${version}|${guest.kernelVersion}`,
      bootKernel: (timeoutMs) => this.bootKernelAlone(vmlinux, timeoutMs),
    });
    if (!runs) return unavailable(`${version}; KVM runs no guests here: a kernel booted under Firecracker did not reach its panic within 5 s`);
    return { ...result, available: true, detail: `${version}; kvm; guest kernel ${guest.kernelVersion}` };
  }

  /** The KVM probe's boot: Firecracker without its API, from a config file, the kernel alone. */
  private async bootKernelAlone(vmlinux: string, timeoutMs: number): Promise<string> {
    const dir = await mkdtemp(path.join(tmpdir(), "wrenn-firecracker-probe-"));
    try {
      const configFile = path.join(dir, "vm.json");
      const consoleFile = path.join(dir, "console.log");
      await writeFile(configFile, JSON.stringify(kvmProbeConfig(vmlinux)));
      await runCommand(this.firecracker, ["--no-api", "--config-file", configFile], { timeoutMs, outputFile: consoleFile }).catch(() => undefined);
      return await readFile(consoleFile, "utf8").catch(() => "");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /**
   * Makes the sandbox's raw disk, its TAP device and address translation, starts firecracker in
   * the namespace and its cgroup, configures the VM over the API and starts it; returns once
   * Firecracker has started the guest (envd is still booting). Registers the VM's stop on `cleanup`.
   */
  async boot(request: BootRequest, cleanup: Cleanup): Promise<void> {
    const log = logger.child({ sandboxId: request.sandboxId, runtime: this.name });
    const { rootfs } = request;
    if (rootfs.kind !== "block" || !rootfs.disk) throw new Error("firecracker boots a block image with a disk to write to");
    const guest = (this.guest ??= await guestArtifacts(this.config.vmDir));
    if (!guest.vmlinux) throw new Error(`the VM guest in ${this.config.vmDir} has no vmlinux: run 'make vm-guest'`);
    const commandLine = kernelCommandLine({ hostname: request.hostname ?? request.sandboxId, dnsServers: this.config.dnsServers, envdBootToken: request.envdBootToken });
    const started = performance.now();
    cleanup.defer(`remove ${rootfs.disk.path}`, () => rm(rootfs.disk!.path, { force: true }));
    await makeRawDisk(rootfs.path, rootfs.disk.path, rootfs.disk.sizeMb);
    const api = await this.launch(request, cleanup);
    await api.setMachine({ vcpu_count: vcpuCount(request.vcpus), mem_size_mib: request.memoryMb, smt: false });
    await api.setBootSource({ kernel_image_path: guest.vmlinux, initrd_path: guest.initrd, boot_args: commandLine });
    // The root disk first (vda), then envd's (vdb), as the guest's /init expects.
    await api.setDrive({ drive_id: ROOT_DRIVE, path_on_host: rootfs.disk.path, is_root_device: true, is_read_only: false, cache_type: "Writeback" });
    await api.setDrive({ drive_id: ENVD_DRIVE, path_on_host: guest.envdImage, is_root_device: false, is_read_only: true });
    await api.setNetworkInterface({ iface_id: GUEST_INTERFACE, host_dev_name: TAP_DEVICE, guest_mac: GUEST_MAC });
    // The guest's entropy: envd's Node blocks in getrandom() until the kernel's RNG is seeded.
    await api.addEntropyDevice();
    await api.start();
    log.info({ ms: Math.round(performance.now() - started) }, "firecracker sandbox started");
  }

  /**
   * Starts a Firecracker process for the sandbox: its TAP device and address translation in the
   * namespace first (Firecracker opens the TAP there), then `firecracker --api-sock` through
   * nsenter, detached, in the host cgroup `/wrenn/<id>`. Resolves with a client once the API
   * answers; fails with the console's tail if firecracker exits first. Registers the stop.
   */
  private async launch(vm: VmPlacement, cleanup: Cleanup): Promise<FirecrackerClient> {
    // A namespace that had a VM before (a snapshot loaded where it was taken) keeps its TAP device.
    if (!(await guestLinkExists(vm.netnsPath))) await addGuestLink(vm.netnsPath, vm.sandboxAddress);
    await mkdir(this.config.stateDir, { recursive: true });
    const socket = this.apiSocket(vm.sandboxId);
    await rm(socket, { force: true }); // firecracker refuses a socket path that exists
    const consoleLog = consoleLogOf(vm.sandboxDir);
    await mkdir(path.dirname(consoleLog), { recursive: true });
    // Registered before the start: a start that fails halfway may leave a process or cgroup.
    cleanup.defer(`stop firecracker sandbox ${vm.sandboxId}`, () => this.stop(vm.sandboxId));
    // Its stdout is the guest's serial console and its own log.
    const { pid, exited } = await spawnVmm([`--net=${vm.netnsPath}`, "--", this.firecracker, "--api-sock", socket, "--id", instanceId(vm.sandboxId)], consoleLog, "firecracker");
    const died = async (outcome: string) => new Error(`firecracker ${outcome} before its API answered: ${await consoleTail(consoleLog)}`);
    try {
      const placement: VmPlacement = { sandboxId: vm.sandboxId, sandboxDir: vm.sandboxDir, netnsPath: vm.netnsPath, sandboxAddress: vm.sandboxAddress, vcpus: vm.vcpus, memoryMb: vm.memoryMb };
      await this.records.write(vm.sandboxId, { pid, startTicks: await startTicks(pid), sandboxDir: vm.sandboxDir, placement });
      await placeInCgroup(this.cgroupPath(vm.sandboxId), pid, {
        vcpus: vm.vcpus,
        memoryBytes: (vm.memoryMb + VMM_OVERHEAD_MB) * 2 ** 20,
        pidsLimit: 1024,
      });
    } catch (err) {
      // A process that exited at once has no /proc entry to read nor to move: say why it exited.
      const outcome = await Promise.race([exited, sleep(200).then(() => undefined)]);
      throw outcome === undefined ? err : await died(outcome);
    }
    const api = new FirecrackerClient(socket);
    const outcome = await Promise.race([waitForApi(api).then(() => undefined), exited]);
    if (outcome !== undefined) throw await died(outcome);
    return api;
  }

  /** Kills the VM, empties and removes its cgroup, forgets it (a hibernated one's state too); a sandbox already gone is fine. */
  async stop(sandboxId: string): Promise<void> {
    const record = await this.records.read(sandboxId);
    await this.kill(sandboxId, record);
    if (record) await removeFiles(hibernationFilesOf(record.sandboxDir));
    await rm(this.records.file(sandboxId), { force: true });
  }

  /** SIGKILLs the VM's process (when it is still that process), empties its cgroup, removes its API socket. */
  private async kill(sandboxId: string, record: VmRecord | undefined): Promise<void> {
    if (record && !record.hibernated && (await isRunning(record))) {
      try {
        process.kill(record.pid, "SIGKILL");
      } catch {
        // already exited
      }
    }
    const cgroups = await cgroupDirs(this.cgroupPath(sandboxId));
    if (cgroups.length > 0) await killCgroup(cgroups, CONTROL_TIMEOUT_MS);
    if (record && !record.hibernated) await waitUntilGone(record, CONTROL_TIMEOUT_MS);
    await rm(this.apiSocket(sandboxId), { force: true });
  }

  /**
   * Pauses the VM, writes a full snapshot (devices, vCPUs, memory) beside its disk, then ends
   * Firecracker and its cgroup: no memory or CPU held; the disk and the namespace (with its TAP)
   * stay, so `restore` loads the snapshot onto the same disk at the same path, as Firecracker
   * requires. A snapshot that fails leaves no file and the VM as it was.
   */
  async hibernate(sandboxId: string): Promise<void> {
    const record = await this.records.read(sandboxId);
    if (!record || record.hibernated || !record.placement) throw new Error(`no running VM ${sandboxId} to hibernate`);
    const files = hibernationFilesOf(record.sandboxDir);
    const started = performance.now();
    const api = this.client(sandboxId);
    const wasRunning = (await api.describe()).state === "Running";
    if (wasRunning) await api.pause();
    try {
      await this.snapshotCreate(sandboxId, files);
    } catch (err) {
      await removeFiles(files);
      if (wasRunning) await api.resume().catch(() => undefined);
      throw err;
    }
    await this.records.write(sandboxId, { ...record, hibernated: true });
    await this.kill(sandboxId, record);
    logger.info({ sandboxId, runtime: this.name, ms: Math.round(performance.now() - started) }, "firecracker sandbox hibernated");
  }

  /** Starts Firecracker again in the sandbox's namespace and loads its hibernation snapshot, running. */
  async restore(sandboxId: string): Promise<void> {
    const record = await this.records.read(sandboxId);
    if (!record?.hibernated || !record.placement) throw new Error(`VM ${sandboxId} is not hibernated`);
    const files = hibernationFilesOf(record.sandboxDir);
    try {
      // Not the boot's undo (which would remove the snapshot): a failure is handled below.
      await this.snapshotLoad({ ...record.placement, ...files, resume: true }, new Cleanup());
    } catch (err) {
      // Back to hibernated, with the snapshot kept: a later resume can try again.
      await this.kill(sandboxId, await this.records.read(sandboxId));
      await this.records.write(sandboxId, { ...record, hibernated: true });
      throw err;
    }
    await removeFiles(files);
  }

  async pause(sandboxId: string): Promise<void> {
    await this.client(sandboxId).pause();
  }

  async resume(sandboxId: string): Promise<void> {
    await this.client(sandboxId).resume();
  }

  /**
   * Writes a full snapshot of the sandbox's VM (devices, vCPUs, memory) to `files`. The VM must be
   * paused. Its disk is not in it: a snapshot restores only onto the same disk, unchanged since,
   * at the same path.
   */
  async snapshotCreate(sandboxId: string, files: SnapshotFiles): Promise<void> {
    await this.client(sandboxId).createSnapshot({ snapshot_type: "Full", snapshot_path: files.snapshotPath, mem_file_path: files.memFilePath });
  }

  /**
   * Starts a fresh Firecracker for the sandbox (TAP, translation, cgroup as `boot` makes them) and
   * loads a snapshot into it; with `resume`, the VM runs on from where it was taken. The disk the
   * snapshot was taken with must be at the path it had then. Registers the stop on `cleanup`.
   */
  async snapshotLoad(vm: VmPlacement & SnapshotFiles & { resume: boolean }, cleanup: Cleanup): Promise<void> {
    const started = performance.now();
    const api = await this.launch(vm, cleanup);
    await api.loadSnapshot({
      snapshot_path: vm.snapshotPath,
      mem_backend: { backend_type: "File", backend_path: vm.memFilePath },
      resume_vm: vm.resume,
    });
    logger.info({ sandboxId: vm.sandboxId, runtime: this.name, ms: Math.round(performance.now() - started) }, "firecracker snapshot loaded");
  }

  async list(): Promise<RuntimeSandbox[]> {
    const found: RuntimeSandbox[] = [];
    for (const { id, record } of await this.records.all()) {
      if (record?.hibernated) {
        const { snapshotPath, memFilePath } = hibernationFilesOf(record.sandboxDir);
        found.push({ id, status: existsSync(snapshotPath) && existsSync(memFilePath) ? "hibernated" : "stopped" });
        continue;
      }
      if (!record || !(await isRunning(record))) {
        found.push({ id, status: "stopped" });
        continue;
      }
      // The process decides whether it lives; the API only whether it runs. An API that does not
      // answer in time (busy with a snapshot) is alive all the same, as qemu's QMP is. "Not
      // started": a boot that never finished, which nothing will finish now.
      const state = await this.client(id)
        .describe(3000)
        .then((info) => info.state, () => undefined);
      found.push({ id, status: state === "Paused" ? "paused" : state === "Not started" ? "stopped" : "running" });
    }
    return found;
  }

  cgroupPath(sandboxId: string): string {
    return `/wrenn/${sandboxId}`;
  }

  consoleLog(sandboxDir: string): string {
    return consoleLogOf(sandboxDir);
  }

  async exitReason(sandboxId: string): Promise<string | undefined> {
    const record = await this.records.read(sandboxId);
    return vmExitReason(this.cgroupPath(sandboxId), record && consoleLogOf(record.sandboxDir));
  }

  private client(sandboxId: string): FirecrackerClient {
    return new FirecrackerClient(this.apiSocket(sandboxId));
  }

  private apiSocket(sandboxId: string): string {
    return path.join(this.config.stateDir, `${sandboxId}.sock`);
  }

}

/**
 * The sandbox's disk for Firecracker, which reads only raw images: a copy of the template image
 * that shares its blocks where the filesystem has reflinks (btrfs, XFS: instant, copy-on-write)
 * and is otherwise a sparse copy of the blocks the image uses (ext4: time and space in proportion
 * to the template's content), then grown to `sizeMb` without allocating (the guest's init grows
 * the filesystem to fill it). The template image is never written.
 */
export async function makeRawDisk(templateImage: string, diskPath: string, sizeMb: number): Promise<void> {
  await runCommand("cp", ["--reflink=auto", "--sparse=always", "--", templateImage, diskPath], { timeoutMs: DISK_COPY_TIMEOUT_MS });
  await truncate(diskPath, sizeMb * 2 ** 20);
}

/** Where a hibernated sandbox's snapshot lies: beside its disk, in its own directory. */
export function hibernationFilesOf(sandboxDir: string): SnapshotFiles {
  return { snapshotPath: path.join(sandboxDir, "vm.state"), memFilePath: path.join(sandboxDir, "memory.state") };
}

async function removeFiles(files: SnapshotFiles): Promise<void> {
  await Promise.all([rm(files.snapshotPath, { force: true }), rm(files.memFilePath, { force: true })]);
}

/** Firecracker's whole vCPUs (1–32); a fractional share is enforced by the cgroup's CPU quota. */
export function vcpuCount(vcpus: number): number {
  return Math.min(32, Math.max(1, Math.ceil(vcpus)));
}

/** Firecracker's `--id` takes 1–64 letters, digits and '-'; sandbox ids may also hold '_'. */
export function instanceId(sandboxId: string): string {
  return sandboxId.replace(/[^A-Za-z0-9-]/g, "-").slice(0, 64) || "wrenn";
}

/** The KVM probe's VM: the kernel alone, no root disk, so it panics and (reboot=k) Firecracker exits. */
export function kvmProbeConfig(vmlinux: string): VmConfigFile {
  return {
    "boot-source": { kernel_image_path: vmlinux, boot_args: "console=ttyS0 panic=-1 reboot=k" },
    "machine-config": { vcpu_count: 1, mem_size_mib: 128 },
    drives: [],
  };
}

async function guestLinkExists(netnsPath: string): Promise<boolean> {
  return runCommand("ip", ["-n", path.basename(netnsPath), "link", "show", TAP_DEVICE], { timeoutMs: CONTROL_TIMEOUT_MS }).then(
    () => true,
    () => false,
  );
}

async function waitForApi(api: FirecrackerClient): Promise<void> {
  const deadline = performance.now() + START_TIMEOUT_MS;
  for (;;) {
    try {
      await api.describe(2000);
      return;
    } catch (err) {
      if (performance.now() > deadline) throw err;
      await sleep(10);
    }
  }
}
