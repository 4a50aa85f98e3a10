// A sandbox's network: its own namespace `wrenn-<sandboxId>`, joined to the host by a veth pair
// (host side `wv…` in the root namespace, `eth0` inside) carrying the /30 of its pool slot.
// What the sandbox may reach through it is the firewall's business (firewall.ts), not this file's.
import { createHash } from "node:crypto";
import { runCommand } from "../../exec/command.js";
import type { Cleanup } from "../cleanup.js";
import type { SlotAllocator } from "./slots.js";

const IP_TIMEOUT_MS = 10_000;
const SANDBOX_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;
/** Every sandbox namespace is named this plus the sandbox id; nothing else of ours uses it. */
export const NAMESPACE_PREFIX = "wrenn-";
/** What every host-side veth name looks like: `wv` and 12 hex digits of the id's hash. */
export const HOST_INTERFACE_NAME = /^wv[0-9a-f]{12}$/;

export interface SandboxNetwork {
  sandboxId: string;
  slot: number;
  /** The namespace's name under /var/run/netns. */
  namespace: string;
  /** What an OCI spec's `linux.namespaces[type=network].path` names. */
  namespacePath: string;
  /** The veth end left in the root namespace. */
  hostInterface: string;
  /** The veth end inside the namespace. */
  sandboxInterface: "eth0";
  hostAddress: string;
  sandboxAddress: string;
  prefixLength: 30;
}

/** Whether `sandboxId` can name a namespace, an interface and a firewall chain. */
export function isSandboxId(sandboxId: string): boolean {
  return SANDBOX_ID.test(sandboxId);
}

/** The namespace of `sandboxId`. */
export function namespaceName(sandboxId: string): string {
  return `${NAMESPACE_PREFIX}${sandboxId}`;
}

/** The sandbox id a namespace name carries, or undefined for a namespace that is not a sandbox's. */
export function sandboxIdOfNamespace(namespace: string): string | undefined {
  if (!namespace.startsWith(NAMESPACE_PREFIX)) return undefined;
  const sandboxId = namespace.slice(NAMESPACE_PREFIX.length);
  return isSandboxId(sandboxId) ? sandboxId : undefined;
}

/** The host-side veth name of `sandboxId`; computable from the id alone, as the firewall and orphan sweep need. */
export function hostInterfaceName(sandboxId: string): string {
  // Interface names stop at 15 bytes; a hash of the id keeps them unique for any id length.
  return `wv${createHash("sha256").update(sandboxId).digest("hex").slice(0, 12)}`;
}

/** The names and addresses a sandbox's network will have in `slot` of `pool`; creates nothing. */
export function planNetwork(sandboxId: string, slot: number, pool: SlotAllocator): SandboxNetwork {
  if (!isSandboxId(sandboxId)) throw new RangeError(`invalid sandbox id ${JSON.stringify(sandboxId)}`);
  const { hostAddress, sandboxAddress, prefixLength } = pool.addresses(slot);
  const namespace = namespaceName(sandboxId);
  return {
    sandboxId,
    slot,
    namespace,
    namespacePath: `/var/run/netns/${namespace}`,
    hostInterface: hostInterfaceName(sandboxId),
    sandboxInterface: "eth0",
    hostAddress,
    sandboxAddress,
    prefixLength,
  };
}

/**
 * Creates the namespace, the veth pair, addresses and routes for `sandboxId` in `slot` of `pool`,
 * registering their removal on `cleanup` as each one comes into being. The slot stays the caller's
 * to release. Register the sandbox with the firewall before anything runs inside the namespace.
 */
export async function createNetwork(sandboxId: string, slot: number, pool: SlotAllocator, cleanup: Cleanup): Promise<SandboxNetwork> {
  const net = planNetwork(sandboxId, slot, pool);
  await ip(["netns", "add", net.namespace]);
  cleanup.defer(`delete netns ${net.namespace}`, () => deleteNamespace(net.namespace));
  // The peer is born inside the namespace, so no `eth0` ever appears in the root namespace.
  await ip(["link", "add", net.hostInterface, "type", "veth", "peer", "name", net.sandboxInterface, "netns", net.namespace]);
  cleanup.defer(`delete veth ${net.hostInterface}`, () => deleteLink(net.hostInterface));
  await ip(["-batch", "-"], [
    `addr add ${net.hostAddress}/${net.prefixLength} dev ${net.hostInterface}`,
    `link set ${net.hostInterface} up`,
  ]);
  await ip(["-n", net.namespace, "-batch", "-"], [
    "link set lo up",
    `addr add ${net.sandboxAddress}/${net.prefixLength} dev ${net.sandboxInterface}`,
    `link set ${net.sandboxInterface} up`,
    `route add default via ${net.hostAddress} dev ${net.sandboxInterface}`,
  ]);
  return net;
}

/** Removes the veth pair and the namespace; what is already gone is skipped, so it is safe to repeat. */
export async function destroyNetwork(net: SandboxNetwork): Promise<void> {
  await deleteLink(net.hostInterface);
  await deleteNamespace(net.namespace);
}

/** Names of every network namespace under /var/run/netns. */
export async function listNamespaces(): Promise<string[]> {
  const out = (await ip(["-json", "netns", "list"])).trim();
  const entries = out ? (JSON.parse(out) as { name: string }[]) : [];
  return entries.map((entry) => entry.name);
}

/** Whether a network interface of that name exists in the root namespace. */
export async function linkExists(name: string): Promise<boolean> {
  const links = JSON.parse(await ip(["-json", "link", "show"])) as { ifname: string }[];
  return links.some((link) => link.ifname === name);
}

/** Deletes a root-namespace interface (a veth takes its peer along) unless it is already gone. */
export async function deleteLink(name: string): Promise<void> {
  if (await linkExists(name)) await ip(["link", "del", name]);
}

/** Deletes a named network namespace unless it is already gone. */
export async function deleteNamespace(name: string): Promise<void> {
  if ((await listNamespaces()).includes(name)) await ip(["netns", "del", name]);
}

function ip(args: string[], batch?: string[]): Promise<string> {
  return runCommand("ip", args, { timeoutMs: IP_TIMEOUT_MS, input: batch?.map((line) => `${line}\n`).join("") });
}
