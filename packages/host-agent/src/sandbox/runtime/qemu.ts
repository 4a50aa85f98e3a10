// The qemu driver: one `qemu-system-x86_64 -M microvm` per sandbox, KVM where a real probe shows
// guests run and software emulation (TCG) elsewhere, driven over QMP.
//
// The guest boots the Debian cloud kernel and the initramfs of scripts/build-vm-guest.sh
// (build/vm): its root disk is a qcow2 overlay of the template's ext4 image (grown to the
// sandbox's disk size at boot), envd's directory a second, read-only disk. Every guest has the
// same address and MAC (qemu-guest.ts); inside the sandbox's netns a TAP device reaches it, and
// the namespace translates between that address and the sandbox's own, so a memory snapshot could
// restore into any namespace. qemu runs inside the netns (it opens the TAP there), in a host
// cgroup that bounds its memory and CPU. See docs/host-agent-qemu.md.
import { existsSync } from "node:fs";
import { mkdir, rm, stat } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { runCommand } from "../../exec/command.js";
import { logger } from "../../logging/logger.js";
import type { Cleanup } from "../cleanup.js";
import { cgroupDirs, killCgroup, placeInCgroup, type CgroupLimits } from "./cgroup-tree.js";
import type { BootRequest, RuntimeDriver, RuntimeProbe, RuntimeSandbox } from "./driver.js";
import { kvmRunsGuests } from "./kvm-probe.js";
import { GUEST_ADDRESS, GUEST_DEVICE_ARGS, GUEST_GATEWAY, GUEST_MAC, GUEST_PREFIX, guestArtifacts, kernelCommandLine, type GuestArtifacts } from "./qemu-guest.js";
import { qmp } from "./qmp.js";
import { consoleTail, isRunning, spawnVmm, startTicks, VmRecords, vmExitReason, waitUntilGone } from "./vm-process.js";

const QEMU = "qemu-system-x86_64";
const CONTROL_TIMEOUT_MS = 10_000;
/** Until QMP answers after qemu is started: it has parsed its arguments and opened every file. */
const START_TIMEOUT_MS = 15_000;
/** The TAP device inside the sandbox's namespace, and its MAC (the guest's gateway). */
export const TAP_DEVICE = "tap0";
export const GATEWAY_MAC = "02:77:72:6e:00:02";
/**
 * Host memory a VM needs besides its guest's RAM: qemu itself, and under TCG its translation cache
 * (bounded by TCG_CACHE_MB; QEMU's default lets it grow to 1 GiB). Measured: a 256 MiB TCG guest's
 * qemu reached 457 MiB of anonymous memory while saving its state, and the cgroup's OOM killer
 * ended it at a 192 MiB allowance.
 */
const VMM_OVERHEAD_MB = { kvm: 160, tcg: 352 } as const;
const TCG_CACHE_MB = 128;
/** Where the KVM probe's verdict is kept until the host reboots (it cannot change before). */
const KVM_PROBE_CACHE = "/run/wrenn/qemu-kvm-probe.json";

export type Accelerator = "kvm" | "tcg";

export interface QemuConfig {
  /** The driver's own records: one `<id>.json` and `<id>.qmp` per sandbox. */
  stateDir: string;
  /** build/vm: kernel, initramfs, envd's image (scripts/build-vm-guest.sh). */
  vmDir: string;
  dnsServers: string[];
  /** Force an accelerator; by default KVM where the probe boots a guest, TCG otherwise. */
  accelerator?: Accelerator;
  qemu?: string;
}

/** What the driver keeps per sandbox, to find its VM again after an agent restart. */
interface VmRecord {
  pid: number;
  /** The process's start time (field 22 of /proc/<pid>/stat): a reused pid is not our VM. */
  startTicks: string;
  sandboxDir: string;
  /** How it was started (nsenter's arguments) and bounded: what a restore starts again. */
  argv: string[];
  limits: CgroupLimits;
  /** Its memory is in `memoryFileOf(sandboxDir)` and no process runs. */
  hibernated?: boolean;
}

export class QemuRuntime implements RuntimeDriver {
  readonly name = "qemu" as const;
  readonly rootfsKind = "block" as const;
  readonly memorySnapshots = true;
  private readonly qemu: string;
  private accelerator: Accelerator | undefined;
  private guest: GuestArtifacts | undefined;

  private readonly records: VmRecords<VmRecord>;

  constructor(private readonly config: QemuConfig) {
    this.records = new VmRecords(config.stateDir);
    this.qemu = config.qemu ?? QEMU;
    this.accelerator = config.accelerator;
  }

  /**
   * qemu and qemu-img run, the guest artifacts are built, and the accelerator is known: KVM when a
   * kernel boots under it within a few seconds (a host whose /dev/kvm exists but runs no guest,
   * as here, hangs instead), else TCG, which is software and runs wherever qemu does.
   */
  async probe(): Promise<RuntimeProbe> {
    const result = { name: this.name, memorySnapshots: this.memorySnapshots };
    let version: string;
    try {
      version = (await runCommand(this.qemu, ["--version"], { timeoutMs: CONTROL_TIMEOUT_MS })).split("\n")[0] ?? "";
      await runCommand("qemu-img", ["--version"], { timeoutMs: CONTROL_TIMEOUT_MS });
    } catch (err) {
      return { ...result, available: false, detail: `qemu not usable: ${(err as Error).message}` };
    }
    try {
      this.guest = await guestArtifacts(this.config.vmDir);
    } catch (err) {
      return { ...result, available: false, detail: (err as Error).message };
    }
    this.accelerator ??= await this.probeKvm(version, this.guest);
    const tcg = this.accelerator === "tcg" ? " (software emulation: slow, for tests and hosts without KVM)" : "";
    return { ...result, available: true, detail: `${version}; ${this.accelerator}${tcg}; guest kernel ${this.guest.kernelVersion}` };
  }

  /** Boots the guest kernel alone under KVM: with no root disk it panics and, with -no-reboot, qemu exits. */
  private async probeKvm(version: string, guest: GuestArtifacts): Promise<Accelerator> {
    const runs = await kvmRunsGuests({
      driver: "qemu",
      cacheFile: KVM_PROBE_CACHE,
      key: `${version}|${guest.kernelVersion}`,
      bootKernel: (timeoutMs) =>
        runCommand(
          this.qemu,
          ["-M", "microvm", "-accel", "kvm", "-m", "64", "-nographic", "-nodefaults", "-no-reboot", "-serial", "stdio", "-kernel", guest.kernel, "-append", "console=ttyS0 panic=-1 reboot=k"],
          { timeoutMs },
        ).catch((err: Error) => err.message),
    });
    return runs ? "kvm" : "tcg";
  }

  /**
   * Makes the sandbox's disk (a qcow2 overlay of the template image), its TAP device and address
   * translation, starts qemu in the namespace and its cgroup; returns once QMP answers (envd is
   * still booting). Registers the VM's stop on `cleanup`.
   */
  async boot(request: BootRequest, cleanup: Cleanup): Promise<void> {
    const log = logger.child({ sandboxId: request.sandboxId, runtime: "qemu" });
    const { rootfs } = request;
    if (rootfs.kind !== "block" || !rootfs.disk) throw new Error("qemu boots a block image with a disk to write to");
    const guest = (this.guest ??= await guestArtifacts(this.config.vmDir));
    const accelerator = this.accelerator ?? "tcg";
    const started = performance.now();
    await runCommand("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "raw", "-b", rootfs.path, rootfs.disk.path, `${rootfs.disk.sizeMb}M`], { timeoutMs: CONTROL_TIMEOUT_MS });
    cleanup.defer(`remove ${rootfs.disk.path}`, () => rm(rootfs.disk!.path, { force: true }));
    await addGuestLink(request.netnsPath, request.sandboxAddress);
    await mkdir(this.config.stateDir, { recursive: true });
    const qmpSocket = this.qmpSocket(request.sandboxId);
    await rm(qmpSocket, { force: true });
    const consoleLog = consoleLogOf(request.sandboxDir);
    await mkdir(path.dirname(consoleLog), { recursive: true });
    const args = [
      `--net=${request.netnsPath}`,
      "--",
      this.qemu,
      ...vmArguments({
        guest,
        accelerator,
        name: request.sandboxId,
        memoryMb: request.memoryMb,
        vcpus: request.vcpus,
        commandLine: kernelCommandLine({ hostname: request.hostname ?? request.sandboxId, dnsServers: this.config.dnsServers, envdBootToken: request.envdBootToken }),
        rootDisk: rootfs.disk.path,
        qmpSocket,
      }),
    ];
    // Registered before the start: a start that fails halfway may leave a process or cgroup.
    cleanup.defer(`stop qemu sandbox ${request.sandboxId}`, () => this.stop(request.sandboxId));
    const limits = { vcpus: request.vcpus, memoryBytes: (request.memoryMb + VMM_OVERHEAD_MB[accelerator]) * 2 ** 20, pidsLimit: 1024 };
    const vm = { argv: args, limits, sandboxDir: request.sandboxDir };
    if (request.restoreFrom) await this.startIncoming(request.sandboxId, vm, request.restoreFrom);
    else await this.start(request.sandboxId, vm);
    log.info({ ms: Math.round(performance.now() - started), accelerator, restored: !!request.restoreFrom }, "qemu sandbox started");
  }

  /**
   * Starts qemu as `record` says (detached: an agent restart leaves it running), in its cgroup;
   * resolves once QMP answers, fails with the console's tail if qemu exits first.
   */
  private async start(sandboxId: string, vm: Pick<VmRecord, "argv" | "limits" | "sandboxDir">, extraArgs: string[] = []): Promise<void> {
    const consoleLog = consoleLogOf(vm.sandboxDir);
    const { pid, exited } = await spawnVmm([...vm.argv, ...extraArgs], consoleLog, "qemu");
    await this.records.write(sandboxId, { ...vm, pid, startTicks: await startTicks(pid), hibernated: undefined });
    await placeInCgroup(this.cgroupPath(sandboxId), pid, vm.limits);
    const answered = this.waitForQmp(this.qmpSocket(sandboxId));
    const outcome = await Promise.race([answered.then(() => undefined), exited]);
    if (outcome !== undefined) throw new Error(`qemu ${outcome} before it answered: ${await consoleTail(consoleLog)}`);
  }

  /**
   * Stops the vCPUs and migrates the VM's state (memory and devices) into `stateFile`; the VM stays
   * stopped (`resume` runs it on, `stop` ends it). Its disk is consistent meanwhile: stopping a VM
   * drains and flushes its block devices. On failure nothing is left at `stateFile`.
   */
  async saveState(sandboxId: string, stateFile: string, options: { runOnFailure: boolean }): Promise<void> {
    const socket = this.qmpSocket(sandboxId);
    await qmp(socket, "stop");
    await rm(stateFile, { force: true });
    try {
      // QEMU 7.2 has no file: target; the default bandwidth cap (128 MiB/s) would only slow it down.
      await qmp(socket, "migrate-set-parameters", { "max-bandwidth": 8 * 2 ** 30 });
      await qmp(socket, "migrate", { uri: `exec:cat > ${shellQuote(stateFile)}` });
      await this.waitForMigration(socket);
    } catch (err) {
      await rm(stateFile, { force: true });
      if (options.runOnFailure) await qmp(socket, "cont").catch(() => undefined);
      throw err;
    }
  }

  /** saveState into a file beside its disk, then the process and its cgroup end; its disk stays as it is. */
  async hibernate(sandboxId: string): Promise<void> {
    const record = await this.records.read(sandboxId);
    if (!record || record.hibernated) throw new Error(`no running VM ${sandboxId} to hibernate`);
    const memoryFile = memoryFileOf(record.sandboxDir);
    const started = performance.now();
    const { status } = await qmp<{ status: string }>(this.qmpSocket(sandboxId), "query-status");
    await this.saveState(sandboxId, memoryFile, { runOnFailure: status === "running" });
    await this.records.write(sandboxId, { ...record, hibernated: true });
    await this.kill(sandboxId, record);
    logger.info({ sandboxId, ms: Math.round(performance.now() - started), bytes: (await stat(memoryFile)).size }, "qemu sandbox hibernated");
  }

  /** Starts qemu again with the hibernated state as its incoming migration and lets it run. */
  async restore(sandboxId: string): Promise<void> {
    const record = await this.records.read(sandboxId);
    if (!record?.hibernated) throw new Error(`VM ${sandboxId} is not hibernated`);
    const memoryFile = memoryFileOf(record.sandboxDir);
    const started = performance.now();
    try {
      await this.startIncoming(sandboxId, record, memoryFile);
    } catch (err) {
      // Back to hibernated, with the state file kept: a later resume can try again.
      await this.kill(sandboxId, await this.records.read(sandboxId));
      await this.records.write(sandboxId, { ...record, hibernated: true });
      throw err;
    }
    await rm(memoryFile, { force: true });
    logger.info({ sandboxId, ms: Math.round(performance.now() - started) }, "qemu sandbox restored");
  }

  /** Starts qemu with `stateFile` as its incoming migration; resolves once the VM runs. */
  private async startIncoming(sandboxId: string, vm: Pick<VmRecord, "argv" | "limits" | "sandboxDir">, stateFile: string): Promise<void> {
    const socket = this.qmpSocket(sandboxId);
    await rm(socket, { force: true });
    await this.start(sandboxId, vm, ["-incoming", `exec:cat ${shellQuote(stateFile)}`]);
    // The state arrives paused (it was taken stopped): wait until it is all in, then run.
    const deadline = performance.now() + START_TIMEOUT_MS;
    for (;;) {
      const { status } = await qmp<{ status: string }>(socket, "query-status");
      if (status === "running") return;
      if (status === "paused" || status === "postmigrate" || status === "prelaunch") {
        await qmp(socket, "cont");
        return;
      }
      if (status !== "inmigrate") throw new Error(`restored VM is ${status}`);
      if (performance.now() > deadline) throw new Error(`restoring VM still ${status} after ${START_TIMEOUT_MS} ms`);
      await sleep(20);
    }
  }

  private async waitForMigration(socket: string): Promise<void> {
    const deadline = performance.now() + 5 * 60_000;
    for (;;) {
      const info = await qmp<{ status?: string; "error-desc"?: string }>(socket, "query-migrate");
      if (info.status === "completed") return;
      if (info.status === "failed" || info.status === "cancelled") throw new Error(`saving the VM's memory ${info.status}: ${info["error-desc"] ?? "no reason given"}`);
      if (performance.now() > deadline) throw new Error("saving the VM's memory took over 5 minutes");
      await sleep(20);
    }
  }

  /** SIGKILLs the VM's process (when it is still that process) and empties its cgroup. */
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
    await rm(this.qmpSocket(sandboxId), { force: true });
  }

  private async waitForQmp(socket: string): Promise<void> {
    const deadline = performance.now() + START_TIMEOUT_MS;
    for (;;) {
      try {
        await qmp(socket, "query-status", undefined, 2000);
        return;
      } catch (err) {
        if (performance.now() > deadline) throw err;
        await sleep(10);
      }
    }
  }

  /** Kills the VM, empties and removes its cgroup, forgets it (a hibernated one's state too); a sandbox already gone is fine. */
  async stop(sandboxId: string): Promise<void> {
    const record = await this.records.read(sandboxId);
    await this.kill(sandboxId, record);
    if (record) await rm(memoryFileOf(record.sandboxDir), { force: true });
    await rm(this.records.file(sandboxId), { force: true });
  }

  async pause(sandboxId: string): Promise<void> {
    await qmp(this.qmpSocket(sandboxId), "stop");
  }

  async resume(sandboxId: string): Promise<void> {
    await qmp(this.qmpSocket(sandboxId), "cont");
  }

  async list(): Promise<RuntimeSandbox[]> {
    const found: RuntimeSandbox[] = [];
    for (const { id, record } of await this.records.all()) {
      if (record?.hibernated) {
        found.push({ id, status: existsSync(memoryFileOf(record.sandboxDir)) ? "hibernated" : "stopped" });
        continue;
      }
      if (!record || !(await isRunning(record))) {
        found.push({ id, status: "stopped" });
        continue;
      }
      // The process decides whether it lives; QMP only whether it runs. QMP serves one client at a
      // time, so it may be busy (a hibernate's migration holds it for seconds): alive all the same.
      const status = await qmp<{ status: string }>(this.qmpSocket(id), "query-status", undefined, 3000).catch(() => undefined);
      found.push({ id, status: status?.status === "paused" ? "paused" : status?.status === "shutdown" ? "stopped" : "running" });
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

  async stateIdentity(): Promise<string> {
    const guest = (this.guest ??= await guestArtifacts(this.config.vmDir));
    return `qemu|${this.accelerator ?? "tcg"}|${guest.kernelVersion}|${guest.inputsHash}|${guest.envdHash}`;
  }

  private qmpSocket(sandboxId: string): string {
    return path.join(this.config.stateDir, `${sandboxId}.qmp`);
  }

}

export interface VmShape {
  guest: GuestArtifacts;
  accelerator: Accelerator;
  /** Shown in the process list as `wrenn-<name>`. */
  name: string;
  memoryMb: number;
  vcpus: number;
  commandLine: string;
  /** The sandbox's qcow2 disk (vda); envd's image is vdb. */
  rootDisk: string;
  qmpSocket: string;
}

/** qemu's arguments for one sandbox VM: a microvm with two disks, a network card on tap0, entropy, QMP. */
export function vmArguments(vm: VmShape): string[] {
  return [
    "-M", "microvm,x-option-roms=off,rtc=on",
    "-accel", vm.accelerator === "tcg" ? `tcg,tb-size=${TCG_CACHE_MB}` : "kvm",
    ...(vm.accelerator === "kvm" ? ["-cpu", "host"] : []),
    "-m", `${vm.memoryMb}M`,
    "-smp", String(Math.max(1, Math.ceil(vm.vcpus))),
    "-name", `wrenn-${vm.name}`,
    "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
    "-serial", "stdio",
    "-kernel", vm.guest.kernel,
    "-initrd", vm.guest.initrd,
    "-append", vm.commandLine,
    "-drive", `id=root,file=${vm.rootDisk},format=qcow2,if=none,cache=writeback,discard=unmap`,
    "-device", "virtio-blk-device,drive=root",
    "-drive", `id=envd,file=${vm.guest.envdImage},format=raw,if=none,readonly=on`,
    "-device", "virtio-blk-device,drive=envd",
    "-netdev", `tap,id=net0,ifname=${TAP_DEVICE},script=no,downscript=no`,
    "-device", `virtio-net-device,netdev=net0,mac=${GUEST_MAC}`,
    // The guest's entropy: without it Node waits ~1.5 s in getrandom() under TCG (no RDRAND).
    ...GUEST_DEVICE_ARGS,
    "-qmp", `unix:${vm.qmpSocket},server=on,wait=off`,
  ];
}

/** Where a hibernated VM's memory and device state is kept. */
export function memoryFileOf(sandboxDir: string): string {
  return path.join(sandboxDir, "memory.state");
}

/** For exec: migration URIs, run by /bin/sh. */
function shellQuote(value: string): string {
  return `'${value.replace(/'/g, "'\\''")}'`;
}

/** Where the VM's serial console (kernel, init and envd output) is appended. */
export function consoleLogOf(sandboxDir: string): string {
  return path.join(sandboxDir, "bundle", "console.log");
}

/**
 * Inside the sandbox's namespace: the TAP device with the guest's gateway address, forwarding,
 * and the translation between the sandbox's address (on eth0, what the host and its firewall see)
 * and the guest's fixed one. Goes away with the namespace.
 */
export async function addGuestLink(netnsPath: string, sandboxAddress: string): Promise<void> {
  const namespace = path.basename(netnsPath);
  await runCommand("ip", ["-n", namespace, "-batch", "-"], {
    timeoutMs: CONTROL_TIMEOUT_MS,
    input: [
      `tuntap add dev ${TAP_DEVICE} mode tap`,
      // Fixed, like the guest's: a guest restored from memory still has the gateway's MAC in its
      // ARP cache, and it must be this namespace's TAP too (else its replies go nowhere until the
      // entry goes stale).
      `link set ${TAP_DEVICE} address ${GATEWAY_MAC}`,
      `addr add ${GUEST_GATEWAY}/${GUEST_PREFIX} dev ${TAP_DEVICE}`,
      `link set ${TAP_DEVICE} up`,
    ].join("\n") + "\n",
  });
  await runCommand("nsenter", [`--net=${netnsPath}`, "--", "sysctl", "-qw", "net.ipv4.ip_forward=1"], { timeoutMs: CONTROL_TIMEOUT_MS });
  const rules = [
    "table ip wrenn_vm {",
    "  chain prerouting {",
    "    type nat hook prerouting priority dstnat;",
    `    iifname "eth0" ip daddr ${sandboxAddress} dnat to ${GUEST_ADDRESS}`,
    "  }",
    "  chain postrouting {",
    "    type nat hook postrouting priority srcnat;",
    `    oifname "eth0" ip saddr ${GUEST_ADDRESS} snat to ${sandboxAddress}`,
    "  }",
    "}",
  ].join("\n");
  await runCommand("nsenter", [`--net=${netnsPath}`, "--", "nft", "-f", "-"], { timeoutMs: CONTROL_TIMEOUT_MS, input: `${rules}\n` });
}
