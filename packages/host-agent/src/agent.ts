// The host agent assembled: probe the runtimes, open the template store, set up the firewall,
// take back the sandboxes that survived a restart, sweep what they left, then serve RPCs and the
// port proxy and run the reaper and the metrics sampler.
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { raiseHostLimits } from "./host/limits.js";
import { logger } from "./logging/logger.js";
import { startPortProxy } from "./proxy/port-proxy.js";
import { capConsoleLogs } from "./sandbox/logs/console-log.js";
import { SandboxManager } from "./sandbox/manager.js";
import { MetricsSampler } from "./sandbox/metrics/sampler.js";
import { Firewall } from "./sandbox/network/firewall.js";
import { removeOrphanNetworks } from "./sandbox/network/orphans.js";
import { SlotAllocator } from "./sandbox/network/slots.js";
import type { WarmPoolTarget } from "./sandbox/warm-pool.js";
import type { RuntimeDriver, RuntimeName, RuntimeProbe } from "./sandbox/runtime/driver.js";
import { FirecrackerRuntime } from "./sandbox/runtime/firecracker.js";
import { GvisorRuntime } from "./sandbox/runtime/gvisor.js";
import { QemuRuntime, type Accelerator } from "./sandbox/runtime/qemu.js";
import { TemplateStore } from "./sandbox/storage/templates.js";
import { startRpcServer } from "./server/server.js";
import { hostAgentService } from "./server/service.js";

export interface AgentConfig {
  /** Templates, sandboxes and runtime state live here. */
  dataDir: string;
  /** envd's self-contained directory (build/opt-wrenn), mounted read-only at /opt/wrenn. */
  envdDir: string;
  /** The VM guest (build/vm: kernel, initramfs, envd's image); default: `vm` beside envdDir. */
  vmDir?: string;
  /** Force the qemu driver's accelerator; by default KVM where a probe boots a guest, else TCG. */
  qemuAccelerator?: Accelerator;
  /** The host token every RPC must carry. */
  token: string;
  host: string;
  port: number;
  proxyHost: string;
  proxyPort: number;
  /** Sandbox addresses: one /30 per sandbox out of this pool. */
  poolCidr: string;
  dnsServers: string[];
  /** The nftables table (inet) the agent owns. */
  firewallTable: string;
  reaperIntervalMs: number;
  metricsIntervalMs: number;
  memoryReserveMb: number;
  sandboxBaseCostMb: number;
  /** Host tasks one gVisor sandbox may hold (a host backstop, not a guest limit). */
  pidsLimit: number;
  /** Default-shape sandboxes kept booted per template, handed out by matching creates. */
  warmPool: WarmPoolTarget[];
  /** VM runtimes save a plain template's first boot per shape; later creates restore it. */
  vmBootSnapshots: boolean;
}

export const DEFAULT_CONFIG: Omit<AgentConfig, "dataDir" | "envdDir" | "token"> = {
  host: "127.0.0.1",
  port: 5008,
  proxyHost: "127.0.0.1",
  proxyPort: 5009,
  poolCidr: "10.200.0.0/16",
  dnsServers: ["8.8.8.8", "1.1.1.1"],
  firewallTable: "wrenn",
  reaperIntervalMs: 1000,
  metricsIntervalMs: 5000,
  memoryReserveMb: 512,
  sandboxBaseCostMb: 128,
  pidsLimit: 16384,
  warmPool: [],
  vmBootSnapshots: true,
};

export interface RunningAgent {
  rpcPort: number;
  proxyPort: number;
  manager: SandboxManager;
  probes: RuntimeProbe[];
  /** Stops serving; sandboxes keep running (an agent restart takes them back). */
  stop(): Promise<void>;
  /** Destroys every sandbox, then stops. */
  terminate(): Promise<void>;
  /** Resolves once Terminate (the RPC) has finished the agent. */
  terminated: Promise<void>;
}

export async function startAgent(config: AgentConfig): Promise<RunningAgent> {
  const log = logger.child({ component: "agent" });
  await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  await raiseHostLimits();

  const vmDir = config.vmDir ?? path.join(path.dirname(config.envdDir), "vm");
  const firecracker = new FirecrackerRuntime({ stateDir: path.join(config.dataDir, "firecracker"), vmDir, dnsServers: config.dnsServers });
  const gvisor = new GvisorRuntime({ stateDir: path.join(config.dataDir, "runsc"), envdDir: config.envdDir, pidsLimit: config.pidsLimit });
  const qemu = new QemuRuntime({ stateDir: path.join(config.dataDir, "qemu"), vmDir, dnsServers: config.dnsServers, accelerator: config.qemuAccelerator });
  // The first available one is the default: firecracker where KVM runs guests and the binary is
  // installed, else gvisor; the others on request (a create's `runtime`).
  const candidates: RuntimeDriver[] = [firecracker, gvisor, qemu];
  const probes: RuntimeProbe[] = await Promise.all(candidates.map((driver) => driver.probe()));
  const drivers = new Map<RuntimeName, RuntimeDriver>();
  for (const driver of candidates) if (probes.find((p) => p.name === driver.name)?.available) drivers.set(driver.name, driver);
  log.info({ probes }, "runtimes probed");
  const defaultRuntime = [...drivers.keys()][0];
  if (!defaultRuntime) throw new Error(`no runtime works on this host: ${probes.map((p) => `${p.name}: ${p.detail}`).join("; ")}`);

  const templates = new TemplateStore(path.join(config.dataDir, "templates"));
  // A template write or delete cut short by a crash leaves a hidden temp or trash directory.
  await templates.removeLeftovers();
  const pool = new SlotAllocator(config.poolCidr);
  const firewall = new Firewall({ table: config.firewallTable, pool, dnsServers: config.dnsServers });
  await firewall.setup();
  const metrics = new MetricsSampler({ intervalMs: config.metricsIntervalMs });
  const manager = new SandboxManager({
    dataDir: config.dataDir,
    drivers,
    defaultRuntime,
    templates,
    pool,
    firewall,
    dnsServers: config.dnsServers,
    metrics,
    memoryReserveMb: config.memoryReserveMb,
    sandboxBaseCostMb: config.sandboxBaseCostMb,
    warmPool: config.warmPool,
    vmBootSnapshots: config.vmBootSnapshots,
  });
  await manager.rediscover();
  const swept = await removeOrphanNetworks(manager.runtimeIds(), firewall);
  log.info({ swept }, "orphaned networks removed");

  let resolveTerminated!: () => void;
  const terminated = new Promise<void>((resolve) => (resolveTerminated = resolve));
  let stopping: Promise<void> | undefined;
  const stop = () => (stopping ??= (async () => {
    clearInterval(reaper);
    manager.warmPool.stop();
    void metrics.stop(); // a pass under way finishes on its own; shutdown does not wait for it
    firewall.close();
    await Promise.all([rpc.close(), proxy.close()]);
  })());
  const terminate = async () => {
    await manager.destroyAll();
    await stop();
    resolveTerminated();
  };

  let proxyPort = 0; // the RPC server answers before the proxy listens
  const service = hostAgentService({
    manager,
    templates,
    metrics,
    probes,
    defaultRuntime,
    dataDir: config.dataDir,
    proxyPort: () => proxyPort,
    terminate: () => void terminate().catch((err: unknown) => log.error({ err }, "terminate failed")),
  });
  const rpc = await startRpcServer({ host: config.host, port: config.port, token: config.token, service });
  const proxy = await startPortProxy({
    host: config.proxyHost,
    port: config.proxyPort,
    token: config.token,
    resolve: (sandboxId) => {
      const sandbox = manager.find(sandboxId);
      return sandbox?.record.status === "running" ? { address: sandbox.network.sandboxAddress } : undefined;
    },
    onRequest: (sandboxId) => {
      const sandbox = manager.find(sandboxId);
      if (sandbox) manager.touch(sandbox);
    },
  });
  proxyPort = proxy.port;
  manager.onUnreachable = (sandboxId, destroyed) => proxy.dropSandbox(sandboxId, destroyed);
  let reaping = false;
  const reaper = setInterval(() => {
    if (reaping) return;
    reaping = true;
    void (async () => {
      await manager.reapExited();
      await manager.reapIdle();
      manager.warmPool.refill();
      await capConsoleLogs(manager.list());
    })()
      .catch((err: unknown) => log.error({ err }, "reaper pass failed"))
      .finally(() => (reaping = false));
  }, config.reaperIntervalMs);
  metrics.start();
  manager.warmPool.start(); // after rediscovery and the orphan sweep: it builds new sandboxes
  log.info({ rpcPort: rpc.port, proxyPort: proxy.port, runtimes: [...drivers.keys()] }, "host agent ready");
  return { rpcPort: rpc.port, proxyPort: proxy.port, manager, probes, stop, terminate, terminated };
}
