// The host's nftables table for sandboxes: keeps every sandbox away from the host and from other
// sandboxes, applies each sandbox's egress rules, and masquerades its internet traffic.
//
// Several Firewall tables can live on one host (tests, other agents' tests), and a drop in any
// table's base chain drops the packet for all of them; so every rule here matches only interfaces
// this instance registered (the `sandbox_interfaces` set) or its own pool, never a name pattern.
// Every change is one `nft -f -` batch, which the kernel applies atomically.
import { Mutex } from "async-mutex";
import { runCommand } from "../../exec/command.js";
import { logger } from "../../logging/logger.js";
import type { Cleanup } from "../cleanup.js";
import { validateDnsServers } from "./dns.js";
import { BLOCKED_RANGES, EgressResolver, egressAddressSets, egressDomains, type EgressAddressSets, type EgressRules } from "./egress.js";
import { hostInterfaceName, isSandboxId, type SandboxNetwork } from "./namespace.js";
import type { SlotAllocator } from "./slots.js";

const log = logger.child({ component: "firewall" });
const NFT_TIMEOUT_MS = 10_000;
const SYSCTL_TIMEOUT_MS = 5_000;
export const DEFAULT_FIREWALL_TABLE = "wrenn";
const TABLE_NAME = /^[A-Za-z][A-Za-z0-9_]{0,63}$/;
/** Per-sandbox chains are this plus the sandbox id; nothing else in the table starts with it. */
const SANDBOX_CHAIN_PREFIX = "sandbox_";
const ADDRESS_SETS = ["open", "allow", "deny"] as const;

export interface FirewallOptions {
  /** The nftables table (family inet) this instance owns; default "wrenn". */
  table?: string;
  /** The sandbox address pool: masqueraded on the way out, and never a sandbox's destination. */
  pool: SlotAllocator;
  /** Resolvers sandboxes use; port 53 to them stays open even in a private range. */
  dnsServers: readonly string[];
  /** Resolves and re-resolves egress domains; default uses node:dns every 60 s. */
  resolver?: EgressResolver;
}

/** What a firewall call needs to know of a sandbox's network. */
export type SandboxInterface = Pick<SandboxNetwork, "sandboxId" | "hostInterface">;

interface RegisteredSandbox {
  hostInterface: string;
  rules: EgressRules;
  /** The address sets last loaded, to skip refreshes that change nothing. */
  sets: EgressAddressSets;
}

export class Firewall {
  readonly table: string;
  /** The pool whose sandboxes this table filters; the orphan sweep claims only networks in it. */
  readonly pool: SlotAllocator;
  private readonly dnsServers: string[];
  private readonly resolver: EgressResolver;
  /** Sandboxes registered by this process, with the rules their domains are refreshed for. */
  private readonly sandboxes = new Map<string, RegisteredSandbox>();
  // Refreshes write sets outside the caller's flow; one writer at a time keeps a stale answer
  // from landing after the sandbox was replaced or removed.
  private readonly writes = new Mutex();
  private refreshTimer: NodeJS.Timeout | undefined;
  private refreshInFlight: Promise<void> | undefined;

  constructor(options: FirewallOptions) {
    this.table = options.table ?? DEFAULT_FIREWALL_TABLE;
    if (!TABLE_NAME.test(this.table)) throw new RangeError(`invalid nftables table name ${JSON.stringify(this.table)}`);
    this.pool = options.pool;
    this.dnsServers = validateDnsServers(options.dnsServers);
    this.resolver = options.resolver ?? new EgressResolver();
  }

  /**
   * Turns on IPv4 forwarding and creates or refreshes the table and its base chains, keeping the
   * sandboxes already registered in it (an agent restarting with sandboxes running). Safe to repeat.
   * Starts the periodic re-resolution of egress domains.
   */
  async setup(): Promise<void> {
    // Global and left on by teardown: other tables' sandboxes may depend on it.
    await runCommand("sysctl", ["-q", "-w", "net.ipv4.ip_forward=1"], { timeoutMs: SYSCTL_TIMEOUT_MS });
    const t = `inet ${this.table}`;
    await this.writes.runExclusive(() =>
      this.nft([
        `add table ${t}`,
        `add set ${t} sandbox_interfaces { type ifname; }`,
        `add map ${t} sandbox_chains { type ifname : verdict; }`,
        `add set ${t} dns_servers { type ipv4_addr; }`,
        `flush set ${t} dns_servers`,
        `add element ${t} dns_servers { ${this.dnsServers.join(", ")} }`,

        // Sandbox → host: only replies to what the host opened (the agent talking to envd), and
        // DNS should a configured resolver be the host itself. Nothing else, on any host address.
        `add chain ${t} input { type filter hook input priority filter; policy accept; }`,
        `flush chain ${t} input`,
        `add rule ${t} input iifname @sandbox_interfaces ct state established,related accept`,
        `add rule ${t} input iifname @sandbox_interfaces ip daddr @dns_servers meta l4proto { tcp, udp } th dport 53 accept`,
        `add rule ${t} input iifname @sandbox_interfaces drop`,

        // Through the host: replies pass; nothing opens a connection into a sandbox (another
        // sandbox included); what a sandbox opens goes through its own chain.
        `add chain ${t} forward { type filter hook forward priority filter; policy accept; }`,
        `flush chain ${t} forward`,
        `add rule ${t} forward iifname @sandbox_interfaces ct state established,related accept`,
        `add rule ${t} forward oifname @sandbox_interfaces ct state established,related accept`,
        `add rule ${t} forward iifname @sandbox_interfaces ct state invalid drop`,
        `add rule ${t} forward oifname @sandbox_interfaces drop`,
        `add rule ${t} forward iifname vmap @sandbox_chains`,
        // Registered without a chain cannot happen in one batch; fail closed should it ever.
        `add rule ${t} forward iifname @sandbox_interfaces drop`,

        // iifname is unset at postrouting, so the pool's source addresses say "from a sandbox".
        `add chain ${t} postrouting { type nat hook postrouting priority srcnat; policy accept; }`,
        `flush chain ${t} postrouting`,
        `add rule ${t} postrouting ip saddr ${this.pool.cidr} oifname != @sandbox_interfaces masquerade`,
      ]),
    );
    if (!this.refreshTimer) {
      this.refreshTimer = setInterval(() => void this.refreshEgress(), this.resolver.refreshIntervalMs);
      this.refreshTimer.unref();
    }
    log.info({ table: this.table, pool: this.pool.cidr, dnsServers: this.dnsServers }, "firewall ready");
  }

  /**
   * Puts `net`'s sandbox under `rules` (replacing any rules it had, atomically), resolving its
   * domains first, and registers the removal on `cleanup`. Call before anything runs in the sandbox:
   * until then its interface is not known here and nothing of this table applies to it.
   */
  async addSandbox(net: SandboxInterface, rules: EgressRules, cleanup: Cleanup): Promise<void> {
    const hostInterface = checkedInterface(net);
    const answers = await this.resolver.resolve(egressDomains(rules));
    const sets = egressAddressSets(rules, answers);
    await this.writes.runExclusive(async () => {
      await this.nft(this.sandboxBatch(net.sandboxId, hostInterface, sets));
      this.sandboxes.set(net.sandboxId, { hostInterface, rules, sets });
    });
    cleanup.defer(`remove firewall rules of ${net.sandboxId}`, () => this.removeSandbox(net));
    log.info({ sandboxId: net.sandboxId, table: this.table, ...sets }, "sandbox firewall rules loaded");
  }

  /** Removes a sandbox's chain, sets and registration; what is already gone is skipped, so it is safe to repeat. */
  async removeSandbox(target: SandboxInterface | string): Promise<void> {
    const sandboxId = typeof target === "string" ? target : target.sandboxId;
    const hostInterface = typeof target === "string" ? hostInterfaceName(target) : checkedInterface(target);
    if (!isSandboxId(sandboxId)) throw new RangeError(`invalid sandbox id ${JSON.stringify(sandboxId)}`);
    await this.writes.runExclusive(async () => {
      this.sandboxes.delete(sandboxId);
      if (!(await this.tableExists())) return;
      await this.nft(this.removalBatch(sandboxId, hostInterface));
    });
  }

  /** Ids of the sandboxes whose chains the table holds, whoever added them (for orphan sweeps). */
  async knownSandboxes(): Promise<string[]> {
    if (!(await this.tableExists())) return [];
    const listing = parseNftJson(await this.nftRead(["-j", "list", "chains", "inet"]));
    return listing
      .flatMap((item) => (item.chain && item.chain.table === this.table ? [item.chain.name] : []))
      .filter((name) => name.startsWith(SANDBOX_CHAIN_PREFIX))
      .map((name) => name.slice(SANDBOX_CHAIN_PREFIX.length));
  }

  /**
   * Re-resolves the domains of every sandbox registered by this process and reloads the address
   * sets that changed. Runs every refresh interval after setup(); callable directly. Never throws
   * (failures are logged); a call during a refresh shares that refresh.
   */
  refreshEgress(): Promise<void> {
    this.refreshInFlight ??= this.refreshOnce().finally(() => (this.refreshInFlight = undefined));
    return this.refreshInFlight;
  }

  private async refreshOnce(): Promise<void> {
    try {
      const snapshot = [...this.sandboxes.entries()];
      const domains = snapshot.flatMap(([, sandbox]) => egressDomains(sandbox.rules));
      this.resolver.retain(domains);
      if (domains.length === 0) return;
      const answers = await this.resolver.resolve(domains);
      for (const [sandboxId, sandbox] of snapshot) {
        if (egressDomains(sandbox.rules).length === 0) continue;
        const sets = egressAddressSets(sandbox.rules, answers);
        if (sameSets(sets, sandbox.sets)) continue;
        await this.writes.runExclusive(async () => {
          // Replaced or removed while we were resolving: its current entry is newer than our answer.
          if (this.sandboxes.get(sandboxId) !== sandbox) return;
          try {
            await this.nft(this.setsBatch(sandboxId, sets, false));
            sandbox.sets = sets;
            log.info({ sandboxId, table: this.table, ...sets }, "egress domains re-resolved");
          } catch (err) {
            log.warn({ sandboxId, table: this.table, err }, "reloading egress addresses failed");
          }
        });
      }
    } catch (err) {
      log.warn({ table: this.table, err }, "egress refresh failed");
    }
  }

  /** Stops the periodic refresh; the ruleset stays as it is (an agent shutting down with sandboxes running). */
  close(): void {
    clearInterval(this.refreshTimer);
    this.refreshTimer = undefined;
  }

  /** Stops the refresh and deletes the whole table. Safe to repeat. */
  async teardown(): Promise<void> {
    this.close();
    await this.writes.runExclusive(async () => {
      this.sandboxes.clear();
      // Adding first makes the delete succeed whether or not the table is there.
      await this.nft([`add table inet ${this.table}`, `delete table inet ${this.table}`]);
    });
  }

  private sandboxBatch(sandboxId: string, hostInterface: string, sets: EgressAddressSets): string[] {
    const t = `inet ${this.table}`;
    const chain = sandboxChain(sandboxId);
    const set = (name: (typeof ADDRESS_SETS)[number]) => `@${chain}_${name}`;
    return [
      ...this.setsBatch(sandboxId, sets, true),
      `add chain ${t} ${chain}`,
      `flush chain ${t} ${chain}`,
      // Order is the semantics egress.ts describes; the first match decides.
      `add rule ${t} ${chain} ip daddr ${this.pool.cidr} drop`,
      `add rule ${t} ${chain} ip daddr ${set("open")} accept`,
      `add rule ${t} ${chain} ip daddr @dns_servers meta l4proto { tcp, udp } th dport 53 accept`,
      `add rule ${t} ${chain} ip daddr { ${BLOCKED_RANGES.join(", ")} } drop`,
      `add rule ${t} ${chain} ip daddr ${set("allow")} accept`,
      `add rule ${t} ${chain} ip daddr ${set("deny")} drop`,
      `add rule ${t} ${chain} meta nfproto ipv4 accept`,
      // Sandboxes have no IPv6 egress.
      `add rule ${t} ${chain} drop`,
      `add element ${t} sandbox_interfaces { "${hostInterface}" }`,
      `add element ${t} sandbox_chains { "${hostInterface}" : jump ${chain} }`,
    ];
  }

  /** Loads a sandbox's address sets; `create` also makes them (a refresh must not revive removed ones). */
  private setsBatch(sandboxId: string, sets: EgressAddressSets, create: boolean): string[] {
    const t = `inet ${this.table}`;
    return ADDRESS_SETS.flatMap((name) => {
      const setName = `${sandboxChain(sandboxId)}_${name}`;
      return [
        // auto-merge lets overlapping entries (10.0.0.0/8 and 10.1.2.3) share an interval set.
        ...(create ? [`add set ${t} ${setName} { type ipv4_addr; flags interval; auto-merge; }`] : []),
        `flush set ${t} ${setName}`,
        ...(sets[name].length > 0 ? [`add element ${t} ${setName} { ${sets[name].join(", ")} }`] : []),
      ];
    });
  }

  // nft (before 1.0.8) has no "delete if present": adding each object first makes every delete succeed.
  private removalBatch(sandboxId: string, hostInterface: string): string[] {
    const t = `inet ${this.table}`;
    const chain = sandboxChain(sandboxId);
    return [
      `add element ${t} sandbox_interfaces { "${hostInterface}" }`,
      `delete element ${t} sandbox_interfaces { "${hostInterface}" }`,
      `add chain ${t} ${chain}`,
      `add element ${t} sandbox_chains { "${hostInterface}" : jump ${chain} }`,
      `delete element ${t} sandbox_chains { "${hostInterface}" }`,
      `flush chain ${t} ${chain}`,
      `delete chain ${t} ${chain}`,
      ...ADDRESS_SETS.flatMap((name) => [
        `add set ${t} ${chain}_${name} { type ipv4_addr; flags interval; auto-merge; }`,
        `delete set ${t} ${chain}_${name}`,
      ]),
    ];
  }

  private async tableExists(): Promise<boolean> {
    const listing = parseNftJson(await this.nftRead(["-j", "list", "tables", "inet"]));
    return listing.some((item) => item.table?.name === this.table);
  }

  private async nft(batch: string[]): Promise<void> {
    await runCommand("nft", ["-f", "-"], { timeoutMs: NFT_TIMEOUT_MS, input: batch.map((line) => `${line}\n`).join("") });
  }

  private nftRead(args: string[]): Promise<string> {
    return runCommand("nft", args, { timeoutMs: NFT_TIMEOUT_MS });
  }
}

function sandboxChain(sandboxId: string): string {
  return `${SANDBOX_CHAIN_PREFIX}${sandboxId}`;
}

// The id and interface name are written into nft scripts: only the shapes we generate get through.
function checkedInterface(net: SandboxInterface): string {
  if (!isSandboxId(net.sandboxId)) throw new RangeError(`invalid sandbox id ${JSON.stringify(net.sandboxId)}`);
  const expected = hostInterfaceName(net.sandboxId);
  if (net.hostInterface !== expected) {
    throw new RangeError(`sandbox ${net.sandboxId} has host interface ${JSON.stringify(net.hostInterface)}, expected ${expected}`);
  }
  return expected;
}

function sameSets(a: EgressAddressSets, b: EgressAddressSets): boolean {
  return ADDRESS_SETS.every((name) => a[name].length === b[name].length && a[name].every((cidr, i) => cidr === b[name][i]));
}

/** The objects of `nft -j list …` output that this file reads. */
interface NftObject {
  table?: { family: string; name: string };
  chain?: { family: string; table: string; name: string };
}

function parseNftJson(text: string): NftObject[] {
  const parsed = JSON.parse(text) as { nftables?: NftObject[] };
  return parsed.nftables ?? [];
}
