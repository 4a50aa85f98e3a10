// Test-only network fixtures: fake hosts in namespaces of their own, listeners and probes run
// inside namespaces with `ip netns exec`, and checks that a test left nothing behind.
// Every address a probe targets must be on this machine; assertRoutedVia guards that before traffic.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { runCommand } from "../src/exec/command.js";
import type { Cleanup } from "../src/sandbox/cleanup.js";
import { deleteLink, deleteNamespace, listNamespaces } from "../src/sandbox/network/namespace.js";

/** Prefix of every sandbox id, namespace and interface a test run creates, so concurrent runs never collide. */
export const TEST_PREFIX = `nt${process.pid}`;
export const TEST_POOL = "10.210.0.0/24";
/** firewall.test.ts's pool: network.test.ts builds networks in TEST_POOL, and the two files may run at once. */
export const FIREWALL_TEST_POOL = "10.210.1.0/24";
export const TEST_TABLE = `wrenn_t${process.pid}`;

const TIMEOUT_MS = 10_000;

// One small program for both ends; runs under plain node inside a namespace. A listener answers
// each TCP connection or UDP datagram with the address it came from, so a probe learns what the
// far end saw (the host's address after masquerade).
const AGENT_SCRIPT = `
const net = require("node:net"), dgram = require("node:dgram");
const [mode, host, port, ms] = process.argv.slice(1);
const done = (result) => { console.log(JSON.stringify(result)); process.exit(0); };
if (mode === "tcp-listen") {
  net.createServer((s) => s.end(s.remoteAddress + "\\n")).listen(Number(port), host, () => console.log("ready"));
} else if (mode === "udp-listen") {
  const sock = dgram.createSocket("udp4");
  sock.on("message", (_m, r) => sock.send(r.address + "\\n", r.port, r.address));
  sock.bind(Number(port), host, () => console.log("ready"));
} else if (mode === "tcp-probe") {
  setTimeout(() => done({ result: "timeout" }), Number(ms));
  const s = net.connect({ host, port: Number(port) });
  let data = "";
  s.on("data", (d) => (data += d));
  s.on("end", () => done({ result: "connected", peerSaw: data.trim() }));
  s.on("error", (e) => done({ result: e.code || e.message }));
} else if (mode === "udp-probe") {
  setTimeout(() => done({ result: "timeout" }), Number(ms));
  const sock = dgram.createSocket(host.includes(":") ? "udp6" : "udp4");
  sock.on("message", (m) => done({ result: "answered", peerSaw: m.toString().trim() }));
  sock.on("error", (e) => done({ result: e.code || e.message }));
  sock.send("probe", Number(port), host);
}
`;

export interface ProbeResult {
  /** "connected" / "answered", "timeout" (dropped), or an errno code such as ECONNREFUSED. */
  result: string;
  /** The source address the listener saw. */
  peerSaw?: string;
}

/** Opens a TCP connection (or sends a UDP datagram) from inside `namespace` and reports what happened. */
export async function probe(namespace: string, protocol: "tcp" | "udp", host: string, port: number, timeoutMs = 1000): Promise<ProbeResult> {
  const out = await runCommand("ip", ["netns", "exec", namespace, process.execPath, "-e", AGENT_SCRIPT, `${protocol}-probe`, host, String(port), String(timeoutMs)], {
    timeoutMs: timeoutMs + TIMEOUT_MS,
  });
  return JSON.parse(out) as ProbeResult;
}

/**
 * Starts a listener inside `namespace` (bound to 0.0.0.0) and registers its stop on `cleanup`.
 * Fails within TIMEOUT_MS, saying what the listener printed, if it does not report ready.
 */
export async function listen(namespace: string, protocol: "tcp" | "udp", port: number, cleanup: Cleanup): Promise<void> {
  const child = spawn("ip", ["netns", "exec", namespace, process.execPath, "-e", AGENT_SCRIPT, `${protocol}-listen`, "0.0.0.0", String(port)], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  cleanup.defer(`stop ${protocol} listener on ${namespace}:${port}`, () => stop(child));
  let stderr = "";
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const lines = createInterface({ input: child.stdout! });
  const started = performance.now();
  const first = await new Promise<string>((resolve) => {
    const timer = setTimeout(() => resolve(`no line within ${TIMEOUT_MS} ms`), TIMEOUT_MS);
    lines.once("line", (line) => (clearTimeout(timer), resolve(line)));
    child.once("exit", (code, signal) => (clearTimeout(timer), resolve(`exited (${signal ?? code})`)));
  });
  if (first !== "ready") {
    const ms = Math.round(performance.now() - started);
    throw new Error(`${protocol} listener in ${namespace} on port ${port} did not start after ${ms} ms: ${first}; stderr: ${stderr.trim() || "(none)"}`);
  }
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, "exit");
  child.kill("SIGKILL");
  await exited;
}

/**
 * A fake remote host: namespace `name` holding `addresses` on its `eth0`, joined by a veth whose
 * root-namespace end `hostInterface` carries `hostAddress` (same /24), so the host routes the /24 there.
 */
export async function createFakeHost(
  name: string,
  hostInterface: string,
  hostAddress: string,
  addresses: string[],
  cleanup: Cleanup,
): Promise<void> {
  await runCommand("ip", ["netns", "add", name], { timeoutMs: TIMEOUT_MS });
  cleanup.defer(`delete netns ${name}`, () => deleteNamespace(name));
  await runCommand("ip", ["link", "add", hostInterface, "type", "veth", "peer", "name", "eth0", "netns", name], { timeoutMs: TIMEOUT_MS });
  cleanup.defer(`delete veth ${hostInterface}`, () => deleteLink(hostInterface));
  await runCommand("ip", ["-batch", "-"], { timeoutMs: TIMEOUT_MS, input: `addr add ${hostAddress}/24 dev ${hostInterface}\nlink set ${hostInterface} up\n` });
  const inside = ["link set lo up", ...addresses.map((address) => `addr add ${address}/24 dev eth0`), "link set eth0 up"];
  await runCommand("ip", ["-n", name, "-batch", "-"], { timeoutMs: TIMEOUT_MS, input: inside.map((line) => `${line}\n`).join("") });
}

/** Fails unless the root namespace sends traffic for `address` out of `device`: no probe may leave the machine. */
export async function assertRoutedVia(address: string, device: string): Promise<void> {
  const [route] = JSON.parse(await runCommand("ip", ["-json", "route", "get", address], { timeoutMs: TIMEOUT_MS })) as { dev: string }[];
  assert.equal(route?.dev, device, `${address} would leave through ${route?.dev}, not the test's ${device}`);
}

/** Whatever of this test run is still on the host: namespaces, interfaces, nft tables. */
export async function leftovers(table: string, interfaces: string[] = []): Promise<string[]> {
  const found: string[] = [];
  for (const namespace of await listNamespaces()) if (namespace.includes(TEST_PREFIX)) found.push(`netns ${namespace}`);
  const links = JSON.parse(await runCommand("ip", ["-json", "link", "show"], { timeoutMs: TIMEOUT_MS })) as { ifname: string }[];
  for (const link of links) if (link.ifname.startsWith(TEST_PREFIX) || interfaces.includes(link.ifname)) found.push(`link ${link.ifname}`);
  const tables = JSON.parse(await runCommand("nft", ["-j", "list", "tables"], { timeoutMs: TIMEOUT_MS })) as { nftables: { table?: { name: string } }[] };
  for (const item of tables.nftables) if (item.table?.name === table) found.push(`nft table ${table}`);
  return found;
}

/** The skip reason for tests that need root, `ip` and `nft`; false when they can run. */
export async function networkTestSkip(): Promise<string | false> {
  if (process.getuid?.() !== 0) return "needs root";
  for (const [tool, versionFlag] of [["ip", "-V"], ["nft", "--version"]] as const) {
    try {
      await runCommand(tool, [versionFlag], { timeoutMs: TIMEOUT_MS });
    } catch {
      return `needs ${tool}`;
    }
  }
  return false;
}
