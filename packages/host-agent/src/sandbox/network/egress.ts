// A sandbox's egress rules as E2B offers them (`allowOut` / `denyOut`: IPv4 addresses, IPv4 CIDRs
// or domain names), checked once at the edge and turned into the address sets the firewall loads.
//
// Semantics, in the order the firewall applies them:
//   1. the sandbox pool itself is never reachable (no sandbox-to-sandbox traffic, whatever allowOut says);
//   2. an allowOut entry that lies inside a blocked range (private, link-local, loopback, multicast,
//      0.0.0.0/8) opens that part of it; a broader entry such as 0.0.0.0/0 opens none of it;
//   3. the configured DNS servers on port 53 are reachable;
//   4. the blocked ranges are dropped;
//   5. allowOut wins over denyOut; denyOut 0.0.0.0/0 therefore means "no internet but allowOut";
//   6. everything else is allowed.
// They judge new connections: one already open when the rules change, or a domain's addresses
// move, keeps going (the firewall accepts established flows before any of this).
//
// Domains are resolved by the agent (A records only) when the rules are applied and again every
// refresh interval. That is an approximation: CDN-hosted names change addresses more often than
// any interval and answer differently per client, so the sandbox may resolve an address the firewall
// has not seen. The better design lets the sandbox's own DNS answers fill the sets (a resolver on
// the host that adds each answer to the set before returning it) or filters on TLS SNI / HTTP Host
// as E2B does; until then a domain entry is only as good as the agent's last lookup. Addresses a
// domain resolves to inside a blocked range stay blocked (a domain cannot open private space).
import { Resolver } from "node:dns/promises";
import { domainToASCII } from "node:url";
import ipaddr from "ipaddr.js";
import { logger } from "../../logging/logger.js";
import { InvalidRequestError } from "../errors.js";

const log = logger.child({ component: "egress" });

/** The CIDR that matches every IPv4 destination (E2B's `ALL_TRAFFIC`). */
export const ALL_TRAFFIC = "0.0.0.0/0";
export const DEFAULT_EGRESS_REFRESH_MS = 60_000;
const RESOLVE_TIMEOUT_MS = 5_000;

/**
 * Destinations a sandbox cannot reach unless an allowOut entry inside them opens them: RFC 1918
 * private space, carrier-grade NAT, link-local (cloud metadata lives at 169.254.169.254),
 * loopback, multicast and "this network".
 */
export const BLOCKED_RANGES: readonly string[] = Object.freeze([
  "0.0.0.0/8",
  "10.0.0.0/8",
  "100.64.0.0/10",
  "127.0.0.0/8",
  "169.254.0.0/16",
  "172.16.0.0/12",
  "192.168.0.0/16",
  "224.0.0.0/4",
]);

export type EgressList = "allowOut" | "denyOut";

export type EgressTarget =
  /** An address (as a /32) or a CIDR, in canonical form: "1.2.3.4/32", "10.0.0.0/8". */
  | { kind: "cidr"; cidr: string }
  /** A domain name in lower-case ASCII (punycode), without a trailing dot. */
  | { kind: "domain"; domain: string };

export interface EgressRules {
  allowOut: readonly EgressTarget[];
  denyOut: readonly EgressTarget[];
}

/** Rules that add nothing: every public destination reachable, nothing private. */
export const NO_EGRESS_RULES: EgressRules = Object.freeze({ allowOut: Object.freeze([]), denyOut: Object.freeze([]) });

/** An egress entry that is not an IPv4 address, IPv4 CIDR or domain name. */
export class InvalidEgressRuleError extends InvalidRequestError {
  constructor(
    readonly list: EgressList,
    readonly entry: unknown,
    reason: string,
  ) {
    super(`${list} entry ${JSON.stringify(entry)} ${reason}`);
    this.name = "InvalidEgressRuleError";
  }
}

/** Checks and normalises E2B-style egress lists; throws InvalidEgressRuleError naming the first bad entry. */
export function parseEgressRules(allowOut?: readonly unknown[], denyOut?: readonly unknown[]): EgressRules {
  return { allowOut: parseList("allowOut", allowOut), denyOut: parseList("denyOut", denyOut) };
}

function parseList(list: EgressList, entries: readonly unknown[] | undefined): EgressTarget[] {
  if (entries === undefined) return [];
  if (!Array.isArray(entries)) throw new InvalidEgressRuleError(list, entries, "is not a list");
  const seen = new Set<string>();
  const targets: EgressTarget[] = [];
  for (const entry of entries) {
    const target = parseEntry(list, entry);
    const key = target.kind === "cidr" ? target.cidr : target.domain;
    if (!seen.has(key)) (seen.add(key), targets.push(target));
  }
  return targets;
}

function parseEntry(list: EgressList, entry: unknown): EgressTarget {
  if (typeof entry !== "string") throw new InvalidEgressRuleError(list, entry, "is not a string");
  const text = entry.trim();
  if (/^[0-9./]+$/.test(text)) {
    if (ipaddr.IPv4.isValidFourPartDecimal(text)) return { kind: "cidr", cidr: `${ipaddr.IPv4.parse(text).toString()}/32` };
    if (ipaddr.IPv4.isValidCIDRFourPartDecimal(text)) {
      // Like Go's net.ParseCIDR (E2B's parser), a CIDR with host bits set means its network.
      const prefixLength = ipaddr.IPv4.parseCIDR(text)[1];
      return { kind: "cidr", cidr: `${ipaddr.IPv4.networkAddressFromCIDR(text).toString()}/${prefixLength}` };
    }
    throw new InvalidEgressRuleError(list, entry, "is not a valid IPv4 address or CIDR");
  }
  if (text.includes(":")) throw new InvalidEgressRuleError(list, entry, "is IPv6 or carries a port; sandboxes have IPv4 only and rules name hosts, not ports");
  if (text.includes("*")) throw new InvalidEgressRuleError(list, entry, "is a wildcard domain, which is not supported yet (domains are resolved to addresses)");
  const domain = domainName(text);
  if (domain === undefined) throw new InvalidEgressRuleError(list, entry, "is not an IPv4 address, an IPv4 CIDR or a domain name");
  return { kind: "domain", domain };
}

const DNS_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

// The WHATWG host parser (node:url) does IDNA and case folding; the label rules after it are RFC 1123's.
function domainName(text: string): string | undefined {
  const ascii = domainToASCII(text.endsWith(".") ? text.slice(0, -1) : text);
  if (!ascii || ascii.length > 253) return undefined;
  const labels = ascii.split(".");
  // A single label is no public name; a numeric last label means the parser read an IPv4 address.
  if (labels.length < 2 || !/^[a-z]/.test(labels.at(-1)!)) return undefined;
  return labels.every((label) => DNS_LABEL.test(label)) ? ascii : undefined;
}

/** Every domain the rules name, once. */
export function egressDomains(rules: EgressRules): string[] {
  const domains = [...rules.allowOut, ...rules.denyOut].flatMap((target) => (target.kind === "domain" ? [target.domain] : []));
  return [...new Set(domains)];
}

/** What the firewall loads for one sandbox: CIDRs, each list in the order it was built. */
export interface EgressAddressSets {
  /** allowOut entries lying inside a blocked range: accepted before the blocked ranges are dropped. */
  open: string[];
  /** The other allowOut entries and the addresses of allowOut domains. */
  allow: string[];
  /** denyOut entries and the addresses of denyOut domains. */
  deny: string[];
}

/** Turns rules plus the current answers for their domains (domain → IPv4 addresses) into address sets. */
export function egressAddressSets(rules: EgressRules, answers: ReadonlyMap<string, readonly string[]>): EgressAddressSets {
  const sets: EgressAddressSets = { open: [], allow: [], deny: [] };
  const cidrsOf = (target: EgressTarget): string[] =>
    target.kind === "cidr" ? [target.cidr] : (answers.get(target.domain) ?? []).map((address) => `${address}/32`);
  for (const target of rules.allowOut) {
    for (const cidr of cidrsOf(target)) (target.kind === "cidr" && insideBlockedRange(cidr) ? sets.open : sets.allow).push(cidr);
  }
  sets.deny = rules.denyOut.flatMap(cidrsOf);
  return { open: unique(sets.open), allow: unique(sets.allow), deny: unique(sets.deny) };
}

function insideBlockedRange(cidr: string): boolean {
  const [address, prefixLength] = ipaddr.IPv4.parseCIDR(cidr);
  return BLOCKED_RANGES.some((range) => {
    const [rangeAddress, rangePrefixLength] = ipaddr.IPv4.parseCIDR(range);
    return prefixLength >= rangePrefixLength && address.match(rangeAddress, rangePrefixLength);
  });
}

const unique = (items: string[]): string[] => [...new Set(items)];

/** Looks up the IPv4 addresses of a domain; rejects when it cannot. */
export type ResolveIPv4 = (domain: string) => Promise<string[]>;

export interface EgressResolverOptions {
  /** Defaults to node:dns `resolve4` against the host's resolvers (not /etc/hosts). */
  resolve4?: ResolveIPv4;
  /** How often the firewall re-resolves the domains of its sandboxes; default 60 s. */
  refreshIntervalMs?: number;
}

/**
 * Resolves egress domains for the firewall, remembering each domain's last good answer: a lookup
 * that fails keeps the addresses that worked before rather than emptying the set (which would
 * lift a deny or cut an allow because of a DNS hiccup).
 */
export class EgressResolver {
  readonly refreshIntervalMs: number;
  private readonly resolve4: ResolveIPv4;
  private readonly lastAnswers = new Map<string, string[]>();

  constructor(options: EgressResolverOptions = {}) {
    this.refreshIntervalMs = options.refreshIntervalMs ?? DEFAULT_EGRESS_REFRESH_MS;
    if (!(this.refreshIntervalMs > 0)) throw new RangeError(`egress refresh interval ${this.refreshIntervalMs} ms is not positive`);
    this.resolve4 = options.resolve4 ?? defaultResolve4();
  }

  /** Current answers for `domains`, all looked up at once. */
  async resolve(domains: Iterable<string>): Promise<Map<string, string[]>> {
    const wanted = [...new Set(domains)];
    await Promise.all(
      wanted.map(async (domain) => {
        try {
          const addresses = (await this.resolve4(domain)).filter((address) => ipaddr.IPv4.isValidFourPartDecimal(address));
          this.lastAnswers.set(domain, [...new Set(addresses)].sort());
        } catch (err) {
          const kept = this.lastAnswers.get(domain) ?? [];
          log.warn({ domain, err: err instanceof Error ? err.message : String(err), kept }, "egress domain lookup failed; keeping its last addresses");
          this.lastAnswers.set(domain, kept);
        }
      }),
    );
    return new Map(wanted.map((domain) => [domain, this.lastAnswers.get(domain) ?? []]));
  }

  /** Drops remembered answers of every domain not in `domains` (those no sandbox names any more). */
  retain(domains: Iterable<string>): void {
    const kept = new Set(domains);
    for (const domain of [...this.lastAnswers.keys()]) if (!kept.has(domain)) this.lastAnswers.delete(domain);
  }
}

function defaultResolve4(): ResolveIPv4 {
  const resolver = new Resolver({ timeout: RESOLVE_TIMEOUT_MS, tries: 2 });
  return (domain) => resolver.resolve4(domain);
}
