// Two hosts and a host failure, seen only through the REST API: creates spread over two real
// agents, GET /v1/hosts shows each host's sandboxes; a SIGKILLed agent turns its host unhealthy
// and its sandboxes `unknown` once heartbeats notice, new creates land on the survivor, and an
// agent restarted on the same data dir brings the sandboxes back `running`.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { startApi, type ApiTeam, type ApiUnderTest } from "./api-harness.js";
import { skipAgent, TEST_TEMPLATE, waitFor } from "./orchestration-harness.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const AGENTS = [
  { pool: "10.244.0.0/24", table: "wrenn_h3_two_a" },
  { pool: "10.244.2.0/24", table: "wrenn_h3_two_b" }, // not 10.244.1.0/24: edge-proxy.test.ts had it
];
/** The harness beats every 3 s and a host is unhealthy after 3 misses; this is the ceiling, not the expectation. */
const HEALTH_CHANGE_MS = 60_000;

describe("two hosts and a host failure through the API", { skip: skipAgent }, () => {
  let stack: ApiUnderTest;
  let admin: ApiTeam;

  async function call(team: ApiTeam, method: string, path: string, body?: unknown): Promise<{ status: number; body: Json }> {
    const response = await stack.call(team, method, path, body);
    const raw = await response.text();
    return { status: response.status, body: raw ? (JSON.parse(raw) as Json) : {} };
  }

  async function create(): Promise<Json> {
    const created = await call(stack.teamA, "POST", "/v1/sandboxes", { template: TEST_TEMPLATE, timeoutSec: 0 });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.equal(created.body.state, "running");
    return created.body;
  }

  async function echo(id: string, words: string): Promise<{ status: number; body: Json }> {
    return call(stack.teamA, "POST", `/v1/sandboxes/${id}/exec`, { cmd: "echo", args: [words] });
  }

  const hosts = async (): Promise<Json[]> => {
    const listed = await call(admin, "GET", "/v1/hosts");
    assert.equal(listed.status, 200, JSON.stringify(listed.body));
    return listed.body as unknown as Json[];
  };
  const host = async (id: string): Promise<Json> => (await call(admin, "GET", `/v1/hosts/${id}`)).body;
  const state = async (id: string): Promise<string> => (await call(stack.teamA, "GET", `/v1/sandboxes/${id}`)).body.state as string;
  /** Which of the harness's agents serves a host. */
  const agentIndexOf = (hostRow: Json): number => stack.agents.findIndex((agent) => agent.address === hostRow.address);

  before(async () => {
    stack = await startApi({ database: "pglite", agents: AGENTS });
    const team = await stack.repos.teams.create({ name: "admins", slug: `admins-${randomBytes(4).toString("hex")}`, isAdmin: true });
    admin = { teamId: team.id, key: (await stack.repos.apiKeys.create({ teamId: team.id, name: "admin key" })).secret };
  });

  after(async () => {
    await stack?.close();
  });

  test("creates spread over both hosts and GET /v1/hosts shows each host's sandboxes and capacity", async () => {
    const listed = await hosts();
    assert.equal(listed.length, 2);
    assert.deepEqual(listed.map((h) => h.status), ["ready", "ready"]);
    assert.deepEqual(listed.map(agentIndexOf).sort(), [0, 1], "one host per agent");
    const [first, second] = [await create(), await create()];
    try {
      assert.notEqual(first.hostId, second.hostId, "the second create goes to the emptier host");
      assert.deepEqual([first.hostId, second.hostId].sort(), listed.map((h) => h.id).sort());
      const counted = await waitFor("each host to count its sandbox", async () => {
        const now = await hosts();
        return now.every((h) => h.live?.sandboxes.running === 1) && now;
      });
      for (const row of counted) {
        assert.ok(row.capacity.slots > 0 && row.capacity.memoryMb > 0 && row.capacity.cpu > 0, JSON.stringify(row.capacity));
        assert.ok(row.live.slotsUsed >= 1, JSON.stringify(row.live));
        assert.equal(row.missedHeartbeats, 0);
      }
      for (const sandbox of [first, second]) assert.equal((await echo(sandbox.id, sandbox.hostId)).body.stdout, `${sandbox.hostId}\n`);
    } finally {
      for (const sandbox of [first, second]) assert.equal((await call(stack.teamA, "DELETE", `/v1/sandboxes/${sandbox.id}`)).status, 200);
    }
    await waitFor("the hosts to count no sandbox", async () => (await hosts()).every((h) => h.live?.sandboxes.running === 0));
  });

  test("a killed host turns unhealthy and its sandboxes unknown; creates go to the survivor; a restarted agent brings them back running", async () => {
    const [first, second] = [await create(), await create()];
    const created = [first, second];
    try {
      assert.notEqual(first.hostId, second.hostId);
      const victim = first.hostId as string;
      const survivor = second.hostId as string;
      const victimIndex = agentIndexOf(await host(victim));
      assert.ok(victimIndex >= 0);

      await stack.agents[victimIndex]!.agent.kill(); // SIGKILL: a crash, nothing said to anyone
      const unhealthy = await waitFor("the killed host to turn unhealthy", async () => {
        const row = await host(victim);
        return row.status === "unhealthy" && row;
      }, HEALTH_CHANGE_MS);
      assert.ok(unhealthy.missedHeartbeats >= 1, JSON.stringify(unhealthy));
      assert.equal((await host(survivor)).status, "ready");
      const listed = await hosts();
      assert.deepEqual(
        Object.fromEntries(listed.map((h) => [h.id, h.status])),
        { [victim]: "unhealthy", [survivor]: "ready" },
      );

      assert.equal(await state(first.id), "unknown");
      const refused = await echo(first.id, "nobody home");
      assert.equal(refused.status, 503, JSON.stringify(refused.body));
      assert.equal(refused.body.code, "unavailable");
      assert.equal(await state(second.id), "running", "the other host's sandbox is untouched");
      assert.equal((await echo(second.id, "still here")).body.stdout, "still here\n");

      // New sandboxes land on the survivor and work.
      const placed = [await create(), await create()];
      created.push(...placed);
      assert.deepEqual(placed.map((s) => s.hostId), [survivor, survivor]);
      for (const sandbox of placed) {
        const answer = await echo(sandbox.id, "placed");
        assert.deepEqual(answer.body, { stdout: "placed\n", stderr: "", exitCode: 0 });
      }

      // The agent comes back on the same data dir: the host is ready and its sandbox running again.
      await stack.restartAgent(victimIndex);
      await waitFor("the host to be ready again", async () => (await host(victim)).status === "ready", HEALTH_CHANGE_MS);
      await waitFor("the sandbox to be running again", async () => (await state(first.id)) === "running", HEALTH_CHANGE_MS);
      assert.deepEqual((await echo(first.id, "survived")).body, { stdout: "survived\n", stderr: "", exitCode: 0 });
      const counts = await waitFor("the hosts to count their sandboxes", async () => {
        const now = Object.fromEntries((await hosts()).map((h) => [h.id, h.live?.sandboxes.running]));
        return now[victim] === 1 && now[survivor] === 3 && now;
      });
      assert.deepEqual(counts, { [victim]: 1, [survivor]: 3 });
    } finally {
      for (const sandbox of created) await call(stack.teamA, "DELETE", `/v1/sandboxes/${sandbox.id}`);
    }
  });
});
