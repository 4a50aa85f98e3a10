// Network leftovers of sandboxes this agent no longer knows (a crash between creating and
// recording, a teardown that failed): their namespaces, host-side veths and firewall chains.
import { stat } from "node:fs/promises";
import { runCommand } from "../../exec/command.js";
import { logger } from "../../logging/logger.js";
import type { Firewall } from "./firewall.js";
import { deleteLink, deleteNamespace, HOST_INTERFACE_NAME, hostInterfaceName, listNamespaces, sandboxIdOfNamespace } from "./namespace.js";

const log = logger.child({ component: "network-orphans" });
const IP_TIMEOUT_MS = 10_000;
// A network with no address yet may be another agent's being built right now; creation takes
// milliseconds, so one this old without an address was abandoned.
const DEFAULT_ADDRESSLESS_GRACE_MS = 60_000;

export interface RemovedOrphans {
  namespaces: string[];
  interfaces: string[];
  /** Sandbox ids whose firewall chain and sets were removed. */
  firewallSandboxes: string[];
}

export interface OrphanSweepOptions {
  /**
   * Only sandbox ids starting with this are considered (default: all). A host-side veth whose
   * namespace no longer has a name cannot be tied to an id and is then left alone.
   */
  sandboxIdPrefix?: string;
  /** How old an address-less namespace must be to be claimed; default one minute. */
  addresslessGraceMs?: number;
}

/**
 * Deletes `wrenn-*` namespaces, `wv*` veths and firewall chains belonging to no sandbox in `known`
 * (sandbox ids); returns what it removed. Run once at start-up, before new sandboxes are created:
 * a sandbox half-way through creation is not in `known` yet.
 *
 * Only networks of the firewall's pool are claimed: a veth whose host end carries an address
 * outside it, and the namespace behind it, belong to another agent on this host (or another test
 * run) and are left alone. One without any address (its creation stopped before addressing) is
 * claimed once its namespace is a minute old. Namespaces of other prefixes, and veths whose peer
 * sits in one, are never touched.
 */
export async function removeOrphanNetworks(known: ReadonlySet<string>, firewall: Firewall, options: OrphanSweepOptions = {}): Promise<RemovedOrphans> {
  const prefix = options.sandboxIdPrefix ?? "";
  const ours = (sandboxId: string | undefined): sandboxId is string => sandboxId !== undefined && sandboxId.startsWith(prefix) && !known.has(sandboxId);
  const removed: RemovedOrphans = { namespaces: [], interfaces: [], firewallSandboxes: [] };

  // Veths before namespaces: a namespace is made before its veth, so every veth listed has its
  // namespace (if it still has a name) in the list read after. The other order misses the
  // namespace of a veth another agent made in between, and took that veth, being built, for one
  // whose namespace lost its name (its create then failed: `Cannot find device "eth0"`).
  const listed = await rootVeths();
  const namesById = await namespaceNamesById();
  const veths = listed.map((veth) => ({ ...veth, peerNamespace: veth.peerNamespaceId === undefined ? undefined : namesById.get(veth.peerNamespaceId) }));
  const expected = new Set([...known].map(hostInterfaceName));
  const now = Date.now();
  const grace = options.addresslessGraceMs ?? DEFAULT_ADDRESSLESS_GRACE_MS;
  const abandoned = async (namespace: string | undefined) => namespace === undefined || now - (await createdAt(namespace)) >= grace;
  const claimable = async (hostEnds: (Veth & { peerNamespace: string | undefined })[], namespace: string | undefined) => {
    if (hostEnds.some((veth) => veth.addresses.some((address) => firewall.pool.contains(address)))) return true;
    if (hostEnds.some((veth) => veth.addresses.length > 0)) return false; // another pool's
    return abandoned(namespace);
  };

  // Veths first: one whose namespace is held open by a stray process outlives `ip netns del`.
  for (const veth of veths) {
    if (!HOST_INTERFACE_NAME.test(veth.name) || expected.has(veth.name)) continue;
    // No named peer namespace: a veth of ours whose namespace lost its name, or one whose peer is
    // in the root namespace; only a sweep over every id may claim it.
    const orphan = veth.peerNamespace === undefined ? prefix === "" : ours(sandboxIdOfNamespace(veth.peerNamespace));
    if (!orphan || !(await claimable([veth], veth.peerNamespace))) continue;
    await deleteLink(veth.name);
    removed.interfaces.push(veth.name);
  }
  for (const namespace of await listNamespaces()) {
    if (!ours(sandboxIdOfNamespace(namespace))) continue;
    if (!(await claimable(veths.filter((veth) => veth.peerNamespace === namespace), namespace))) continue;
    await deleteNamespace(namespace);
    removed.namespaces.push(namespace);
  }
  // The table is this agent's own: every chain in it is ours to judge.
  for (const sandboxId of await firewall.knownSandboxes()) {
    if (!ours(sandboxId)) continue;
    await firewall.removeSandbox(sandboxId);
    removed.firewallSandboxes.push(sandboxId);
  }
  if (removed.namespaces.length + removed.interfaces.length + removed.firewallSandboxes.length > 0) {
    log.info({ ...removed, known: known.size }, "orphaned sandbox networks removed");
  }
  return removed;
}

interface Veth {
  name: string;
  /** The peer's namespace as the root namespace numbers it; undefined when the peer is in the root namespace. */
  peerNamespaceId: number | undefined;
  /** IPv4 addresses on this (root-namespace) end. */
  addresses: string[];
}

async function rootVeths(): Promise<Veth[]> {
  const out = (await runCommand("ip", ["-json", "addr", "show", "type", "veth"], { timeoutMs: IP_TIMEOUT_MS })).trim();
  const links = out ? (JSON.parse(out) as { ifname: string; link_netnsid?: number; addr_info?: { family: string; local: string }[] }[]) : [];
  return links.map((link) => ({
    name: link.ifname,
    peerNamespaceId: link.link_netnsid,
    addresses: (link.addr_info ?? []).filter((info) => info.family === "inet").map((info) => info.local),
  }));
}

/** When a named namespace was made: its nsfs inode carries the creation time; now if it is gone. */
async function createdAt(namespace: string): Promise<number> {
  try {
    return (await stat(`/var/run/netns/${namespace}`)).mtimeMs;
  } catch {
    return Date.now();
  }
}

async function namespaceNamesById(): Promise<Map<number, string>> {
  const out = (await runCommand("ip", ["-json", "netns", "list"], { timeoutMs: IP_TIMEOUT_MS })).trim();
  const entries = out ? (JSON.parse(out) as { name: string; id?: number }[]) : [];
  return new Map(entries.flatMap((entry) => (entry.id === undefined ? [] : [[entry.id, entry.name] as const])));
}
