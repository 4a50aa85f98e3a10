// The firewall with real traffic, all of it on this machine: "sandboxes" are namespaces made by
// createNetwork, "the internet" is a namespace holding TEST-NET-2 addresses (198.51.100.0/24)
// behind a veth, and "a private upstream" another one on 10.211.0.0/24. Nothing is routed off-box.
import assert from "node:assert/strict";
import { once } from "node:events";
import net, { type AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { runCommand } from "../src/exec/command.js";
import { Cleanup } from "../src/sandbox/cleanup.js";
import { ALL_TRAFFIC, EgressResolver, parseEgressRules } from "../src/sandbox/network/egress.js";
import { Firewall } from "../src/sandbox/network/firewall.js";
import { createNetwork, type SandboxNetwork } from "../src/sandbox/network/namespace.js";
import { SlotAllocator } from "../src/sandbox/network/slots.js";
import { FIREWALL_TEST_POOL, TEST_PREFIX, TEST_TABLE, assertRoutedVia, createFakeHost, leftovers, listen, networkTestSkip, probe } from "./network-fixtures.js";

const skip = await networkTestSkip();

const INTERNET = { namespace: `${TEST_PREFIX}-inet`, hostInterface: `${TEST_PREFIX}i`, hostAddress: "198.51.100.254", addresses: ["198.51.100.1", "198.51.100.2"] };
const PRIVATE = { namespace: `${TEST_PREFIX}-priv`, hostInterface: `${TEST_PREFIX}p`, hostAddress: "10.211.0.254", address: "10.211.0.1" };
const PORT = 8080;

describe("the sandbox firewall", { skip }, () => {
  const fixtures = new Cleanup();
  const pool = new SlotAllocator(FIREWALL_TEST_POOL);
  /** What the fake resolver answers, per domain. */
  const dnsAnswers = new Map<string, string[] | Error>();
  const resolver = new EgressResolver({
    refreshIntervalMs: 3_600_000,
    resolve4: async (domain) => {
      const answer = dnsAnswers.get(domain) ?? new Error(`queryA ENOTFOUND ${domain}`);
      if (answer instanceof Error) throw answer;
      return answer;
    },
  });
  const firewall = new Firewall({ table: TEST_TABLE, pool, dnsServers: [PRIVATE.address], resolver });
  let hostServer: net.Server;
  let hostPort: number;
  const hostConnections: string[] = [];
  const createdInterfaces: string[] = [];

  before(async () => {
    // A failing hook's error is printed after the twelve tests it cancels; say it first, too.
    const failed = (err: unknown) => {
      console.error(`the firewall's fixtures did not come up: ${err instanceof Error ? err.stack : String(err)}`);
      throw err;
    };
    await fixtures.undoOnFailure(async () => {
      await createFakeHost(INTERNET.namespace, INTERNET.hostInterface, INTERNET.hostAddress, INTERNET.addresses, fixtures);
      await createFakeHost(PRIVATE.namespace, PRIVATE.hostInterface, PRIVATE.hostAddress, [PRIVATE.address], fixtures);
      for (const address of INTERNET.addresses) await assertRoutedVia(address, INTERNET.hostInterface);
      await assertRoutedVia(PRIVATE.address, PRIVATE.hostInterface);
      await listen(INTERNET.namespace, "tcp", PORT, fixtures);
      await listen(PRIVATE.namespace, "tcp", PORT, fixtures);
      await listen(PRIVATE.namespace, "tcp", 53, fixtures);
      await listen(PRIVATE.namespace, "udp", 53, fixtures);
      // A host service on every address, as the agent's API or an SSH daemon would be.
      hostServer = net.createServer((socket) => {
        hostConnections.push(socket.remoteAddress ?? "");
        socket.end(`${socket.remoteAddress}\n`);
      });
      hostServer.listen(0, "::");
      await once(hostServer, "listening");
      hostPort = (hostServer.address() as AddressInfo).port;
      fixtures.defer("close host listener", () => new Promise((resolve) => hostServer.close(resolve)));
      await firewall.setup();
      fixtures.defer("tear down firewall", () => firewall.teardown());
    }).catch(failed);
  }, { timeout: 120_000 }); // ~2 s normally; a hang fails in minutes, not at the file's timeout

  after(async () => {
    await fixtures.run();
    assert.deepEqual(await leftovers(TEST_TABLE, createdInterfaces), []);
  });

  /** A sandbox network under `rules`, torn down (network, firewall entries, slot) by `cleanup`. */
  async function sandbox(name: string, cleanup: Cleanup, allowOut: string[] = [], denyOut: string[] = [], register = true): Promise<SandboxNetwork> {
    const slot = pool.allocate();
    cleanup.defer(`release slot ${slot}`, () => pool.release(slot));
    const network = await createNetwork(`${TEST_PREFIX}${name}`, slot, pool, cleanup);
    createdInterfaces.push(network.hostInterface);
    if (register) await firewall.addSandbox(network, parseEgressRules(allowOut, denyOut), cleanup);
    return network;
  }

  async function withSandboxes(body: (cleanup: Cleanup) => Promise<void>): Promise<void> {
    const cleanup = new Cleanup();
    try {
      await body(cleanup);
    } finally {
      await cleanup.run();
    }
  }

  test("a sandbox reaches the internet through NAT, and the far end sees the host's address", () =>
    withSandboxes(async (cleanup) => {
      const a = await sandbox("a", cleanup);
      assert.deepEqual(await probe(a.namespace, "tcp", INTERNET.addresses[0]!, PORT), { result: "connected", peerSaw: INTERNET.hostAddress });
    }));

  test("a sandbox cannot open a connection to any host address, while the host can reach the sandbox", () =>
    withSandboxes(async (cleanup) => {
      const a = await sandbox("a", cleanup);
      const unregistered = await sandbox("u", cleanup, [], [], false);
      // Control: the same namespace set-up without firewall registration reaches the host service,
      // which also shows this table's rules touch only interfaces it registered.
      assert.equal((await probe(unregistered.namespace, "tcp", unregistered.hostAddress, hostPort)).result, "connected");
      const before = hostConnections.length;
      for (const address of [a.hostAddress, INTERNET.hostAddress, PRIVATE.hostAddress, unregistered.hostAddress]) {
        assert.equal((await probe(a.namespace, "tcp", address, hostPort)).result, "timeout", `sandbox reached the host on ${address}`);
      }
      assert.equal(hostConnections.length, before);
      // The agent → envd direction: the host opens, the sandbox's replies come back.
      const inside = new Cleanup();
      try {
        await listen(a.namespace, "tcp", PORT, inside);
        assert.deepEqual(await probeFromHost(a.sandboxAddress, PORT), { result: "connected", peerSaw: a.hostAddress });
      } finally {
        await inside.run();
      }
    }));

  test("a sandbox cannot reach the host over IPv6 link-local either", () =>
    withSandboxes(async (cleanup) => {
      const a = await sandbox("a", cleanup);
      const unregistered = await sandbox("u", cleanup, [], [], false);
      // Both ends must be past duplicate address detection, or the probe cannot even bind.
      await linkLocalAddress(a.sandboxInterface, a.namespace);
      await linkLocalAddress(unregistered.sandboxInterface, unregistered.namespace);
      const hostLinkLocal = async (network: SandboxNetwork) => `${await linkLocalAddress(network.hostInterface)}%eth0`;
      assert.equal((await probe(unregistered.namespace, "tcp", await hostLinkLocal(unregistered), hostPort)).result, "connected");
      assert.equal((await probe(a.namespace, "tcp", await hostLinkLocal(a), hostPort)).result, "timeout");
    }));

  test("a sandbox cannot reach another sandbox, even when its allowOut names it", () =>
    withSandboxes(async (cleanup) => {
      const b = await sandbox("b", cleanup);
      const a = await sandbox("a", cleanup, [FIREWALL_TEST_POOL, b.sandboxAddress]);
      await listen(b.namespace, "tcp", PORT, cleanup);
      // Control: without the firewall, the host routes one namespace's traffic to the other.
      const u = await sandbox("u", cleanup, [], [], false);
      const v = await sandbox("v", cleanup, [], [], false);
      await listen(v.namespace, "tcp", PORT, cleanup);
      assert.equal((await probe(u.namespace, "tcp", v.sandboxAddress, PORT)).result, "connected");
      assert.equal((await probe(u.namespace, "tcp", b.sandboxAddress, PORT)).result, "timeout", "an unregistered namespace opened a connection into a sandbox");
      assert.equal((await probe(a.namespace, "tcp", b.sandboxAddress, PORT)).result, "timeout");
      assert.equal((await probe(b.namespace, "tcp", a.sandboxAddress, PORT)).result, "timeout");
      assert.equal((await probe(a.namespace, "tcp", b.hostAddress, hostPort)).result, "timeout");
      assert.equal((await probeFromHost(b.sandboxAddress, PORT)).result, "connected", "the host lost its way to the sandbox");
    }));

  test("denyOut blocks a range, and allowOut wins over denyOut 0.0.0.0/0", () =>
    withSandboxes(async (cleanup) => {
      const denied = await sandbox("d", cleanup, [], ["198.51.100.0/24"]);
      const allowlisted = await sandbox("w", cleanup, [INTERNET.addresses[1]!], [ALL_TRAFFIC]);
      assert.equal((await probe(denied.namespace, "tcp", INTERNET.addresses[0]!, PORT)).result, "timeout");
      assert.equal((await probe(allowlisted.namespace, "tcp", INTERNET.addresses[0]!, PORT)).result, "timeout");
      assert.equal((await probe(allowlisted.namespace, "tcp", INTERNET.addresses[1]!, PORT)).result, "connected");
    }));

  test("private addresses are unreachable unless an allowOut entry inside the private range opens them", () =>
    withSandboxes(async (cleanup) => {
      const plain = await sandbox("p", cleanup);
      const everything = await sandbox("e", cleanup, [ALL_TRAFFIC]);
      const opened = await sandbox("o", cleanup, [PRIVATE.address]);
      assert.equal((await probe(plain.namespace, "tcp", PRIVATE.address, PORT)).result, "timeout");
      assert.equal((await probe(everything.namespace, "tcp", PRIVATE.address, PORT)).result, "timeout");
      assert.deepEqual(await probe(opened.namespace, "tcp", PRIVATE.address, PORT), { result: "connected", peerSaw: PRIVATE.hostAddress });
    }));

  test("the configured DNS server answers on port 53 (udp and tcp) even when private and everything is denied", () =>
    withSandboxes(async (cleanup) => {
      const a = await sandbox("a", cleanup, [], [ALL_TRAFFIC]);
      assert.equal((await probe(a.namespace, "udp", PRIVATE.address, 53)).result, "answered");
      assert.equal((await probe(a.namespace, "tcp", PRIVATE.address, 53)).result, "connected");
      assert.equal((await probe(a.namespace, "tcp", PRIVATE.address, PORT)).result, "timeout");
      assert.equal((await probe(a.namespace, "tcp", INTERNET.addresses[0]!, PORT)).result, "timeout");
    }));

  test("domains are resolved when rules load and re-resolved by refreshEgress", () =>
    withSandboxes(async (cleanup) => {
      dnsAnswers.set("upstream.example", [INTERNET.addresses[0]!]);
      dnsAnswers.set("api.example", [INTERNET.addresses[1]!]);
      cleanup.defer("forget fake DNS answers", () => dnsAnswers.clear());
      const denied = await sandbox("d", cleanup, [], ["upstream.example"]);
      const allowlisted = await sandbox("w", cleanup, ["api.example"], [ALL_TRAFFIC]);
      assert.equal((await probe(denied.namespace, "tcp", INTERNET.addresses[0]!, PORT)).result, "timeout");
      assert.equal((await probe(denied.namespace, "tcp", INTERNET.addresses[1]!, PORT)).result, "connected");
      assert.equal((await probe(allowlisted.namespace, "tcp", INTERNET.addresses[1]!, PORT)).result, "connected");
      assert.equal((await probe(allowlisted.namespace, "tcp", INTERNET.addresses[0]!, PORT)).result, "timeout");

      // The names move to each other's address.
      dnsAnswers.set("upstream.example", [INTERNET.addresses[1]!]);
      dnsAnswers.set("api.example", [INTERNET.addresses[0]!]);
      await firewall.refreshEgress();
      assert.equal((await probe(denied.namespace, "tcp", INTERNET.addresses[0]!, PORT)).result, "connected");
      assert.equal((await probe(denied.namespace, "tcp", INTERNET.addresses[1]!, PORT)).result, "timeout");
      assert.equal((await probe(allowlisted.namespace, "tcp", INTERNET.addresses[0]!, PORT)).result, "connected");
      assert.equal((await probe(allowlisted.namespace, "tcp", INTERNET.addresses[1]!, PORT)).result, "timeout");

      // A failed lookup keeps the last answer rather than lifting the deny.
      dnsAnswers.set("upstream.example", new Error("queryA ETIMEOUT upstream.example"));
      await firewall.refreshEgress();
      assert.deepEqual(await setElements(`sandbox_${denied.sandboxId}_deny`), [`${INTERNET.addresses[1]}`]);
    }));

  test("removeSandbox leaves nothing of the sandbox in the table and is safe to repeat", () =>
    withSandboxes(async (cleanup) => {
      const a = await sandbox("a", cleanup, ["10.211.0.0/24"], ["198.51.100.0/24"]);
      assert.ok((await firewall.knownSandboxes()).includes(a.sandboxId));
      assert.ok(mentions(await tableText(), a));
      await firewall.removeSandbox(a);
      await firewall.removeSandbox(a.sandboxId);
      await firewall.removeSandbox(`${TEST_PREFIX}never`);
      assert.ok(!(await firewall.knownSandboxes()).includes(a.sandboxId));
      assert.ok(!mentions(await tableText(), a), await tableText());
      // Unregistered, the sandbox is no longer filtered by this table: it reaches the host again.
      assert.equal((await probe(a.namespace, "tcp", a.hostAddress, hostPort)).result, "connected");
    }));

  test("setup is idempotent and keeps the sandboxes already in the table", () =>
    withSandboxes(async (cleanup) => {
      const a = await sandbox("a", cleanup, [], ["198.51.100.0/24"]);
      const rulesBefore = await tableText();
      await firewall.setup();
      await firewall.setup();
      assert.equal(withoutHandles(await tableText()), withoutHandles(rulesBefore));
      assert.ok((await firewall.knownSandboxes()).includes(a.sandboxId));
      assert.equal((await probe(a.namespace, "tcp", INTERNET.addresses[0]!, PORT)).result, "timeout");
      assert.equal((await probe(a.namespace, "tcp", a.hostAddress, hostPort)).result, "timeout");
    }));

  test("addSandbox again replaces the rules atomically", () =>
    withSandboxes(async (cleanup) => {
      const a = await sandbox("a", cleanup, [], ["198.51.100.0/24"]);
      assert.equal((await probe(a.namespace, "tcp", INTERNET.addresses[0]!, PORT)).result, "timeout");
      await firewall.addSandbox(a, parseEgressRules(), cleanup);
      assert.equal((await probe(a.namespace, "tcp", INTERNET.addresses[0]!, PORT)).result, "connected");
      assert.deepEqual(await setElements(`sandbox_${a.sandboxId}_deny`), []);
    }));

  test("teardown deletes the table and can be repeated", async () => {
    const other = new Firewall({ table: `${TEST_TABLE}x`, pool, dnsServers: ["192.0.2.53"] });
    await other.setup();
    await other.teardown();
    await other.teardown();
    const tables = await runCommand("nft", ["list", "tables"], { timeoutMs: 5000 });
    assert.ok(!tables.includes(`${TEST_TABLE}x`), tables);
    assert.deepEqual(await other.knownSandboxes(), []);
  });
});

async function probeFromHost(host: string, port: number): Promise<{ result: string; peerSaw?: string }> {
  const socket = net.connect({ host, port });
  socket.setTimeout(1000, () => socket.destroy(Object.assign(new Error("timed out"), { code: "timeout" })));
  try {
    let data = "";
    socket.on("data", (chunk) => (data += chunk));
    await once(socket, "end");
    return { result: "connected", peerSaw: data.trim() };
  } catch (err) {
    return { result: (err as NodeJS.ErrnoException).code ?? String(err) };
  } finally {
    socket.destroy();
  }
}

async function linkLocalAddress(device: string, namespace?: string): Promise<string> {
  const inNamespace = namespace === undefined ? [] : ["-n", namespace];
  // A new address is "tentative" until duplicate address detection finishes (about a second).
  for (let attempt = 0; attempt < 50; attempt++) {
    const [link] = JSON.parse(await runCommand("ip", [...inNamespace, "-6", "-json", "addr", "show", "dev", device, "scope", "link"], { timeoutMs: 5000 })) as {
      addr_info: { local: string; tentative?: boolean }[];
    }[];
    const address = link?.addr_info.find((info) => !info.tentative);
    if (address) return address.local;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${device} has no usable IPv6 link-local address`);
}

async function tableText(): Promise<string> {
  return runCommand("nft", ["-a", "list", "table", "inet", TEST_TABLE], { timeoutMs: 5000 });
}

const withoutHandles = (text: string): string => text.replace(/ # handle \d+/g, "");

const mentions = (text: string, network: SandboxNetwork): boolean => text.includes(network.sandboxId) || text.includes(network.hostInterface);

async function setElements(set: string): Promise<string[]> {
  const listing = JSON.parse(await runCommand("nft", ["-j", "list", "set", "inet", TEST_TABLE, set], { timeoutMs: 5000 })) as {
    nftables: { set?: { elem?: (string | { prefix: { addr: string; len: number } })[] } }[];
  };
  const elements = listing.nftables.find((item) => item.set)?.set?.elem ?? [];
  return elements.map((element) => (typeof element === "string" ? element : `${element.prefix.addr}/${element.prefix.len}`));
}
