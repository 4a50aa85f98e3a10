// The sandbox manager: the host's truth about its sandboxes. It builds a sandbox from its parts
// (template + private disk + overlay rootfs, netns + firewall, runtime, envd) with an undo stack,
// tears one down from its record alone (so it works after a restart too), and serializes lifecycle
// operations per sandbox.
import { createHash, randomBytes } from "node:crypto";
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { availableParallelism } from "node:os";
import path from "node:path";
import { Mutex } from "async-mutex";
import { hostMemoryMb } from "../host/memory.js";
import { logger } from "../logging/logger.js";
import { Cleanup } from "./cleanup.js";
import { EnvdClient } from "./envd/client.js";
import { HostCapacityError, InvalidRequestError, SandboxExistsError, SandboxNotFoundError, SandboxStateError } from "./errors.js";
import { MetricsSampler } from "./metrics/sampler.js";
import { parseEgressRules } from "./network/egress.js";
import { resolvConf } from "./network/dns.js";
import type { Firewall } from "./network/firewall.js";
import { createNetwork, destroyNetwork, isSandboxId, planNetwork, type SandboxNetwork } from "./network/namespace.js";
import type { SlotAllocator } from "./network/slots.js";
import { readRecord, writeRecord, type SandboxRecord, type SandboxStatus, type TimeoutAction } from "./record.js";
import { ENVD_PORT, type BootRequest, type RuntimeDriver, type RuntimeName } from "./runtime/driver.js";
import { createDisk, destroyDisk, diskOf, diskUsageBytes, vmDiskOf, writableLayerMb, type SandboxDisk } from "./storage/disk.js";
import { mountRootfs, removeUnlessMounted, unmountRootfs } from "./storage/rootfs.js";
import { VM_STATE_DIR, type TemplateInfo, type TemplateStore, type VmTemplateState } from "./storage/templates.js";
import { BLOCK_IMAGE_NAME } from "./storage/block-image.js";
import { runCommand } from "../exec/command.js";
import { WarmPool, type WarmPoolTarget } from "./warm-pool.js";

const log = logger.child({ component: "sandboxes" });

export const DEFAULTS = { vcpus: 1, memoryMb: 512, diskSizeMb: 5120 } as const;
/** Below this gVisor's sentry and envd themselves do not fit. */
const MIN_MEMORY_MB = 128;
const MAX_TIMEOUT_SEC = 30 * 24 * 3600;
const ENVD_READY_TIMEOUT_MS = 30_000;

export interface CreateSandboxOptions {
  sandboxId?: string;
  template: string;
  runtime?: string;
  vcpus?: number;
  memoryMb?: number;
  diskSizeMb?: number;
  timeoutSec?: number;
  /** What the reaper does when the timeout runs out; default: pause. */
  onTimeout?: TimeoutAction;
  envVars?: Record<string, string>;
  allowOut?: string[];
  denyOut?: string[];
  metadata?: Record<string, string>;
  envdAccessToken?: string;
}

export interface ManagerOptions {
  dataDir: string;
  drivers: Map<RuntimeName, RuntimeDriver>;
  defaultRuntime: RuntimeName;
  templates: TemplateStore;
  pool: SlotAllocator;
  firewall: Firewall;
  dnsServers: string[];
  metrics: MetricsSampler;
  /** Memory the host keeps for itself: creates are refused when less than this would be left. */
  memoryReserveMb: number;
  /** What an idle sandbox costs the host (sentry, gofer, envd), counted when admitting a create. */
  sandboxBaseCostMb: number;
  /** Default-shape sandboxes to keep booted per template; none when empty. */
  warmPool?: readonly WarmPoolTarget[];
  /**
   * Whether a VM runtime that can save memory keeps a plain template's first boot (per shape), so
   * that later sandboxes from it restore instead of booting (default: true).
   */
  vmBootSnapshots?: boolean;
}

/** The size of a VM, which its saved memory fixes: a boot snapshot serves creates of this shape. */
interface VmShape {
  memoryMb: number;
  vcpus: number;
  diskSizeMb: number;
}

/** One live sandbox: its record and handles on its parts. */
export interface Sandbox {
  record: SandboxRecord;
  dir: string;
  network: SandboxNetwork;
  disk: SandboxDisk;
  rootfsDir: string;
  envd: EnvdClient;
  driver: RuntimeDriver;
  /** Set when create handed out a sandbox from the warm pool. */
  fromWarmPool?: boolean;
  /** Set on a VM that booted because its template had no boot snapshot for its shape: the key to save one under. */
  bootSnapshotWanted?: { key: string; shape: VmShape };
}

interface SandboxPlan {
  record: SandboxRecord;
  driver: RuntimeDriver;
  envVars: Record<string, string>;
  writableMb: number;
  /** Boot even where a boot snapshot could be restored (the VM that makes one). */
  coldBoot?: boolean;
}

export class SandboxManager {
  private readonly sandboxes = new Map<string, Sandbox>();
  /** Held by every lifecycle operation on one sandbox id, creation included. */
  private readonly locks = new Map<string, Mutex>();
  private autoPaused: string[] = [];
  private exited: { sandboxId: string; reason: string }[] = [];
  readonly warmPool: WarmPool;
  /** Set by destroyAll: this host takes no new sandbox. */
  private closing = false;
  /** Creates in flight (settled, never rejecting): destroyAll waits for them, then destroys what they made. */
  private readonly creating = new Set<Promise<unknown>>();
  /** Told when a sandbox stops being reachable (the port proxy drops its connections to it). */
  onUnreachable?: (sandboxId: string, destroyed: boolean) => void;
  /** Boot snapshots being saved, by `<template>/<key>` (settled, never rejecting). */
  private readonly savingBoots = new Map<string, Promise<void>>();
  /** The VMs those are saved from: not sandboxes of anyone's, but their parts are this host's. */
  private readonly bootSnapshotVms = new Set<Sandbox>();

  constructor(private readonly options: ManagerOptions) {
    this.warmPool = new WarmPool(options.warmPool ?? [], {
      build: (template) => this.buildWarm(template),
      discard: (sandbox) => this.teardown(sandbox),
      hasRoom: () => this.hasRoomForWarm(),
    });
  }

  get slots(): SlotAllocator {
    return this.options.pool;
  }

  get sandboxesDir(): string {
    return path.join(this.options.dataDir, "sandboxes");
  }

  list(): Sandbox[] {
    return [...this.sandboxes.values()];
  }

  /** The sandbox, or undefined: for callers on a hot path that answer "unknown" themselves (the proxy). */
  find(sandboxId: string): Sandbox | undefined {
    return this.sandboxes.get(sandboxId);
  }

  get(sandboxId: string): Sandbox {
    const sandbox = this.sandboxes.get(sandboxId);
    if (!sandbox) throw new SandboxNotFoundError(sandboxId);
    return sandbox;
  }

  /** A sandbox that must be running for the operation (exec, files). Counts as activity. */
  running(sandboxId: string): Sandbox {
    const sandbox = this.get(sandboxId);
    if (sandbox.record.status !== "running") {
      throw new SandboxStateError(`sandbox ${sandboxId} is ${sandbox.record.status}; resume it first`);
    }
    this.touch(sandbox);
    return sandbox;
  }

  touch(sandbox: Sandbox): void {
    sandbox.record.lastActiveAt = Date.now();
  }

  drainAutoPaused(): string[] {
    const drained = this.autoPaused;
    this.autoPaused = [];
    return drained;
  }

  drainExited(): { sandboxId: string; reason: string }[] {
    const drained = this.exited;
    this.exited = [];
    return drained;
  }

  /** Runs `operation` holding the sandbox id's lock: lifecycle operations on one sandbox never overlap. */
  async withLock<T>(sandboxId: string, operation: () => Promise<T>): Promise<T> {
    let lock = this.locks.get(sandboxId);
    if (!lock) this.locks.set(sandboxId, (lock = new Mutex()));
    try {
      return await lock.runExclusive(operation);
    } finally {
      if (!lock.isLocked() && !this.sandboxes.has(sandboxId)) this.locks.delete(sandboxId);
    }
  }

  async create(request: CreateSandboxOptions): Promise<Sandbox> {
    if (this.closing) throw new HostCapacityError("this host is shutting down and takes no new sandbox");
    const creating = this.createNow(request);
    const settled: Promise<unknown> = creating.then(
      () => undefined,
      () => undefined,
    );
    this.creating.add(settled);
    void settled.then(() => this.creating.delete(settled));
    return creating;
  }

  private async createNow(request: CreateSandboxOptions): Promise<Sandbox> {
    const sandboxId = request.sandboxId || newSandboxId();
    if (!isSandboxId(sandboxId)) {
      throw new InvalidRequestError(`sandbox id ${JSON.stringify(sandboxId)} is invalid: use 1–63 letters, digits, '-' or '_'`);
    }
    return this.withLock(sandboxId, async () => {
      if (this.sandboxes.has(sandboxId)) throw new SandboxExistsError(sandboxId);
      const plan = await this.plan(sandboxId, request);
      const warm = this.matchesWarmPool(plan) ? this.warmPool.take(plan.record.template) : undefined;
      if (warm) {
        try {
          return await this.claim(warm, plan);
        } catch (err) {
          log.warn({ sandboxId, runtimeId: warm.record.runtimeId, err }, "a warm sandbox could not be handed out; booting one");
          await this.teardown(warm).catch((cause: unknown) => log.error({ err: cause }, "removing a failed warm sandbox failed"));
        }
      }
      await this.ensureCapacity();
      plan.record.runtimeId = this.freeRuntimeId(sandboxId);
      const phases: Record<string, number> = {};
      const sandbox = await this.build(plan, phases);
      log.info({ sandboxId, template: plan.record.template, phases }, "sandbox created");
      if (sandbox.bootSnapshotWanted) this.saveBootSnapshotLater(plan.record.template, plan.driver, sandbox.bootSnapshotWanted);
      return sandbox;
    });
  }

  /** The pool holds default-shape sandboxes only: a create asking for anything else boots its own. */
  private matchesWarmPool(plan: SandboxPlan): boolean {
    const { record } = plan;
    return (
      this.warmPool.serves(record.template) &&
      record.runtime === this.options.defaultRuntime &&
      record.vcpus === DEFAULTS.vcpus &&
      record.memoryMb === DEFAULTS.memoryMb &&
      record.diskSizeMb === DEFAULTS.diskSizeMb
    );
  }

  /** Makes a pooled sandbox the requested one: its id, metadata, TTL, egress rules, env and token. */
  private async claim(warm: Sandbox, plan: SandboxPlan): Promise<Sandbox> {
    const started = performance.now();
    const { record } = warm;
    const wanted = plan.record;
    const now = Date.now();
    Object.assign(record, {
      id: wanted.id,
      timeoutSec: wanted.timeoutSec,
      onTimeout: wanted.onTimeout,
      metadata: wanted.metadata,
      allowOut: wanted.allowOut,
      denyOut: wanted.denyOut,
      envdAccessToken: wanted.envdAccessToken,
      createdAt: now,
      lastActiveAt: now,
    });
    delete record.warm;
    if (record.allowOut.length > 0 || record.denyOut.length > 0) {
      // Replaces the default chain in one atomic batch; the sandbox has run nothing of anyone's yet.
      await this.options.firewall.addSandbox(warm.network, parseEgressRules(record.allowOut, record.denyOut), new Cleanup());
    }
    // Always: the claimed sandbox's token (or none, if its creator asked for none) replaces the boot token.
    await warm.envd.init({ envVars: plan.envVars, accessToken: record.envdAccessToken, defaultUser: record.defaultUser });
    await writeRecord(warm.dir, record);
    warm.fromWarmPool = true;
    this.register(warm);
    log.info({ sandboxId: record.id, runtimeId: record.runtimeId, template: record.template, claimMs: Math.round(performance.now() - started) }, "sandbox created from the warm pool");
    return warm;
  }

  /** Whether `sandboxes` more idle sandboxes would leave the host its reserve, and what is available. */
  private async memoryFor(sandboxes: number): Promise<{ fits: boolean; availableMb: number }> {
    const { availableMb } = await hostMemoryMb();
    return { fits: availableMb - sandboxes * this.options.sandboxBaseCostMb >= this.options.memoryReserveMb, availableMb };
  }

  /** Admits a create that boots: refuses when the host is short, after giving back warm sandboxes. */
  private async ensureCapacity(): Promise<void> {
    const { pool, memoryReserveMb, sandboxBaseCostMb } = this.options;
    for (;;) {
      const { fits, availableMb } = await this.memoryFor(1);
      if (fits && pool.used < pool.total) return;
      if (await this.warmPool.evictOne()) continue;
      if (fits) return; // allocate() reports the exhausted pool
      throw new HostCapacityError(
        `not enough memory on this host: ${availableMb} MiB available, a sandbox needs ~${sandboxBaseCostMb} MiB and ${memoryReserveMb} MiB stay reserved`,
      );
    }
  }

  /** A pooled sandbox is kept only while a create would still fit beside it. */
  private async hasRoomForWarm(): Promise<boolean> {
    const { pool } = this.options;
    return (await this.memoryFor(2)).fits && pool.used + 1 < pool.total;
  }

  private async buildWarm(template: string): Promise<Sandbox> {
    const runtimeId = this.freeRuntimeId(newSandboxId());
    const plan = await this.plan(runtimeId, { template });
    plan.record.warm = true;
    const phases: Record<string, number> = {};
    const sandbox = await this.build(plan, phases);
    log.debug({ runtimeId, template, phases }, "warm sandbox built");
    return sandbox;
  }

  /** The sandbox id itself, unless a sandbox's parts on this host already carry that name. */
  private freeRuntimeId(sandboxId: string): string {
    const taken = this.runtimeIds();
    if (!taken.has(sandboxId)) return sandboxId;
    let runtimeId: string;
    do runtimeId = newSandboxId();
    while (taken.has(runtimeId));
    return runtimeId;
  }

  /** Deletes a template, first giving back the warm sandboxes that hold it and waiting for its boot snapshots in the making. */
  async deleteTemplate(name: string): Promise<void> {
    await Promise.all([...this.savingBoots].filter(([id]) => id.startsWith(`${name}/`)).map(([, saving]) => saving));
    await this.warmPool.withTemplateReleased(name, () => this.options.templates.delete(name));
  }

  /**
   * After a VM booted from a plain template: in the background, boots one more of the same shape,
   * saves its memory and disk as soon as envd answers (before any /init: no one's token, env or
   * files are in it) into the template's `vm-boot/`, and removes it. Later creates of that shape
   * restore it (build), as from a memory-snapshot template. Best effort: a failure is logged and
   * creates keep booting.
   */
  private saveBootSnapshotLater(template: string, driver: RuntimeDriver, wanted: { key: string; shape: VmShape }): void {
    const id = `${template}/${wanted.key}`;
    if (this.closing || this.savingBoots.has(id)) return;
    const saving = this.saveBootSnapshot(template, driver, wanted)
      .catch((err: unknown) => log.warn({ template, key: wanted.key, err }, "saving the template's boot snapshot failed; sandboxes from it boot"))
      .finally(() => this.savingBoots.delete(id));
    this.savingBoots.set(id, saving);
  }

  private async saveBootSnapshot(template: string, driver: RuntimeDriver, { key, shape }: { key: string; shape: VmShape }): Promise<void> {
    const { templates } = this.options;
    const target = templates.bootStateDir(template, key);
    if (templates.bootState(template, key)) return;
    if (!(await this.hasRoomForWarm())) {
      log.info({ template, key }, "no room on this host to save a boot snapshot now");
      return;
    }
    const started = performance.now();
    const runtimeId = this.freeRuntimeId(`boot-${newSandboxId().slice(0, 12)}`);
    const plan = await this.plan(runtimeId, { template, runtime: driver.name, ...shape });
    plan.record.warm = true; // not registered, keeps its boot token, not taken back after a restart
    plan.coldBoot = true;
    const vm = await this.build(plan, {});
    this.bootSnapshotVms.add(vm);
    const staging = `${target}.saving-${runtimeId}`;
    let saved = false;
    try {
      await mkdir(staging, { recursive: true, mode: 0o700 });
      await this.flushWrites(vm);
      vm.envd.dropIdleConnections();
      await driver.saveState!(runtimeId, path.join(staging, "memory.state"), { runOnFailure: false });
      // -U: qemu holds the image's lock; the VM is stopped and its disk flushed.
      await runCommand("qemu-img", ["convert", "-U", "-O", "raw", vm.disk.imagePath, path.join(staging, BLOCK_IMAGE_NAME)], { timeoutMs: 10 * 60_000 });
      const state: Omit<VmTemplateState, "stateFile"> = {
        identity: await driver.stateIdentity!(),
        memoryMb: vm.record.memoryMb,
        vcpus: vm.record.vcpus,
        diskSizeMb: vm.disk.sizeMb,
        envdAccessToken: vm.record.envdAccessToken,
        sourceSandbox: runtimeId,
      };
      await writeFile(path.join(staging, "vm.json"), JSON.stringify(state, null, 2), { mode: 0o600 });
      saved = true;
    } finally {
      try {
        this.bootSnapshotVms.delete(vm);
        await this.teardown(vm);
        // In place only once its VM is gone: a boot snapshot that is there is complete and alone.
        if (saved) await rename(staging, target);
      } finally {
        await rm(staging, { recursive: true, force: true });
      }
    }
    log.info({ template, key, ms: Math.round(performance.now() - started) }, "template boot snapshot saved");
  }

  /** Validates a create request against the host and decides every value; creates nothing. */
  private async plan(sandboxId: string, request: CreateSandboxOptions): Promise<SandboxPlan> {
    const runtime = (request.runtime || this.options.defaultRuntime) as RuntimeName;
    const driver = this.options.drivers.get(runtime);
    if (!driver) {
      throw new InvalidRequestError(`runtime ${JSON.stringify(request.runtime)} is not available on this host (available: ${[...this.options.drivers.keys()].join(", ")})`);
    }
    const template = this.options.templates.get(request.template); // not found / invalid name throw here
    const cpus = availableParallelism();
    const vcpus = request.vcpus || DEFAULTS.vcpus;
    if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > cpus) {
      throw new InvalidRequestError(`vcpus must be a whole number from 1 to ${cpus} (this host's CPUs), got ${vcpus}`);
    }
    const memoryMb = request.memoryMb || DEFAULTS.memoryMb;
    const { totalMb } = await hostMemoryMb();
    if (!Number.isInteger(memoryMb) || memoryMb < MIN_MEMORY_MB || memoryMb > totalMb) {
      throw new InvalidRequestError(`memory_mb must be a whole number from ${MIN_MEMORY_MB} to ${totalMb} (this host's memory), got ${memoryMb}`);
    }
    const timeoutSec = checkTimeout(request.timeoutSec ?? 0);
    const diskSizeMb = request.diskSizeMb || DEFAULTS.diskSizeMb;
    const writableMb = writableLayerMb(diskSizeMb, this.options.templates.sizeBytes(template.name));
    const allowOut = request.allowOut ?? [];
    const denyOut = request.denyOut ?? [];
    parseEgressRules(allowOut, denyOut); // throws InvalidEgressRuleError naming the bad entry
    const now = Date.now();
    const record: SandboxRecord = {
      id: sandboxId,
      runtimeId: sandboxId,
      template: template.name,
      runtime,
      vcpus,
      memoryMb,
      diskSizeMb,
      timeoutSec,
      onTimeout: request.onTimeout ?? "pause",
      metadata: request.metadata ?? {},
      allowOut,
      denyOut,
      slot: -1,
      envdAccessToken: request.envdAccessToken ?? "",
      defaultUser: "root",
      status: "running",
      createdAt: now,
      lastActiveAt: now,
    };
    return { record, driver, envVars: request.envVars ?? {}, writableMb };
  }

  /** Builds the sandbox; `phases` gets how long each part took (ms), for the log and the benchmark. */
  private async build(plan: SandboxPlan, phases: Record<string, number>): Promise<Sandbox> {
    let mark = performance.now();
    const phase = (name: string) => {
      const now = performance.now();
      phases[name] = Math.round(now - mark);
      mark = now;
    };
    const { record, driver } = plan;
    const { templates, pool, firewall } = this.options;
    const dir = path.join(this.sandboxesDir, record.runtimeId);
    const cleanup = new Cleanup();
    // envd answers only to this until /init: a request that reaches the address first (one meant for
    // a sandbox that had it before) is refused. A warm sandbox keeps it as its token until claimed.
    const bootToken = randomBytes(24).toString("hex");
    if (record.warm) record.envdAccessToken = bootToken;
    return cleanup.undoOnFailure(async () => {
      record.slot = pool.allocate(); // SlotsExhaustedError is a HostCapacityError: resource_exhausted
      cleanup.defer(`release slot ${record.slot}`, () => pool.release(record.slot));
      await mkdir(dir, { recursive: true, mode: 0o700 });
      cleanup.defer(`remove ${dir}`, () => removeUnlessMounted(dir));
      templates.acquire(record.template, record.runtimeId);
      cleanup.defer(`release template ${record.template}`, () => templates.release(record.template, record.runtimeId));
      phase("slotAndDir");
      const rootfsDir = path.join(dir, "rootfs");
      let disk: SandboxDisk;
      let rootfs: BootRequest["rootfs"];
      let restore: VmTemplateState | undefined;
      let bootSnapshotWanted: Sandbox["bootSnapshotWanted"];
      if (driver.rootfsKind === "block") {
        // A VM: its disk is an overlay of the template's image that the driver makes; the guest's
        // init writes its hostname and resolv.conf. Nothing is mounted on the host. A template with
        // a memory snapshot this driver can restore starts from it: same memory, vCPUs and disk size.
        let image = await templates.blockImage(record.template);
        const saved = templates.vmState(record.template);
        const identity = driver.stateIdentity && driver.saveState ? await driver.stateIdentity() : undefined;
        if (saved && identity !== undefined && saved.identity === identity) {
          restore = saved;
          Object.assign(record, { memoryMb: saved.memoryMb, vcpus: saved.vcpus, diskSizeMb: saved.diskSizeMb });
        } else if (saved) log.warn({ template: record.template }, "the template's memory snapshot was taken with another guest or accelerator; booting instead");
        let diskSizeMb = restore ? restore.diskSizeMb : Math.max(record.diskSizeMb, Math.ceil((await stat(image)).size / 2 ** 20));
        if (!saved && identity !== undefined && this.options.vmBootSnapshots !== false && !plan.coldBoot) {
          // A plain template: its boot snapshot for this shape, if one was saved under this guest.
          const shape = { memoryMb: record.memoryMb, vcpus: record.vcpus, diskSizeMb };
          const key = bootSnapshotKey(driver.name, shape, identity);
          const boot = templates.bootState(record.template, key);
          if (boot && boot.identity === identity) {
            restore = boot;
            image = boot.image;
            diskSizeMb = boot.diskSizeMb;
          } else bootSnapshotWanted = { key, shape };
        }
        disk = vmDiskOf(dir, diskSizeMb);
        rootfs = { kind: "block", path: image, disk: { path: disk.imagePath, sizeMb: disk.sizeMb } };
        record.defaultUser = (await hasUserInLayers(templates.layers(record.template), "user")) ? "user" : "root";
        phase("disk");
      } else {
        disk = await createDisk(dir, plan.writableMb, cleanup);
        phase("disk");
        await mountRootfs(templates.layers(record.template), disk.mountPoint, rootfsDir, cleanup);
        record.defaultUser = (await hasUser(rootfsDir, "user")) ? "user" : "root";
        await prepareEtc(rootfsDir, record.id, this.options.dnsServers);
        rootfs = { kind: "directory", path: rootfsDir };
      }
      phase("rootfs");
      const network = await createNetwork(record.runtimeId, record.slot, pool, cleanup);
      phase("network");
      await firewall.addSandbox(network, parseEgressRules(record.allowOut, record.denyOut), cleanup);
      phase("firewall");
      await driver.boot(
        {
          sandboxId: record.runtimeId,
          sandboxDir: dir,
          rootfs,
          netnsPath: network.namespacePath,
          sandboxAddress: network.sandboxAddress,
          hostname: record.id,
          vcpus: record.vcpus,
          memoryMb: record.memoryMb,
          envdBootToken: bootToken,
          restoreFrom: restore?.stateFile,
        },
        cleanup,
      );
      phase("runtimeBoot");
      // A restored envd answers to the token of the sandbox it was saved from, until /init.
      const firstToken = restore ? restore.envdAccessToken || undefined : bootToken;
      const envd = new EnvdClient({ baseUrl: `http://${network.sandboxAddress}:${ENVD_PORT}`, accessToken: firstToken, defaultUser: record.defaultUser });
      cleanup.defer("close envd client", () => envd.close());
      await envd.waitUntilReady({ timeoutMs: ENVD_READY_TIMEOUT_MS, gone: () => stoppedWhy(driver, record.runtimeId) }).catch(async (err: unknown) => {
        throw await notReadyError(err, driver, record.runtimeId, dir);
      });
      phase("envdReady");
      // The sandbox's own token replaces the boot token ("" leaves envd open, as the creator asked);
      // a warm sandbox keeps its boot token until it is claimed. A restored one also gets the time.
      if (restore) {
        // It wakes as the VM it was saved from: its own name too.
        await envd.init({ envVars: plan.envVars, accessToken: record.envdAccessToken, defaultUser: record.defaultUser, timestamp: new Date().toISOString(), hostname: record.id });
      } else if (record.envdAccessToken !== bootToken || Object.keys(plan.envVars).length > 0) {
        await envd.init({ envVars: plan.envVars, accessToken: record.envdAccessToken, defaultUser: record.defaultUser });
      }
      await writeRecord(dir, record);
      phase("initAndRecord");
      const sandbox: Sandbox = { record, dir, network, disk, rootfsDir, envd, driver, bootSnapshotWanted };
      if (!record.warm) this.register(sandbox);
      return sandbox;
    });
  }

  /** Makes a built or rediscovered sandbox known: listed, addressable, sampled. */
  private register(sandbox: Sandbox): void {
    this.sandboxes.set(sandbox.record.id, sandbox);
    this.options.metrics.track(sandbox.record.id, { cgroupPath: sandbox.driver.cgroupPath(sandbox.record.runtimeId), diskBytes: () => diskUsageBytes(sandbox.disk) });
  }

  async destroy(sandboxId: string): Promise<void> {
    await this.withLock(sandboxId, async () => {
      const sandbox = this.get(sandboxId);
      await this.teardown(sandbox);
    });
  }

  /** Removes everything a sandbox holds, from its record alone; each step is safe to repeat. */
  private async teardown(sandbox: Sandbox): Promise<void> {
    const { record, dir } = sandbox;
    // First, alone: while the sandbox may still run, its disk, mounts and network stay, and so
    // does the sandbox in the list, so a failed destroy can be retried instead of leaking a
    // running sandbox whose parts were taken away.
    await sandbox.driver.stop(record.runtimeId);
    if (this.sandboxes.get(record.id) === sandbox) {
      this.sandboxes.delete(record.id);
      this.options.metrics.untrack(record.id);
      this.onUnreachable?.(record.id, true);
    }
    sandbox.envd.close();
    const cleanup = new Cleanup();
    // Registered in creation order; run() undoes newest first.
    cleanup.defer(`release slot ${record.slot}`, () => this.options.pool.release(record.slot));
    cleanup.defer(`remove ${dir}`, () => removeUnlessMounted(dir));
    cleanup.defer(`release template ${record.template}`, () => this.options.templates.release(record.template, record.runtimeId));
    cleanup.defer("destroy disk", () => destroyDisk(sandbox.disk));
    cleanup.defer("unmount rootfs", () => unmountRootfs(sandbox.rootfsDir));
    cleanup.defer("destroy network", () => destroyNetwork(sandbox.network));
    cleanup.defer("remove firewall rules", () => this.options.firewall.removeSandbox(sandbox.network));
    await cleanup.run();
    log.info({ sandboxId: record.id, runtimeId: record.runtimeId }, "sandbox destroyed");
  }

  /** Freezes the sandbox, or with `hibernate` saves its memory to disk and ends its process (VM runtimes). */
  async pause(sandboxId: string, options: { hibernate?: boolean } = {}): Promise<void> {
    await this.withLock(sandboxId, async () => {
      const sandbox = this.get(sandboxId);
      if (options.hibernate) await this.hibernateLocked(sandbox);
      else await this.pauseLocked(sandbox);
    });
  }

  private async pauseLocked(sandbox: Sandbox): Promise<void> {
    if (sandbox.record.status !== "running") return; // paused, or hibernated: frozen already
    await sandbox.driver.pause(sandbox.record.runtimeId);
    await this.setStatus(sandbox, "paused");
    this.onUnreachable?.(sandbox.record.id, false);
  }

  private async hibernateLocked(sandbox: Sandbox): Promise<void> {
    const { driver, record } = sandbox;
    if (!driver.hibernate) throw new InvalidRequestError(`sandbox ${record.id} runs on ${driver.name}, which cannot hibernate (qemu can); pause it instead`);
    if (record.status === "hibernated") return;
    this.onUnreachable?.(record.id, false);
    // The namespace stays, so envd's kept-alive connections from here survive: the guest's ends
    // come back with its memory.
    await driver.hibernate(record.runtimeId);
    await this.setStatus(sandbox, "hibernated");
  }

  async resume(sandboxId: string, timeoutSec?: number): Promise<Sandbox> {
    return this.withLock(sandboxId, async () => {
      const sandbox = this.get(sandboxId);
      if (timeoutSec !== undefined) sandbox.record.timeoutSec = checkTimeout(timeoutSec);
      if (sandbox.record.status === "paused") await sandbox.driver.resume(sandbox.record.runtimeId);
      if (sandbox.record.status === "hibernated") await this.restoreLocked(sandbox);
      this.touch(sandbox);
      await this.setStatus(sandbox, "running");
      return sandbox;
    });
  }

  /** Brings a hibernated VM back, then sets its clock: it stood still while the VM was on disk. */
  private async restoreLocked(sandbox: Sandbox): Promise<void> {
    await sandbox.driver.restore!(sandbox.record.runtimeId);
    await sandbox.envd.waitUntilReady({ timeoutMs: ENVD_READY_TIMEOUT_MS, gone: () => stoppedWhy(sandbox.driver, sandbox.record.runtimeId) }).catch(async (err: unknown) => {
      throw await notReadyError(err, sandbox.driver, sandbox.record.runtimeId, sandbox.dir);
    });
    await sandbox.envd.init({ timestamp: new Date().toISOString() });
  }

  async setTimeout(sandboxId: string, timeoutSec: number): Promise<void> {
    await this.withLock(sandboxId, async () => {
      const sandbox = this.get(sandboxId);
      sandbox.record.timeoutSec = checkTimeout(timeoutSec);
      this.touch(sandbox);
      await writeRecord(sandbox.dir, sandbox.record);
    });
  }

  private async setStatus(sandbox: Sandbox, status: SandboxStatus): Promise<void> {
    sandbox.record.status = status;
    await writeRecord(sandbox.dir, sandbox.record);
  }

  /**
   * Holds the sandbox's lock with the sandbox frozen (so its files are still) while `copy` runs,
   * then destroys it or thaws it. Used by snapshot and flatten.
   */
  async whileFrozen<T>(sandboxId: string, keepRunning: boolean, copy: (sandbox: Sandbox) => Promise<T>): Promise<T> {
    return this.withLock(sandboxId, async () => {
      const sandbox = this.get(sandboxId);
      // Checked before anything is frozen: the sandbox keeps running, untouched. (A VM's snapshot is snapshotVm.)
      if (sandbox.driver.rootfsKind === "block") {
        throw new SandboxStateError(`sandbox ${sandboxId} runs on ${sandbox.driver.name}: its files are on a VM disk; flattening is for gVisor sandboxes (snapshot it instead)`);
      }
      const wasPaused = sandbox.record.status === "paused";
      if (!wasPaused) await this.flushWrites(sandbox);
      await this.pauseLocked(sandbox);
      try {
        return await copy(sandbox);
      } finally {
        if (!keepRunning) await this.teardown(sandbox);
        else if (!wasPaused) {
          await sandbox.driver.resume(sandbox.record.runtimeId);
          await this.setStatus(sandbox, "running");
        }
      }
    });
  }

  /**
   * A template with memory from a running (or paused) VM sandbox: its state saved while it is
   * stopped, its disk flattened into the template's image (and its files into the template's
   * rootfs, so gVisor can boot it too); then the sandbox runs on, or is destroyed.
   */
  async snapshotVm(sandboxId: string, name: string, keepRunning: boolean, teamId: string): Promise<TemplateInfo> {
    return this.withLock(sandboxId, async () => {
      const sandbox = this.get(sandboxId);
      const { driver, record } = sandbox;
      if (!driver.saveState || !driver.stateIdentity) throw new SandboxStateError(`${driver.name} sandboxes cannot be snapshotted with memory`);
      if (record.status === "hibernated") throw new SandboxStateError(`sandbox ${sandboxId} is hibernated; resume it first`);
      const identity = await driver.stateIdentity();
      // What the guest wrote reaches its disk (the template's files are read from it), then no copy
      // of this VM may wake up holding a connection to this host's client.
      if (record.status === "running") await this.flushWrites(sandbox);
      sandbox.envd.dropIdleConnections();
      const wasPaused = record.status === "paused";
      let saved = false;
      try {
        return await this.options.templates.createFrom(name, { teamId, kind: "image", metadata: { sourceSandbox: record.id, runtime: driver.name, memory: "true" } }, async (rootfsDir) => {
          const templateDir = path.dirname(rootfsDir);
          const stateDir = path.join(templateDir, VM_STATE_DIR);
          await mkdir(stateDir, { mode: 0o700 });
          await driver.saveState!(record.runtimeId, path.join(stateDir, "memory.state"), { runOnFailure: !wasPaused });
          saved = true;
          const image = path.join(templateDir, BLOCK_IMAGE_NAME);
          // -U: qemu holds the image's lock; the VM is stopped and its disk flushed.
          await runCommand("qemu-img", ["convert", "-U", "-O", "raw", sandbox.disk.imagePath, image], { timeoutMs: 10 * 60_000 });
          await extractFiles(image, rootfsDir);
          const state: Omit<VmTemplateState, "stateFile"> = {
            identity,
            memoryMb: record.memoryMb,
            vcpus: record.vcpus,
            diskSizeMb: sandbox.disk.sizeMb,
            envdAccessToken: record.envdAccessToken,
            sourceSandbox: record.id,
          };
          await writeFile(path.join(stateDir, "vm.json"), JSON.stringify(state, null, 2), { mode: 0o600 });
        });
      } finally {
        if (!keepRunning) await this.teardown(sandbox);
        else if (saved && !wasPaused) await driver.resume(record.runtimeId);
      }
    });
  }

  /** gVisor may hold written data in the sentry: ask the sandbox to sync before copying its files. */
  private async flushWrites(sandbox: Sandbox): Promise<void> {
    await sandbox.envd.exec({ cmd: "sync", user: "root", timeoutMs: 30_000 }).catch((err: unknown) => {
      log.warn({ sandboxId: sandbox.record.id, err }, "sync before snapshot failed; copying what reached the disk");
    });
  }

  /**
   * TTL reaper: pauses sandboxes idle for longer than their timeout, or destroys those created
   * with onTimeout "kill" (reported as exited, like a sandbox that stopped by itself).
   */
  async reapIdle(now = Date.now()): Promise<void> {
    for (const sandbox of this.list()) {
      const { record } = sandbox;
      if (record.status !== "running" || record.timeoutSec <= 0) continue;
      if (now - record.lastActiveAt < record.timeoutSec * 1000) continue;
      try {
        await this.withLock(record.id, async () => {
          // Re-checked under the lock: a request may have touched or changed it meanwhile.
          if (!this.sandboxes.has(record.id) || record.status !== "running") return;
          if (Date.now() - record.lastActiveAt < record.timeoutSec * 1000) return;
          const idleSec = Math.round((Date.now() - record.lastActiveAt) / 1000);
          if (record.onTimeout === "kill") {
            // Reported once it is gone, as reapExited does: whoever reads the report finds nothing left.
            await this.teardown(sandbox);
            this.exited.push({ sandboxId: record.id, reason: `killed after its timeout (${record.timeoutSec} s without activity)` });
            log.info({ sandboxId: record.id, idleSec }, "sandbox killed after its timeout");
            return;
          }
          // A VM that can hibernates: an idle sandbox should hold no host memory (resume restores it).
          if (sandbox.driver.hibernate) await this.hibernateLocked(sandbox);
          else await this.pauseLocked(sandbox);
          this.autoPaused.push(record.id);
          log.info({ sandboxId: record.id, idleSec }, "sandbox auto-paused");
        });
      } catch (err) {
        log.error({ sandboxId: record.id, onTimeout: record.onTimeout ?? "pause", err }, "acting on a sandbox's timeout failed");
      }
    }
  }

  /** Finds sandboxes whose runtime stopped by itself (OOM, crash), records why, and cleans them up. */
  async reapExited(): Promise<void> {
    const byDriver = new Map<RuntimeDriver, Set<string>>();
    const alive = async (sandbox: Sandbox) => {
      if (!byDriver.has(sandbox.driver)) {
        const running = (await sandbox.driver.list()).filter((s) => s.status !== "stopped").map((s) => s.id);
        byDriver.set(sandbox.driver, new Set(running));
      }
      return byDriver.get(sandbox.driver)!.has(sandbox.record.runtimeId);
    };
    for (const sandbox of this.warmPool.all()) {
      if ((await alive(sandbox)) || !this.warmPool.remove(sandbox)) continue;
      log.warn({ runtimeId: sandbox.record.runtimeId }, "a warm sandbox stopped by itself; replacing it");
      await this.teardown(sandbox).catch((err: unknown) => log.error({ runtimeId: sandbox.record.runtimeId, err }, "cleaning up a dead warm sandbox failed"));
    }
    for (const sandbox of this.list()) {
      if (await alive(sandbox)) continue;
      await this.withLock(sandbox.record.id, async () => {
        if (this.sandboxes.get(sandbox.record.id) !== sandbox) return;
        // Asked again under the lock: what held it (a hibernate, a resume) may have changed what runs.
        const now = await sandbox.driver.list();
        if (now.some((s) => s.id === sandbox.record.runtimeId && s.status !== "stopped")) return;
        const reason = (await sandbox.driver.exitReason(sandbox.record.runtimeId)) ?? "the sandbox stopped unexpectedly";
        log.warn({ sandboxId: sandbox.record.id, reason }, "sandbox exited");
        // Reported once it is gone, so whoever reads the report finds nothing of it left.
        try {
          await this.teardown(sandbox);
        } finally {
          this.exited.push({ sandboxId: sandbox.record.id, reason });
        }
      }).catch((err: unknown) => log.error({ sandboxId: sandbox.record.id, err }, "cleaning up an exited sandbox failed"));
    }
  }

  /**
   * After an agent restart: takes back every sandbox whose record and runtime both survived, and
   * removes what is half there (a record without a running sandbox, a sandbox without a record).
   */
  async rediscover(): Promise<{ restored: string[]; removed: string[] }> {
    const restored: string[] = [];
    const removed: string[] = [];
    await mkdir(this.sandboxesDir, { recursive: true });
    const alive = new Map<string, RuntimeDriver>();
    for (const driver of this.options.drivers.values()) {
      for (const found of await driver.list()) {
        if (found.status === "stopped") await driver.stop(found.id);
        else alive.set(found.id, driver);
      }
    }
    for (const id of await readdir(this.sandboxesDir)) {
      const dir = path.join(this.sandboxesDir, id);
      const record = await readRecord(dir);
      const sandbox = record && this.handlesFor(record, dir);
      // A warm sandbox is not taken back: the pool boots fresh ones once the agent is up.
      if (sandbox && !record.warm && alive.get(record.runtimeId) === sandbox.driver) {
        try {
          this.options.pool.reserve(record.slot);
          this.options.templates.acquire(record.template, record.runtimeId);
        } catch (err) {
          log.error({ sandboxId: id, err }, "cannot take a surviving sandbox back; removing it");
          await this.teardown(sandbox).catch(() => undefined);
          removed.push(id);
          continue;
        }
        // Its chain survived in the kernel; registering again (an atomic replace) also resumes
        // the re-resolution of its egress domains.
        await this.options.firewall.addSandbox(sandbox.network, parseEgressRules(record.allowOut, record.denyOut), new Cleanup());
        this.register(sandbox);
        alive.delete(record.runtimeId);
        restored.push(record.id);
        continue;
      }
      // Half there: tear down whatever exists of it.
      if (sandbox) {
        alive.delete(record.runtimeId);
        await this.teardown(sandbox).catch((err: unknown) => log.error({ sandboxId: id, err }, "removing a leftover sandbox failed"));
      } else {
        await removeLeftoverDir(dir).catch((err: unknown) => log.error({ dir, err }, "removing a leftover sandbox directory failed"));
      }
      removed.push(id);
    }
    for (const [id, driver] of alive) {
      await driver.stop(id).catch((err: unknown) => log.error({ sandboxId: id, err }, "stopping an unknown sandbox failed"));
      removed.push(id);
    }
    log.info({ restored, removed }, "sandboxes rediscovered");
    return { restored, removed };
  }

  private handlesFor(record: SandboxRecord, dir: string): Sandbox | undefined {
    const driver = this.options.drivers.get(record.runtime);
    if (!driver || !isSandboxId(record.id) || !isSandboxId(record.runtimeId) || path.basename(dir) !== record.runtimeId) return undefined;
    const network = planNetwork(record.runtimeId, record.slot, this.options.pool);
    const envd = new EnvdClient({
      baseUrl: `http://${network.sandboxAddress}:${ENVD_PORT}`,
      accessToken: record.envdAccessToken || undefined,
      defaultUser: record.defaultUser,
    });
    const disk = driver.rootfsKind === "block" ? vmDiskOf(dir, record.diskSizeMb) : diskOf(dir);
    return { record, dir, network, disk, rootfsDir: path.join(dir, "rootfs"), envd, driver };
  }

  /** Destroys every sandbox (Terminate, shutdown of a host being removed). */
  async destroyAll(): Promise<void> {
    // A create still booting would finish after the sweep and leave its sandbox (mounts, network,
    // processes) behind a departed agent: let it finish first, then destroy it with the rest.
    this.closing = true;
    await Promise.all(this.creating);
    await Promise.all(this.savingBoots.values());
    await this.warmPool.drain();
    const results = await Promise.allSettled(this.list().map((sandbox) => this.destroy(sandbox.record.id)));
    for (const result of results) if (result.status === "rejected") log.error({ err: result.reason }, "destroy during terminate failed");
  }

  /** The names the parts of every sandbox here carry (warm ones included), for orphan sweeps. */
  runtimeIds(): Set<string> {
    return new Set([...this.list(), ...this.warmPool.all(), ...this.bootSnapshotVms].map((sandbox) => sandbox.record.runtimeId));
  }
}

/** Names a boot snapshot: the runtime, the shape its memory fixes, and the guest it runs (hashed). */
function bootSnapshotKey(runtime: string, shape: VmShape, identity: string): string {
  const guest = createHash("sha256").update(identity).digest("hex").slice(0, 12);
  return `${runtime}-${shape.memoryMb}m-${shape.vcpus}c-${shape.diskSizeMb}d-${guest}`;
}

function checkTimeout(timeoutSec: number): number {
  if (!Number.isInteger(timeoutSec) || timeoutSec < 0 || timeoutSec > MAX_TIMEOUT_SEC) {
    throw new InvalidRequestError(`timeout_sec must be a whole number from 0 to ${MAX_TIMEOUT_SEC}, got ${timeoutSec}`);
  }
  return timeoutSec;
}

/** Lowercase letters and digits, 20 long, like E2B's sandbox ids. */
export function newSandboxId(): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  return [...randomBytes(20)].map((byte) => alphabet[byte % alphabet.length]).join("");
}

/**
 * Copies the files of a VM's disk image into `rootfsDir`, without mounting it: from a scratch copy
 * whose journal e2fsck replays first (the image itself must stay exactly as the saved memory knows
 * it), read with debugfs.
 */
async function extractFiles(image: string, rootfsDir: string): Promise<void> {
  const scratch = `${image}.extract`;
  try {
    await runCommand("cp", ["--sparse=always", image, scratch], { timeoutMs: 10 * 60_000 });
    // e2fsck exits 1 when it fixed something (the journal replayed): that is success here.
    await runCommand("e2fsck", ["-fy", scratch], { timeoutMs: 10 * 60_000 }).catch((err: unknown) => {
      if (!/exited with 1\b/.test((err as Error).message)) throw err;
    });
    await runCommand("debugfs", ["-R", `rdump / ${rootfsDir}`, scratch], { timeoutMs: 10 * 60_000 });
    await rm(path.join(rootfsDir, "lost+found"), { recursive: true, force: true });
  } finally {
    await rm(scratch, { force: true });
  }
}

/** hasUser for a template not mounted anywhere: the top-most layer that has an /etc/passwd decides. */
async function hasUserInLayers(layers: string[], name: string): Promise<boolean> {
  for (const layer of layers) {
    const passwd = await readFile(path.join(layer, "etc", "passwd"), "utf8").catch(() => undefined);
    if (passwd !== undefined) return passwd.split("\n").some((line) => line.startsWith(`${name}:`));
  }
  return false;
}

async function hasUser(rootfsDir: string, name: string): Promise<boolean> {
  const passwd = await readFile(path.join(rootfsDir, "etc", "passwd"), "utf8").catch(() => "");
  return passwd.split("\n").some((line) => line.startsWith(`${name}:`));
}

/** resolv.conf and hosts inside the sandbox: its DNS servers and its own hostname. */
async function prepareEtc(rootfsDir: string, hostname: string, dnsServers: string[]): Promise<void> {
  const etc = path.join(rootfsDir, "etc");
  await mkdir(etc, { recursive: true });
  // A symlink here (e.g. to systemd-resolved's file) would be followed out of the sandbox's view: replace it.
  await rm(path.join(etc, "resolv.conf"), { force: true });
  await writeFile(path.join(etc, "resolv.conf"), resolvConf(dnsServers));
  await rm(path.join(etc, "hosts"), { force: true });
  await writeFile(path.join(etc, "hosts"), `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t${hostname}\n`);
}

/** A sandbox directory without a usable record: unmount whatever is mounted in it, then remove it. */
async function removeLeftoverDir(dir: string): Promise<void> {
  await unmountRootfs(path.join(dir, "rootfs"));
  await destroyDisk(diskOf(dir));
  await removeUnlessMounted(dir);
}

/**
 * envd's not-ready error with what the runtime says of the sandbox (running, gone, why it
 * stopped) and the end of its console: what an operator needs to tell a slow start from a dead one.
 */
async function notReadyError(err: unknown, driver: RuntimeDriver, runtimeId: string, dir: string): Promise<unknown> {
  if (!(err instanceof Error)) return err;
  const stopped = /will never answer/.test(err.message) ? undefined : await stoppedWhy(driver, runtimeId);
  const tail = (await readFile(driver.consoleLog(dir), "utf8").catch(() => "")).slice(-600);
  err.message = `${err.message}${stopped ? `; ${stopped}` : ""}; the sandbox's console ends ${JSON.stringify(tail)}`;
  return err;
}

/** Why the runtime no longer runs the sandbox (gone, stopped, and the reason when it knows one); undefined while it runs or is frozen. */
async function stoppedWhy(driver: RuntimeDriver, runtimeId: string): Promise<string | undefined> {
  const listed = await driver.list().then((all) => all.find((s) => s.id === runtimeId)?.status ?? "gone", () => undefined);
  if (listed !== "gone" && listed !== "stopped") return undefined;
  const reason = await driver.exitReason(runtimeId).catch(() => undefined);
  return `the ${driver.name} sandbox is ${listed}${reason ? ` (${reason})` : ""}`;
}
