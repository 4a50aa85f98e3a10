// wrenn-host-agent: runs this host's sandboxes. Root is required (namespaces, mounts, nftables).
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { growHeapForRelaying } from "@wrenn/http-relay";
import { DEFAULT_CONFIG, startAgent, type AgentConfig } from "./agent.js";
import { logger } from "./logging/logger.js";
import { parseWarmPoolTargets } from "./sandbox/warm-pool.js";

// The port proxy relays files and streams: room in the heap for the chunks in flight (http-relay/src/heap.ts).
growHeapForRelaying();

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

const { values } = parseArgs({
  options: {
    "data-dir": { type: "string", default: process.env.WRENN_AGENT_DATA_DIR ?? "/var/lib/wrenn/agent" },
    "envd-dir": { type: "string", default: process.env.WRENN_ENVD_DIR ?? path.join(repoRoot, "build", "opt-wrenn") },
    // The qemu driver's guest (scripts/build-vm-guest.sh).
    "vm-dir": { type: "string", default: process.env.WRENN_VM_DIR ?? path.join(repoRoot, "build", "vm") },
    // kvm | tcg; unset: KVM where a probe boots a guest, else TCG.
    "qemu-accel": { type: "string", default: process.env.WRENN_QEMU_ACCEL },
    host: { type: "string", default: process.env.WRENN_AGENT_HOST ?? DEFAULT_CONFIG.host },
    port: { type: "string", default: process.env.WRENN_AGENT_PORT ?? String(DEFAULT_CONFIG.port) },
    "proxy-host": { type: "string", default: process.env.WRENN_AGENT_PROXY_HOST ?? DEFAULT_CONFIG.proxyHost },
    "proxy-port": { type: "string", default: process.env.WRENN_AGENT_PROXY_PORT ?? String(DEFAULT_CONFIG.proxyPort) },
    pool: { type: "string", default: process.env.WRENN_AGENT_POOL ?? DEFAULT_CONFIG.poolCidr },
    dns: { type: "string", default: process.env.WRENN_AGENT_DNS ?? DEFAULT_CONFIG.dnsServers.join(",") },
    "firewall-table": { type: "string", default: DEFAULT_CONFIG.firewallTable },
    "token-file": { type: "string" },
    "reaper-interval-ms": { type: "string", default: String(DEFAULT_CONFIG.reaperIntervalMs) },
    "metrics-interval-ms": { type: "string", default: String(DEFAULT_CONFIG.metricsIntervalMs) },
    "memory-reserve-mb": { type: "string", default: String(DEFAULT_CONFIG.memoryReserveMb) },
    // <template>=<count>[,…]: default-shape sandboxes kept booted, so matching creates skip the boot.
    "warm-pool": { type: "string", multiple: true, default: process.env.WRENN_AGENT_WARM_POOL ? [process.env.WRENN_AGENT_WARM_POOL] : [] },
    // on | off: VM runtimes save a plain template's first boot (per shape) and restore it after.
    "vm-boot-snapshots": { type: "string", default: process.env.WRENN_VM_BOOT_SNAPSHOTS ?? "on" },
  },
});

/** The host token: $WRENN_HOST_TOKEN, a token file, or one generated into the data dir on first start. */
async function hostToken(dataDir: string): Promise<string> {
  if (process.env.WRENN_HOST_TOKEN) return process.env.WRENN_HOST_TOKEN;
  const file = values["token-file"] ?? path.join(dataDir, "host-token");
  if (existsSync(file)) return (await readFile(file, "utf8")).trim();
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const token = randomBytes(32).toString("base64url");
  await writeFile(file, `${token}\n`, { mode: 0o600 });
  logger.info({ file }, "generated a host token");
  return token;
}

function onOff(flag: string, value: string): boolean {
  if (value !== "on" && value !== "off") throw new Error(`--${flag} must be on or off, got ${JSON.stringify(value)}`);
  return value === "on";
}

function qemuAccelerator(value: string | undefined): "kvm" | "tcg" | undefined {
  if (value === undefined || value === "") return undefined;
  if (value !== "kvm" && value !== "tcg") throw new Error(`--qemu-accel must be kvm or tcg, got ${JSON.stringify(value)}`);
  return value;
}

const dataDir = path.resolve(values["data-dir"]!);
const config: AgentConfig = {
  ...DEFAULT_CONFIG,
  dataDir,
  envdDir: path.resolve(values["envd-dir"]!),
  vmDir: path.resolve(values["vm-dir"]!),
  qemuAccelerator: qemuAccelerator(values["qemu-accel"]),
  token: await hostToken(dataDir),
  host: values.host!,
  port: Number(values.port),
  proxyHost: values["proxy-host"]!,
  proxyPort: Number(values["proxy-port"]),
  poolCidr: values.pool!,
  dnsServers: values.dns!.split(",").filter(Boolean),
  firewallTable: values["firewall-table"]!,
  reaperIntervalMs: Number(values["reaper-interval-ms"]),
  metricsIntervalMs: Number(values["metrics-interval-ms"]),
  memoryReserveMb: Number(values["memory-reserve-mb"]),
  warmPool: parseWarmPoolTargets(values["warm-pool"]!),
  vmBootSnapshots: onOff("vm-boot-snapshots", values["vm-boot-snapshots"]!),
};

process.on("unhandledRejection", (err) => logger.fatal({ err }, "unhandled rejection"));
const agent = await startAgent(config);
console.log(`host agent listening on port ${agent.rpcPort}, port proxy on ${agent.proxyPort}`);
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    // Sandboxes keep running: the next agent takes them back.
    void agent.stop().then(() => process.exit(0));
  });
}
await agent.terminated;
process.exit(0);
