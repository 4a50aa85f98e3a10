// /v1/templates and /v1/hosts over real HTTP, against a listening API on PGlite with real host
// agents: platform templates are not a team's to delete, snapshots and builds (logs as SSE) make
// team templates other teams cannot see, and hosts are admin-only from creation to Terminate.
import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { pino } from "pino";
import { buildApi, type Api } from "../src/api/server.js";
import { loadConfig } from "../src/config.js";
import {
  addAgent,
  removeAgent,
  skipAgent,
  startControlPlane,
  startManagedAgent,
  TEST_TEMPLATE,
  text,
  waitFor,
  type ControlPlaneUnderTest,
  type ManagedAgent,
} from "./orchestration-harness.js";

const POOL_A = "10.242.10.0/26";
const POOL_B = "10.242.11.0/26";
const TABLE_A = "wrenn_api_tmpl_a";
const TABLE_B = "wrenn_api_tmpl_b";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

describe("templates and hosts through the API", { skip: skipAgent }, () => {
  let cp: ControlPlaneUnderTest;
  let agentA: ManagedAgent;
  let agentB: ManagedAgent | undefined;
  let api: Api;
  let baseUrl: string;
  const keys = { teamA: "", teamB: "", admin: "" };
  let teamAId: string;

  async function call(method: string, url: string, key: string | undefined, body?: unknown): Promise<{ status: number; body: Json }> {
    const response = await fetch(`${baseUrl}${url}`, {
      method,
      headers: { ...(key ? { "x-api-key": key } : {}), ...(body === undefined ? {} : { "content-type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const raw = await response.text();
    return { status: response.status, body: raw ? (JSON.parse(raw) as Json) : {} };
  }

  async function keyFor(options: { isAdmin?: boolean } = {}): Promise<{ teamId: string; secret: string }> {
    const team = options.isAdmin
      ? await cp.repos.teams.create({ name: "admins", slug: `admins-${process.pid}-${Date.now()}`, isAdmin: true })
      : await cp.newTeam();
    const { secret } = await cp.repos.apiKeys.create({ teamId: team.id, name: "test" });
    return { teamId: team.id, secret };
  }

  const hostTemplates = async (agent: ManagedAgent) => (await agent.agent.client.listTemplates({})).templates.map((t) => t.name);

  before(async () => {
    cp = await startControlPlane();
    agentA = await startManagedAgent(POOL_A, TABLE_A);
    await addAgent(cp, agentA);
    const { sandboxes, templates, hosts } = cp.orchestration;
    api = await buildApi({
      repos: cp.repos,
      database: cp.database,
      logger: pino({ level: process.env.WRENN_LOG_LEVEL ?? "silent" }),
      config: loadConfig({}),
      services: { sandboxes, templates, hosts },
    });
    await api.listen({ host: "127.0.0.1", port: 0 });
    baseUrl = `http://127.0.0.1:${(api.server.address() as AddressInfo).port}`;
    const a = await keyFor();
    teamAId = a.teamId;
    keys.teamA = a.secret;
    keys.teamB = (await keyFor()).secret;
    keys.admin = (await keyFor({ isAdmin: true })).secret;
  });

  after(async () => {
    await api?.close();
    await cp?.close();
    await Promise.all([agentA && removeAgent(agentA), agentB && removeAgent(agentB)]);
  });

  test("a team's delete of a platform template is 403 and the template stays on the host", async () => {
    const listed = await call("GET", "/v1/templates", keys.teamA);
    assert.equal(listed.status, 200);
    assert.ok(listed.body.some((t: Json) => t.name === TEST_TEMPLATE && t.platform === true));
    const deleted = await call("DELETE", `/v1/templates/${TEST_TEMPLATE}`, keys.teamA);
    assert.equal(deleted.status, 403);
    assert.equal(deleted.body.code, "forbidden");
    assert.ok((await hostTemplates(agentA)).includes(TEST_TEMPLATE));
    assert.equal((await call("GET", `/v1/templates/${TEST_TEMPLATE}`, keys.teamA)).status, 200);
  });

  test("a snapshot of a sandbox becomes the team's template, and sandboxes from it have its files", async () => {
    const { sandboxes } = cp.orchestration;
    const source = await sandboxes.create(teamAId, { template: TEST_TEMPLATE });
    const wrote = await sandboxes.exec(teamAId, source.id, { cmd: "/bin/sh", args: ["-c", "echo from-the-snapshot > /snapshot-proof"], user: "root" });
    assert.equal(wrote.exitCode, 0);

    const created = await call("POST", "/v1/templates", keys.teamA, { fromSandbox: source.id, name: "snap-one" });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.equal(created.body.name, "snap-one");
    assert.equal(created.body.platform, false);
    assert.equal((await sandboxes.get(teamAId, source.id)).status, "stopped");

    const fromSnapshot = await sandboxes.create(teamAId, { template: "snap-one" });
    const read = await sandboxes.exec(teamAId, fromSnapshot.id, { cmd: "/bin/cat", args: ["/snapshot-proof"] });
    assert.equal(text(read.stdout).trim(), "from-the-snapshot");
    await sandboxes.destroy(teamAId, fromSnapshot.id);

    const teamB = await call("GET", "/v1/templates", keys.teamB);
    assert.ok(!teamB.body.some((t: Json) => t.name === "snap-one"));
    assert.equal((await call("GET", "/v1/templates/snap-one", keys.teamB)).status, 404);
    assert.equal((await call("DELETE", "/v1/templates/snap-one", keys.teamB)).status, 404);
    assert.equal((await call("POST", "/v1/templates", keys.teamB, { fromSandbox: fromSnapshot.id, name: "stolen" })).status, 404);

    assert.equal((await call("DELETE", "/v1/templates/snap-one", keys.teamA)).status, 204);
    assert.equal((await call("GET", "/v1/templates/snap-one", keys.teamA)).status, 404);
  });

  test("a build runs its steps with logs streamed as server-sent events, and its template can be deleted", async () => {
    const started = await call("POST", "/v1/templates", keys.teamA, {
      baseTemplate: TEST_TEMPLATE,
      name: "built-one",
      steps: ["echo step-one-says-hi", "echo built > /built-proof && echo to-stderr >&2"],
    });
    assert.equal(started.status, 202, JSON.stringify(started.body));
    const buildId = started.body.id as string;
    assert.match(buildId, /^bld_/);

    // Other teams see neither the build nor its logs.
    assert.equal((await call("GET", `/v1/templates/builds/${buildId}`, keys.teamB)).status, 404);
    assert.equal((await fetch(`${baseUrl}/v1/templates/builds/${buildId}/logs`, { headers: { "x-api-key": keys.teamB } })).status, 404);

    const logs = await fetch(`${baseUrl}/v1/templates/builds/${buildId}/logs`, { headers: { "x-api-key": keys.teamA } });
    assert.equal(logs.status, 200);
    assert.match(logs.headers.get("content-type") ?? "", /^text\/event-stream/);
    const stream = await logs.text(); // ends when the build does
    const events = stream
      .split("\n\n")
      .filter(Boolean)
      .map((block) => ({ event: /^event: (.+)$/m.exec(block)?.[1], data: JSON.parse(/^data: (.+)$/m.exec(block)?.[1] ?? "null") as Json }));
    assert.deepEqual(
      events.filter((e) => e.event === "step").map((e) => e.data.step),
      [0, 1],
    );
    assert.ok(events.some((e) => e.event === "stdout" && String(e.data.data).includes("step-one-says-hi")));
    assert.ok(events.some((e) => e.event === "stderr" && String(e.data.data).includes("to-stderr")));
    assert.equal(events.at(-1)?.event, "done", stream);
    assert.equal(events.at(-1)?.data.template.name, "built-one");

    const status = await call("GET", `/v1/templates/builds/${buildId}`, keys.teamA);
    assert.equal(status.body.status, "ready");
    // A late reader gets the whole log again.
    assert.match(await (await fetch(`${baseUrl}/v1/templates/builds/${buildId}/logs`, { headers: { "x-api-key": keys.teamA } })).text(), /event: done/);

    const { sandboxes } = cp.orchestration;
    const sandbox = await sandboxes.create(teamAId, { template: "built-one" });
    assert.equal(text((await sandboxes.exec(teamAId, sandbox.id, { cmd: "/bin/cat", args: ["/built-proof"] })).stdout).trim(), "built");
    await sandboxes.destroy(teamAId, sandbox.id);

    const template = (await call("GET", "/v1/templates/built-one", keys.teamA)).body;
    const onDisk = `t-${template.id as string}`;
    assert.ok((await hostTemplates(agentA)).includes(onDisk));
    assert.equal((await call("DELETE", "/v1/templates/built-one", keys.teamB)).status, 404);
    assert.equal((await call("DELETE", "/v1/templates/built-one", keys.teamA)).status, 204);
    assert.ok(!(await hostTemplates(agentA)).includes(onDisk));
  });

  test("a failing build step fails the build and leaves no template", async () => {
    const started = await call("POST", "/v1/templates", keys.teamA, { baseTemplate: TEST_TEMPLATE, name: "broken", steps: ["exit 3"] });
    assert.equal(started.status, 202);
    const stream = await (await fetch(`${baseUrl}/v1/templates/builds/${started.body.id as string}/logs`, { headers: { "x-api-key": keys.teamA } })).text();
    assert.match(stream, /event: failed/);
    assert.equal((await call("GET", `/v1/templates/builds/${started.body.id as string}`, keys.teamA)).body.status, "failed");
    assert.equal((await call("GET", "/v1/templates/broken", keys.teamA)).status, 404);
  });

  test("bad template requests are 400", async () => {
    assert.equal((await call("POST", "/v1/templates", keys.teamA, { name: "x" })).status, 400);
    assert.equal((await call("POST", "/v1/templates", keys.teamA, { baseTemplate: TEST_TEMPLATE, name: "x", steps: [] })).status, 400);
    assert.equal((await call("POST", "/v1/templates", keys.teamA, { fromSandbox: "abc", name: "x", extra: 1 })).status, 400);
    assert.equal((await call("GET", "/v1/templates/builds/not-a-build", keys.teamA)).status, 400);
  });

  test("every host route is 403 for a team that is not an admin team", async () => {
    const hostId = (await cp.orchestration.hosts.list())[0]!.id;
    const routes: Array<[string, string]> = [
      ["POST", "/v1/hosts"],
      ["GET", "/v1/hosts"],
      ["GET", `/v1/hosts/${hostId}`],
      ["POST", `/v1/hosts/${hostId}/drain`],
      ["POST", `/v1/hosts/${hostId}/undrain`],
      ["DELETE", `/v1/hosts/${hostId}`],
    ];
    for (const [method, url] of routes) {
      const answer = await call(method, url, keys.teamA);
      assert.equal(answer.status, 403, `${method} ${url}`);
      assert.equal((await call(method, url, undefined)).status, 401, `${method} ${url} without a key`);
    }
    assert.equal((await cp.orchestration.hosts.get(hostId)).status, "ready");
  });

  test("an admin creates a host, its agent registers with the token, it is listed, drained and deleted", async () => {
    const created = await call("POST", "/v1/hosts", keys.admin);
    assert.equal(created.status, 201);
    assert.equal(created.body.host.status, "pending");
    const registrationToken = created.body.registrationToken as string;

    agentB = await startManagedAgent(POOL_B, TABLE_B);
    const registration = { registrationToken, address: agentB.address, agentToken: agentB.agent.token };
    assert.equal((await call("POST", "/v1/hosts/register", undefined, { ...registration, registrationToken: "wrong" })).status, 401);
    const registered = await call("POST", "/v1/hosts/register", undefined, registration);
    assert.equal(registered.status, 200, JSON.stringify(registered.body));
    assert.equal(registered.body.host.id, created.body.host.id);
    assert.ok(registered.body.hostToken);
    assert.equal((await call("POST", "/v1/hosts/register", undefined, registration)).status, 401, "the token is one-time");

    const hostB = created.body.host.id as string;
    const listed = await call("GET", "/v1/hosts", keys.admin);
    const row = listed.body.find((h: Json) => h.id === hostB);
    assert.equal(row.status, "ready");
    assert.ok(row.capacity.slots > 0 && row.capacity.memoryMb > 0, JSON.stringify(row));
    assert.equal(row.live.sandboxes.running, 0);
    assert.equal((await call("GET", `/v1/hosts/${hostB}`, keys.admin)).body.address, agentB.address);

    const drained = await call("POST", `/v1/hosts/${hostB}/drain`, keys.admin);
    assert.equal(drained.body.status, "draining");
    const { sandboxes } = cp.orchestration;
    const placed = [];
    for (let i = 0; i < 3; i++) placed.push(await sandboxes.create(teamAId, { template: TEST_TEMPLATE }));
    assert.ok(placed.every((s) => s.hostId !== hostB), "no sandbox on the draining host");
    for (const sandbox of placed) await sandboxes.destroy(teamAId, sandbox.id);
    assert.equal((await call("POST", `/v1/hosts/${hostB}/undrain`, keys.admin)).body.status, "ready");

    const child = agentB.agent.child;
    assert.equal((await call("DELETE", `/v1/hosts/${hostB}`, keys.admin)).status, 204);
    await waitFor("the deleted host's agent to exit", async () => child.exitCode !== null || child.signalCode !== null, 60_000);
    assert.equal((await call("GET", `/v1/hosts/${hostB}`, keys.admin)).status, 404);
    assert.ok(!(await call("GET", "/v1/hosts", keys.admin)).body.some((h: Json) => h.id === hostB));
  });
});
