// Which resolvers a sandbox uses. Like E2B, sandboxes ask public resolvers directly (the host's
// own resolver may sit on a private or loopback address a sandbox must not reach); the firewall
// lets port 53 through to exactly these servers whatever the egress rules say.
import ipaddr from "ipaddr.js";

/** The resolvers a sandbox gets unless the agent is configured with others. */
export const DEFAULT_DNS_SERVERS: readonly string[] = Object.freeze(["8.8.8.8", "1.1.1.1"]);
// glibc reads at most three `nameserver` lines (MAXNS) and silently ignores the rest.
const MAX_DNS_SERVERS = 3;

/** Checks a resolver list (IPv4 only: sandboxes have no IPv6) and returns it; throws RangeError otherwise. */
export function validateDnsServers(servers: readonly string[]): string[] {
  if (servers.length === 0) throw new RangeError("at least one DNS server is needed");
  if (servers.length > MAX_DNS_SERVERS) {
    throw new RangeError(`at most ${MAX_DNS_SERVERS} DNS servers are read by a sandbox's resolver; got ${servers.length}`);
  }
  for (const server of servers) {
    if (!ipaddr.IPv4.isValidFourPartDecimal(server)) throw new RangeError(`DNS server ${JSON.stringify(server)} is not an IPv4 address`);
  }
  return [...servers];
}

/** The content of /etc/resolv.conf inside a sandbox that uses `servers`. */
export function resolvConf(servers: readonly string[] = DEFAULT_DNS_SERVERS): string {
  return ["# Written by the Wrenn host agent.", ...validateDnsServers(servers).map((server) => `nameserver ${server}`), ""].join("\n");
}
