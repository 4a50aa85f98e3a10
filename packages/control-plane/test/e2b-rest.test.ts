// The e2b SDK's REST calls against Wrenn: the real `e2b` package (a dev dependency) pointed at the
// real API, a real host agent and real gVisor sandboxes. Only calls that stay on the control plane
// (create, connect, list, info, timeout, pause, kill, metrics, snapshots); envd traffic goes
// through the edge proxy and is tested with it.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { Validator } from "@seriousme/openapi-schema-validator";
import { eq } from "drizzle-orm";
import { AuthenticationError, NotFoundError, Sandbox, SandboxError, SandboxNotFoundError, Template, type SandboxOpts } from "e2b";
import { E2B_KEY_PATTERN, e2bKeyFor } from "../src/db/api-keys.js";
import { apiKeys } from "../src/db/schema.js";
import { startApi, type ApiTeam, type ApiUnderTest } from "./api-harness.js";
import { skipAgent, TEST_TEMPLATE, waitFor } from "./orchestration-harness.js";
import { skipPostgres } from "./postgres-harness.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const RUNS = [
  { name: "PGlite", database: "pglite", pool: "10.245.1.0/24", table: "wrenn_he2_lite", skip: skipAgent },
  { name: "PostgreSQL", database: "postgres", pool: "10.245.3.0/24", table: "wrenn_he2_pg", skip: skipAgent || skipPostgres },
] as const;

for (const run of RUNS) describe(`the e2b SDK's REST calls against Wrenn on ${run.name}`, { skip: run.skip }, () => {
  let stack: ApiUnderTest;
  /** Connection options of the e2b SDK for a key (the team's wrn_ secret unless told). */
  let sdk: (team: ApiTeam, key?: string) => Pick<SandboxOpts, "apiUrl" | "apiKey" | "requestTimeoutMs">;
  const json = async (response: Response): Promise<Json> => (await response.json()) as Json;
  /** Runs a command through Wrenn's own API (envd calls of the SDK need the edge proxy). */
  const shell = async (team: ApiTeam, id: string, script: string): Promise<string> => {
    const response = await stack.call(team, "POST", `/v1/sandboxes/${id}/exec`, { cmd: "/bin/sh", args: ["-c", script], user: "root" });
    const result = await json(response);
    assert.equal(response.status, 200, JSON.stringify(result));
    return result.stdout as string;
  };

  before(async () => {
    stack = await startApi({ database: run.database, agents: [{ pool: run.pool, table: run.table }] });
    sdk = (team, key = team.key) => ({ apiUrl: stack.url, apiKey: key, requestTimeoutMs: 60_000 });
  });

  after(async () => {
    await stack?.close();
  });

  test("a sandbox lives through Sandbox.create → getInfo → setTimeout → getMetrics → pause → connect → kill", async () => {
    const { teamA } = stack;
    const suite = randomBytes(4).toString("hex");
    const sandbox = await Sandbox.create(TEST_TEMPLATE, {
      ...sdk(teamA),
      timeoutMs: 120_000,
      metadata: { suite, step: "lifecycle" },
      envs: { GREETING: "hello from e2b" },
      network: { allowPublicTraffic: false }, // E2B's restricted ports: what Wrenn always does
    });
    const id = sandbox.sandboxId;
    assert.match(id, /^[a-z0-9]+$/);
    assert.equal(typeof sandbox.trafficAccessToken, "string", "the token for the sandbox's ports (e2b-traffic-access-token)");

    const info = await sandbox.getInfo();
    assert.equal(info.sandboxId, id);
    assert.equal(info.templateId, TEST_TEMPLATE);
    assert.equal(info.state, "running");
    assert.deepEqual(info.metadata, { suite, step: "lifecycle" });
    assert.equal(info.cpuCount, 1);
    assert.equal(info.memoryMB, 512);
    assert.match(info.envdVersion, /^\d+\.\d+\.\d+/);
    assert.equal(info.sandboxDomain, "localhost", "the edge proxy's domain (WRENN_DOMAIN, default localhost)");
    assert.equal(info.network?.allowPublicTraffic, false, "a sandbox's ports always want credentials");
    assert.equal(sandbox.getHost(3000), `3000-${id}.localhost`, "never the SDK's own e2b.app");
    const lifetime = info.endAt.getTime() - info.startedAt.getTime();
    assert.ok(Math.abs(lifetime - 120_000) < 1000, `endAt: started + timeout, got ${lifetime} ms`);
    assert.equal(await shell(teamA, id, "echo $GREETING"), "hello from e2b\n", "envs reach the sandbox's processes");

    await sandbox.setTimeout(600_000);
    assert.equal((await json(await stack.call(teamA, "GET", `/v1/sandboxes/${id}`))).timeoutSec, 600, "the timeout travels in seconds");

    const metrics = await waitFor("a metrics sample", async () => {
      const points = await sandbox.getMetrics();
      return points.length > 0 ? points : undefined;
    }, 30_000);
    const last = metrics.at(-1)!;
    assert.ok(last.timestamp instanceof Date && !Number.isNaN(last.timestamp.getTime()));
    assert.equal(last.cpuCount, 1);
    assert.equal(last.memTotal, 512 * 1024 * 1024);
    assert.ok(last.memUsed > 0 && last.cpuUsedPct >= 0 && last.diskTotal > 0);
    const since = await sandbox.getMetrics({ start: new Date(Date.now() + 60_000) });
    assert.deepEqual(since, [], "start filters samples");

    assert.equal(await sandbox.pause(), true);
    assert.equal((await sandbox.getInfo()).state, "paused");
    assert.equal(await sandbox.pause(), false, "pausing a paused sandbox answers 409, which the SDK reads as false");

    const resumed = await Sandbox.connect(id, { ...sdk(teamA), timeoutMs: 300_000 });
    assert.equal(resumed.sandboxId, id);
    assert.equal(resumed.trafficAccessToken, sandbox.trafficAccessToken, "connect hands out the same traffic token");
    assert.equal((await resumed.getInfo()).state, "running");
    assert.equal(await shell(teamA, id, "echo alive"), "alive\n", "connect resumed it");
    assert.equal((await json(await stack.call(teamA, "GET", `/v1/sandboxes/${id}`))).timeoutSec, 300);
    await resumed.connect({ timeoutMs: 60_000 });
    assert.equal((await json(await stack.call(teamA, "GET", `/v1/sandboxes/${id}`))).timeoutSec, 300, "connecting to a running sandbox never shortens its timeout");

    assert.equal(await sandbox.kill(), true);
    const audited = (await stack.repos.audit.list(teamA.teamId, { resourceType: "sandbox" })).filter((entry) => entry.resourceId === id);
    const actions = audited.map((entry) => entry.action).filter((action) => action !== "sandbox.exec").reverse();
    assert.deepEqual(actions, ["sandbox.create", "sandbox.set_timeout", "sandbox.pause", "sandbox.connect", "sandbox.connect", "sandbox.delete"], "audited once each, as /v1's calls");
    await assert.rejects(sandbox.getInfo(), SandboxNotFoundError);
    assert.equal(await sandbox.kill(), false, "killing a killed sandbox: 404, read as false");
    await assert.rejects(Sandbox.connect(id, sdk(teamA)), NotFoundError);
  });

  test("Sandbox.list filters by metadata and state and pages with x-next-token", async () => {
    const { teamA } = stack;
    const suite = randomBytes(4).toString("hex");
    // Keys and values the SDK url-encodes twice over.
    const odd = { "a b": "c&d=e", suite };
    const first = await Sandbox.create(TEST_TEMPLATE, { ...sdk(teamA), metadata: { ...odd, n: "1" } });
    const second = await Sandbox.create(TEST_TEMPLATE, { ...sdk(teamA), metadata: { ...odd, n: "2" } });
    await Sandbox.create(TEST_TEMPLATE, { ...sdk(teamA), metadata: { suite: `${suite}-other` } });

    const paginator = Sandbox.list({ ...sdk(teamA), query: { metadata: odd }, limit: 1 });
    const page1 = await paginator.nextItems();
    assert.equal(page1.length, 1);
    assert.ok(paginator.hasNext && paginator.nextToken, "a next token after a full page");
    const page2 = await paginator.nextItems();
    assert.equal(page2.length, 1);
    assert.equal(paginator.hasNext, false);
    assert.deepEqual([...page1, ...page2].map((s) => s.sandboxId), [second.sandboxId, first.sandboxId], "newest first");
    assert.deepEqual(page1[0]!.metadata, { ...odd, n: "2" });
    assert.equal(page1[0]!.state, "running");
    assert.equal(page1[0]!.templateId, TEST_TEMPLATE);

    await first.pause();
    const paused = await Sandbox.list({ ...sdk(teamA), query: { metadata: { suite }, state: ["paused"] } }).nextItems();
    assert.deepEqual(paused.map((s) => s.sandboxId), [first.sandboxId]);
    const running = await Sandbox.list({ ...sdk(teamA), query: { metadata: { suite }, state: ["running"] } }).nextItems();
    assert.deepEqual(running.map((s) => s.sandboxId), [second.sandboxId]);
    const both = await Sandbox.list({ ...sdk(teamA), query: { metadata: { suite } } }).nextItems();
    assert.deepEqual(both.map((s) => s.sandboxId).sort(), [first.sandboxId, second.sandboxId].sort(), "running and paused by default");

    // The deprecated list (older SDKs): every running one, no pages.
    const response = await stack.call(teamA, "GET", `/sandboxes?metadata=${encodeURIComponent(`suite=${suite}`)}`);
    assert.equal(response.status, 200);
    assert.deepEqual((await json(response) as unknown as Json[]).map((s) => s.sandboxID), [second.sandboxId]);

    await first.kill();
    await second.kill();
  });

  test("another team's sandbox and unknown ids are not found", async () => {
    const { teamA, teamB } = stack;
    const sandbox = await Sandbox.create(TEST_TEMPLATE, { ...sdk(teamA), metadata: { owner: "a" } });
    await assert.rejects(Sandbox.connect("nosuchsandbox000000", sdk(teamA)), NotFoundError);
    await assert.rejects(Sandbox.getInfo("nosuchsandbox000000", sdk(teamA)), SandboxNotFoundError);
    await assert.rejects(Sandbox.connect(sandbox.sandboxId, sdk(teamB)), NotFoundError);
    await assert.rejects(Sandbox.getInfo(sandbox.sandboxId, sdk(teamB)), SandboxNotFoundError);
    await assert.rejects(Sandbox.getMetrics(sandbox.sandboxId, sdk(teamB)), SandboxNotFoundError);
    await assert.rejects(Sandbox.setTimeout(sandbox.sandboxId, 1000, sdk(teamB)), SandboxNotFoundError);
    await assert.rejects(Sandbox.pause(sandbox.sandboxId, sdk(teamB)), SandboxNotFoundError);
    assert.equal(await Sandbox.kill(sandbox.sandboxId, sdk(teamB)), false);
    const listed = await Sandbox.list({ ...sdk(teamB), query: { metadata: { owner: "a" } } }).nextItems();
    assert.deepEqual(listed, []);
    assert.equal((await sandbox.getInfo()).state, "running", "untouched by the other team");
    await sandbox.kill();
  });

  test("an e2b_ key stands for its team; a wrong one is refused in E2B's error shape", async () => {
    const { teamA, repos, database } = stack;
    const { secret, e2bKey } = await repos.apiKeys.create({ teamId: teamA.teamId, name: "e2b" });
    assert.match(e2bKey, E2B_KEY_PATTERN);
    assert.equal(e2bKey, e2bKeyFor(secret), "derived from the secret: whoever holds it can work it out");
    const sandbox = await Sandbox.create(TEST_TEMPLATE, { ...sdk(teamA, e2bKey), metadata: { via: "e2b-key" } });
    const info = await Sandbox.getInfo(sandbox.sandboxId, sdk(teamA));
    assert.equal(info.metadata.via, "e2b-key", "the wrn_ key of the same team sees it");

    // A key made before aliases existed learns its alias the first time its secret is used.
    // (Fresh keys throughout: the API caches keys it has resolved.)
    const old = await repos.apiKeys.create({ teamId: teamA.teamId, name: "older" });
    await database.db.update(apiKeys).set({ e2bAliasHash: null }).where(eq(apiKeys.id, old.apiKey.id));
    const withKey = (key: string) => stack.call(undefined, "GET", "/v2/sandboxes", undefined, { headers: { "x-api-key": key } });
    assert.equal((await withKey(old.e2bKey)).status, 401);
    assert.equal((await withKey(old.secret)).status, 200);
    assert.equal((await Sandbox.getInfo(sandbox.sandboxId, sdk(teamA, old.e2bKey))).sandboxId, sandbox.sandboxId);

    const wrong = `e2b_${"0".repeat(40)}`;
    await assert.rejects(Sandbox.list(sdk(teamA, wrong)).nextItems(), AuthenticationError);
    const refused = await withKey(wrong);
    assert.equal(refused.status, 401);
    const body = await json(refused);
    assert.equal(body.code, 401, "E2B's code is the HTTP status, a number");
    assert.equal(typeof body.message, "string");

    const revoked = await repos.apiKeys.create({ teamId: teamA.teamId, name: "revoked" });
    await repos.apiKeys.revoke(teamA.teamId, revoked.apiKey.id);
    assert.equal((await withKey(revoked.e2bKey)).status, 401, "revoking a key revokes its alias");
    await sandbox.kill();
  });

  test("network.allowPublicTraffic: true is refused with a 400 that says how to reach the ports, and no sandbox is made", async () => {
    const { teamA } = stack;
    const suite = randomBytes(4).toString("hex");
    await assert.rejects(
      Sandbox.create(TEST_TEMPLATE, { ...sdk(teamA), metadata: { suite }, network: { allowPublicTraffic: true } }),
      (err: unknown) => {
        assert.ok(err instanceof SandboxError, String(err));
        assert.equal((err as SandboxError & { statusCode?: number }).statusCode, 400);
        assert.match(err.message, /never serves a sandbox's ports without credentials; send the e2b-traffic-access-token header with sandbox\.trafficAccessToken/);
        return true;
      },
    );
    assert.deepEqual(await Sandbox.list({ ...sdk(teamA), query: { metadata: { suite } } }).nextItems(), []);
  });

  test("the deprecated paths older SDKs call answer in E2B's shapes", async () => {
    const { teamA } = stack;
    // What e2b 2.45 sends (recorded wire request).
    const created = await stack.call(teamA, "POST", "/sandboxes", { templateID: TEST_TEMPLATE, metadata: { k: "v" }, timeout: 300, secure: true, allow_internet_access: true });
    const sandbox = await json(created);
    assert.equal(created.status, 201, JSON.stringify(sandbox));
    for (const field of ["sandboxID", "templateID", "clientID", "envdVersion", "envdAccessToken", "trafficAccessToken"]) assert.equal(typeof sandbox[field], "string", field);
    assert.notEqual(sandbox.trafficAccessToken, sandbox.envdAccessToken, "the traffic token is not envd's");
    assert.equal(sandbox.templateID, TEST_TEMPLATE);
    const id = sandbox.sandboxID as string;

    const connected = await stack.call(teamA, "POST", `/sandboxes/${id}/connect`, { timeout: 60 });
    assert.equal(connected.status, 200, "already running: 200");
    const connectedBody = await json(connected);
    assert.equal(connectedBody.envdAccessToken, sandbox.envdAccessToken, "connect hands out the same envd token");
    assert.equal(connectedBody.trafficAccessToken, sandbox.trafficAccessToken, "and the same traffic token");
    assert.equal((await stack.call(teamA, "POST", `/sandboxes/${id}/resume`, { timeout: 60 })).status, 409, "resuming a running sandbox");
    assert.equal((await stack.call(teamA, "POST", `/sandboxes/${id}/refreshes`, { duration: 30 })).status, 204);
    assert.equal((await stack.call(teamA, "POST", `/sandboxes/${id}/pause`, {})).status, 204);
    const resumed = await stack.call(teamA, "POST", `/sandboxes/${id}/resume`, { timeout: 60 });
    assert.equal(resumed.status, 201);
    assert.equal((await json(resumed)).sandboxID, id);

    const logs = await stack.call(teamA, "GET", `/sandboxes/${id}/logs`);
    assert.equal(logs.status, 200);
    const logBody = await json(logs);
    assert.ok(Array.isArray(logBody.logs) && Array.isArray(logBody.logEntries));
    const logsV2 = await stack.call(teamA, "GET", `/v2/sandboxes/${id}/logs?direction=backward&limit=5`);
    assert.equal(logsV2.status, 200);
    assert.ok(Array.isArray((await json(logsV2)).logs));

    const invalid = await stack.call(teamA, "POST", "/v2/sandboxes", { metadata: {} });
    assert.equal(invalid.status, 400);
    assert.equal((await json(invalid)).code, 400);
    assert.equal((await stack.call(teamA, "DELETE", `/sandboxes/${id}`)).status, 204);
    const gone = await stack.call(teamA, "DELETE", `/sandboxes/${id}`);
    assert.equal(gone.status, 404);
    assert.deepEqual(Object.keys(await json(gone)).sort(), ["code", "message"]);
  });

  test("a snapshot saves a sandbox's files, Sandbox.create takes it as template, Template.exists sees it, deleteSnapshot removes it", async () => {
    const { teamA, teamB } = stack;
    const source = await Sandbox.create(TEST_TEMPLATE, sdk(teamA));
    await shell(teamA, source.sandboxId, "echo from-the-snapshot > /snapshot-proof");
    const snapshot = await source.createSnapshot();
    assert.ok(snapshot.snapshotId);
    assert.deepEqual(snapshot.names, [snapshot.snapshotId]);
    assert.equal((await source.getInfo()).state, "running", "the sandbox keeps running, as in E2B");

    const listed = await Sandbox.listSnapshots({ ...sdk(teamA), sandboxId: source.sandboxId }).nextItems();
    assert.deepEqual(listed.map((s) => s.snapshotId), [snapshot.snapshotId]);
    assert.deepEqual(await Sandbox.listSnapshots(sdk(teamB)).nextItems(), [], "another team sees none");

    const copy = await Sandbox.create(snapshot.snapshotId, sdk(teamA));
    assert.equal(await shell(teamA, copy.sandboxId, "cat /snapshot-proof"), "from-the-snapshot\n");
    await copy.kill();
    await source.kill();

    assert.equal(await Template.exists(snapshot.snapshotId, sdk(teamA)), true);
    assert.equal(await Template.exists(snapshot.snapshotId, sdk(teamB)), false, "another team's template does not exist for it");
    assert.equal(await Template.exists(TEST_TEMPLATE, sdk(teamB)), true, "platform templates exist for every team");
    assert.equal(await Sandbox.deleteSnapshot(snapshot.snapshotId, sdk(teamB)), false);
    assert.equal(await Sandbox.deleteSnapshot(snapshot.snapshotId, sdk(teamA)), true);
    assert.equal(await Sandbox.deleteSnapshot(snapshot.snapshotId, sdk(teamA)), false);
    assert.equal(await Template.exists(snapshot.snapshotId, sdk(teamA)), false);
  });

  test("/openapi.json stays a valid document with the e2b paths in it", async () => {
    const document = await json(await fetch(`${stack.url}/openapi.json`));
    const validator = new Validator();
    const validation = await validator.validate(document);
    assert.ok(validation.valid, JSON.stringify(validation.errors));
    for (const path of ["/v2/sandboxes", "/sandboxes", "/sandboxes/{sandboxID}", "/v2/sandboxes/{sandboxID}/connect", "/sandboxes/{sandboxID}/metrics"]) {
      assert.ok(document.paths[path], `documents ${path}`);
    }
  });
});
