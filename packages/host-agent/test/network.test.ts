// The network concern's parts that need no traffic: the slot allocator, namespaces and veths,
// resolv.conf, egress rule parsing and resolution, and the orphan sweep.
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { runCommand } from "../src/exec/command.js";
import { Cleanup } from "../src/sandbox/cleanup.js";
import { HostCapacityError, InvalidRequestError } from "../src/sandbox/errors.js";
import { DEFAULT_DNS_SERVERS, resolvConf } from "../src/sandbox/network/dns.js";
import {
  ALL_TRAFFIC,
  EgressResolver,
  InvalidEgressRuleError,
  egressAddressSets,
  egressDomains,
  parseEgressRules,
} from "../src/sandbox/network/egress.js";
import { Firewall } from "../src/sandbox/network/firewall.js";
import {
  createNetwork,
  deleteNamespace,
  destroyNetwork,
  hostInterfaceName,
  linkExists,
  listNamespaces,
  planNetwork,
} from "../src/sandbox/network/namespace.js";
import { removeOrphanNetworks } from "../src/sandbox/network/orphans.js";
import { DEFAULT_POOL_CIDR, SlotAllocator, SlotsExhaustedError } from "../src/sandbox/network/slots.js";
import { TEST_POOL, TEST_PREFIX, TEST_TABLE, leftovers, networkTestSkip } from "./network-fixtures.js";

const skip = await networkTestSkip();

describe("SlotAllocator", () => {
  test("slot 0 and the last slot get the first and last /30 of the pool", () => {
    const pool = new SlotAllocator(TEST_POOL);
    assert.equal(pool.total, 64);
    assert.deepEqual(pool.addresses(0), { network: "10.210.0.0", hostAddress: "10.210.0.1", sandboxAddress: "10.210.0.2", prefixLength: 30 });
    assert.deepEqual(pool.addresses(63), { network: "10.210.0.252", hostAddress: "10.210.0.253", sandboxAddress: "10.210.0.254", prefixLength: 30 });
    assert.throws(() => pool.addresses(64), RangeError);
    assert.throws(() => pool.addresses(-1), RangeError);
    assert.throws(() => pool.addresses(1.5), RangeError);
  });

  test("the default pool is 10.200.0.0/16 with 16384 slots, and slots cross octet boundaries", () => {
    const pool = new SlotAllocator();
    assert.equal(pool.cidr, DEFAULT_POOL_CIDR);
    assert.equal(pool.total, 16384);
    assert.equal(pool.addresses(64).sandboxAddress, "10.200.1.2");
    assert.equal(pool.addresses(16383).hostAddress, "10.200.255.253");
  });

  test("addresses above 128.0.0.0 are computed without sign trouble", () => {
    const pool = new SlotAllocator("192.168.128.0/30");
    assert.equal(pool.total, 1);
    assert.equal(pool.addresses(0).sandboxAddress, "192.168.128.2");
  });

  test("an invalid pool, one with host bits set, or one smaller than a /30 is a RangeError", () => {
    for (const cidr of ["", "10.200.0.0", "10.200/16", "10.200.0.0/33", "300.0.0.0/8", "fd00::/64", "10.200.0.0/31", "10.200.0.0/32", "10.200.0.1/16"]) {
      assert.throws(() => new SlotAllocator(cidr), RangeError, cidr);
    }
  });

  test("allocate hands out the lowest free slot until the pool is exhausted", () => {
    const pool = new SlotAllocator("10.210.0.0/28");
    assert.deepEqual([pool.allocate(), pool.allocate(), pool.allocate(), pool.allocate()], [0, 1, 2, 3]);
    assert.equal(pool.used, 4);
    assert.throws(() => pool.allocate(), (err: unknown) => err instanceof SlotsExhaustedError && err instanceof HostCapacityError && /10\.210\.0\.0\/28/.test(err.message));
    pool.release(2);
    assert.equal(pool.allocate(), 2);
  });

  test("release is idempotent and reserve takes a given slot once", () => {
    const pool = new SlotAllocator("10.210.0.0/28");
    pool.release(1);
    pool.release(1);
    assert.equal(pool.used, 0);
    pool.reserve(2);
    assert.ok(pool.isTaken(2));
    assert.throws(() => pool.reserve(2), RangeError);
    assert.throws(() => pool.reserve(4), RangeError);
    assert.deepEqual([pool.allocate(), pool.allocate(), pool.allocate()], [0, 1, 3]);
    pool.release(2);
    pool.release(2);
    assert.equal(pool.used, 3);
  });

  test("contains and slotOf tell pool addresses from others", () => {
    const pool = new SlotAllocator(TEST_POOL);
    assert.ok(pool.contains("10.210.0.0"));
    assert.ok(pool.contains("10.210.0.255"));
    assert.ok(!pool.contains("10.210.1.0"));
    assert.ok(!pool.contains("10.209.255.255"));
    assert.ok(!pool.contains("not an address"));
    assert.equal(pool.slotOf("10.210.0.6"), 1);
    assert.equal(pool.slotOf("10.211.0.6"), undefined);
  });
});

describe("planNetwork", () => {
  test("names come from the sandbox id and addresses from the pool slot", () => {
    const pool = new SlotAllocator(TEST_POOL);
    const net = planNetwork("sbx-1", 3, pool);
    assert.equal(net.namespace, "wrenn-sbx-1");
    assert.equal(net.namespacePath, "/var/run/netns/wrenn-sbx-1");
    assert.equal(net.hostInterface, hostInterfaceName("sbx-1"));
    assert.match(net.hostInterface, /^wv[0-9a-f]{12}$/);
    assert.equal(net.hostAddress, "10.210.0.13");
    assert.equal(net.sandboxAddress, "10.210.0.14");
    assert.throws(() => planNetwork("bad id", 0, pool), RangeError);
    assert.throws(() => planNetwork("ok", 64, pool), RangeError);
  });
});

describe("resolvConf", () => {
  test("lists the servers as nameserver lines, public resolvers by default", () => {
    assert.deepEqual(DEFAULT_DNS_SERVERS, ["8.8.8.8", "1.1.1.1"]);
    assert.equal(resolvConf(), "# Written by the Wrenn host agent.\nnameserver 8.8.8.8\nnameserver 1.1.1.1\n");
    assert.match(resolvConf(["9.9.9.9"]), /^nameserver 9\.9\.9\.9$/m);
  });

  test("refuses no servers, more than the resolver reads, and non-IPv4 entries", () => {
    assert.throws(() => resolvConf([]), RangeError);
    assert.throws(() => resolvConf(["1.1.1.1", "1.0.0.1", "8.8.8.8", "8.8.4.4"]), RangeError);
    assert.throws(() => resolvConf(["2001:4860:4860::8888"]), RangeError);
    assert.throws(() => resolvConf(["dns.google"]), RangeError);
  });
});

describe("egress rules", () => {
  test("addresses, CIDRs and domains are accepted and normalised", () => {
    const rules = parseEgressRules(["1.1.1.1", "8.8.8.0/24", "Example.COM.", "10.1.2.3/8", "bücher.example", "1.1.1.1"], [ALL_TRAFFIC]);
    assert.deepEqual(rules.allowOut, [
      { kind: "cidr", cidr: "1.1.1.1/32" },
      { kind: "cidr", cidr: "8.8.8.0/24" },
      { kind: "domain", domain: "example.com" },
      { kind: "cidr", cidr: "10.0.0.0/8" },
      { kind: "domain", domain: "xn--bcher-kva.example" },
    ]);
    assert.deepEqual(rules.denyOut, [{ kind: "cidr", cidr: "0.0.0.0/0" }]);
    assert.deepEqual(parseEgressRules(), { allowOut: [], denyOut: [] });
    assert.deepEqual(egressDomains(parseEgressRules(["a.example", "1.2.3.4"], ["b.example", "a.example"])), ["a.example", "b.example"]);
  });

  test("anything else is an InvalidEgressRuleError naming the list and the entry", () => {
    const bad: [unknown, RegExp][] = [
      ["10.0.0.256", /is not a valid IPv4 address or CIDR/],
      ["10.0.0.0/33", /is not a valid IPv4 address or CIDR/],
      ["10.1", /is not a valid IPv4 address or CIDR/],
      ["::1", /IPv6/],
      ["2001:db8::/32", /IPv6/],
      ["example.com:443", /port/],
      ["*.example.com", /wildcard/],
      ["localhost", /not an IPv4 address, an IPv4 CIDR or a domain name/],
      ["exa mple.com", /not an IPv4 address/],
      ["-bad.example", /not an IPv4 address/],
      ["0x7f.1", /not an IPv4 address/],
      ["http://example.com", /IPv6 or carries a port/],
      ["", /not an IPv4 address/],
      [42, /is not a string/],
    ];
    for (const [entry, reason] of bad) {
      assert.throws(
        () => parseEgressRules([], [entry as string]),
        (err: unknown) =>
          err instanceof InvalidEgressRuleError &&
          err instanceof InvalidRequestError &&
          err.list === "denyOut" &&
          err.message.startsWith(`denyOut entry ${JSON.stringify(entry)}`) &&
          reason.test(err.message),
        String(entry),
      );
    }
    assert.throws(() => parseEgressRules(["ok.example", "bad_name.example"]), /allowOut entry "bad_name\.example"/);
  });

  test("allow entries inside a blocked range open it; broader ones and domains do not", () => {
    const rules = parseEgressRules(["10.211.0.1", "192.168.1.0/24", ALL_TRAFFIC, "8.0.0.0/7", "api.example"], ["1.2.3.0/24", "bad.example"]);
    const answers = new Map([
      ["api.example", ["203.0.113.7", "169.254.169.254"]],
      ["bad.example", ["198.51.100.9"]],
    ]);
    assert.deepEqual(egressAddressSets(rules, answers), {
      open: ["10.211.0.1/32", "192.168.1.0/24"],
      allow: ["0.0.0.0/0", "8.0.0.0/7", "203.0.113.7/32", "169.254.169.254/32"],
      deny: ["1.2.3.0/24", "198.51.100.9/32"],
    });
    // A domain nobody could resolve contributes nothing yet.
    assert.deepEqual(egressAddressSets(rules, new Map()).deny, ["1.2.3.0/24"]);
  });

  test("the resolver keeps a domain's last answer when a lookup fails, and forgets unused domains", async () => {
    let answer: string[] | Error = ["198.51.100.1", "not-an-address", "198.51.100.1"];
    const calls: string[] = [];
    const resolver = new EgressResolver({
      refreshIntervalMs: 1000,
      resolve4: async (domain) => {
        calls.push(domain);
        if (answer instanceof Error) throw answer;
        return answer;
      },
    });
    assert.equal(resolver.refreshIntervalMs, 1000);
    assert.deepEqual(await resolver.resolve(["a.example"]), new Map([["a.example", ["198.51.100.1"]]]));
    answer = new Error("queryA ETIMEOUT a.example");
    assert.deepEqual(await resolver.resolve(["a.example", "b.example"]), new Map([["a.example", ["198.51.100.1"]], ["b.example", []]]));
    resolver.retain(["b.example"]);
    assert.deepEqual(await resolver.resolve(["a.example"]), new Map([["a.example", []]]));
    assert.deepEqual(calls, ["a.example", "a.example", "b.example", "a.example"]);
    assert.throws(() => new EgressResolver({ refreshIntervalMs: 0 }), RangeError);
  });
});

describe("sandbox namespaces", { skip }, () => {
  const pool = new SlotAllocator(TEST_POOL);

  after(async () => {
    assert.deepEqual(await leftovers(TEST_TABLE), []);
  });

  test("createNetwork builds the namespace, veth and addresses, and its cleanup removes them", async () => {
    const cleanup = new Cleanup();
    const slot = pool.allocate();
    cleanup.defer("release slot", () => pool.release(slot));
    let net;
    try {
      net = await createNetwork(`${TEST_PREFIX}n1`, slot, pool, cleanup);
      assert.deepEqual(net, planNetwork(`${TEST_PREFIX}n1`, slot, pool));
      assert.ok((await listNamespaces()).includes(net.namespace));
      assert.ok(await linkExists(net.hostInterface));
      assert.ok(!(await rootVeths()).includes("eth0"), "the sandbox end appeared in the root namespace");
      const inside = JSON.parse(await runCommand("ip", ["-n", net.namespace, "-json", "addr", "show", "eth0"], { timeoutMs: 5000 })) as {
        addr_info: { family: string; local: string; prefixlen: number }[];
      }[];
      assert.ok(inside[0]?.addr_info.some((a) => a.family === "inet" && a.local === net!.sandboxAddress && a.prefixlen === 30));
      const routes = JSON.parse(await runCommand("ip", ["-n", net.namespace, "-json", "route", "show", "default"], { timeoutMs: 5000 })) as { gateway: string }[];
      assert.equal(routes[0]?.gateway, net.hostAddress);
    } finally {
      await cleanup.run();
    }
    assert.ok(!(await listNamespaces()).includes(net!.namespace));
    assert.ok(!(await linkExists(net!.hostInterface)));
    assert.equal(pool.used, 0);
    await destroyNetwork(net!); // already gone: a no-op
  });
});

// The root namespace may have an eth0 of its own (a NIC); a veth of that name would be the sandbox's end.
async function rootVeths(): Promise<string[]> {
  const links = JSON.parse(await runCommand("ip", ["-json", "link", "show", "type", "veth"], { timeoutMs: 5000 })) as { ifname: string }[];
  return links.map((link) => link.ifname);
}

describe("removeOrphanNetworks", { skip }, () => {
  const pool = new SlotAllocator(TEST_POOL);
  const table = `${TEST_TABLE}o`;

  after(async () => {
    assert.deepEqual(await leftovers(table), []);
  });

  test("removes namespaces, veths and firewall chains of unknown sandboxes of its pool and nothing else", async () => {
    const cleanup = new Cleanup();
    const firewall = new Firewall({ table, pool, dnsServers: ["192.0.2.53"] });
    const keptNamespace = `${TEST_PREFIX}-keep`;
    try {
      await firewall.setup();
      cleanup.defer("tear down firewall", () => firewall.teardown());
      await runCommand("ip", ["netns", "add", keptNamespace], { timeoutMs: 5000 });
      cleanup.defer(`delete ${keptNamespace}`, () => runCommand("ip", ["netns", "del", keptNamespace], { timeoutMs: 5000 }));
      const known = await createNetwork(`${TEST_PREFIX}known`, pool.allocate(), pool, cleanup);
      const orphan = await createNetwork(`${TEST_PREFIX}orphan`, pool.allocate(), pool, cleanup);
      // Another agent's sandbox on this host: same naming, another pool.
      const foreign = await createNetwork(`${TEST_PREFIX}foreign`, 0, new SlotAllocator("10.212.0.0/30"), cleanup);
      // A namespace whose creation stopped before its veth: another agent's still being built while
      // young, abandoned once older than the grace period.
      const bare = `wrenn-${TEST_PREFIX}bare`;
      await runCommand("ip", ["netns", "add", bare], { timeoutMs: 5000 });
      cleanup.defer(`delete ${bare}`, () => deleteNamespace(bare));
      await firewall.addSandbox(known, parseEgressRules(), cleanup);
      await firewall.addSandbox(orphan, parseEgressRules(), cleanup);
      // A chain whose network is already gone: only the firewall holds it.
      const chainOnly = planNetwork(`${TEST_PREFIX}chain`, pool.allocate(), pool);
      await firewall.addSandbox(chainOnly, parseEgressRules(["1.2.3.4"]), cleanup);

      const youngBare = await removeOrphanNetworks(new Set([known.sandboxId, orphan.sandboxId, chainOnly.sandboxId]), firewall, { sandboxIdPrefix: TEST_PREFIX });
      assert.deepEqual(youngBare, { namespaces: [], interfaces: [], firewallSandboxes: [] });

      const removed = await removeOrphanNetworks(new Set([known.sandboxId]), firewall, { sandboxIdPrefix: TEST_PREFIX, addresslessGraceMs: 0 });

      assert.deepEqual({ ...removed, namespaces: removed.namespaces.sort(), firewallSandboxes: removed.firewallSandboxes.sort() }, {
        namespaces: [bare, orphan.namespace].sort(),
        interfaces: [orphan.hostInterface],
        firewallSandboxes: [orphan.sandboxId, chainOnly.sandboxId].sort(),
      });
      const namespaces = await listNamespaces();
      assert.ok(namespaces.includes(known.namespace) && namespaces.includes(keptNamespace) && namespaces.includes(foreign.namespace));
      assert.ok(!namespaces.includes(orphan.namespace) && !namespaces.includes(bare));
      assert.ok(await linkExists(known.hostInterface));
      assert.ok(await linkExists(foreign.hostInterface));
      assert.ok(!(await linkExists(orphan.hostInterface)));
      assert.deepEqual(await firewall.knownSandboxes(), [known.sandboxId]);
      // A second sweep finds nothing.
      assert.deepEqual(await removeOrphanNetworks(new Set([known.sandboxId]), firewall, { sandboxIdPrefix: TEST_PREFIX }), {
        namespaces: [],
        interfaces: [],
        firewallSandboxes: [],
      });
    } finally {
      await cleanup.run();
    }
  });

  test("a sweep running while another agent builds its networks never takes one of them", async () => {
    // An agent starting up sweeps every id (no prefix) while the other agents on the host create
    // sandboxes: a network between `netns add` and its addresses must not look abandoned.
    const firewall = new Firewall({ table, pool, dnsServers: ["192.0.2.53"] });
    const builder = new SlotAllocator("10.212.0.0/26"); // another agent's pool
    const cleanup = new Cleanup();
    await firewall.setup();
    cleanup.defer("tear down firewall", () => firewall.teardown());
    let building = true;
    const taken: string[] = [];
    const racers = Array.from({ length: 40 }, (_, i) => planNetwork(`${TEST_PREFIX}race${i}`, i % 16, builder));
    const theirs = new Set(racers.flatMap((net) => [net.hostInterface, net.namespace]));
    const sweeping = (async () => {
      let sweeps = 0;
      while (building || sweeps === 0) {
        const removed = await removeOrphanNetworks(new Set(), firewall);
        taken.push(...[...removed.interfaces, ...removed.namespaces].filter((name) => theirs.has(name)));
        sweeps++;
      }
      return sweeps;
    })();
    try {
      for (const net of racers) {
        const own = new Cleanup();
        try {
          await createNetwork(net.sandboxId, net.slot, builder, own);
        } finally {
          await own.run();
        }
      }
    } finally {
      building = false;
      const sweeps = await sweeping;
      await cleanup.run();
      assert.ok(sweeps > 1, "the sweep ran alongside the creates");
    }
    assert.deepEqual(taken, []);
  });
});
