// The API skeleton and the account routes: auth, team isolation, error shapes, OpenAPI, audit, usage,
// and the control plane's main started as a real process.
import assert from "node:assert/strict";
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { createServer } from "node:net";
import { getPriority, tmpdir } from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import { Validator } from "@seriousme/openapi-schema-validator";
import { pino } from "pino";
import { z } from "zod";
import type { RouteModule } from "../src/api/deps.js";
import { routeModules } from "../src/api/routes/index.js";
import { buildApi, type Api } from "../src/api/server.js";
import { loadConfig } from "../src/config.js";
import { DEFAULT_CONTROL_PLANE_NICE } from "../src/priority.js";
import { openDatabase, type Database } from "../src/db/database.js";
import { e2bKeyFor } from "../src/db/api-keys.js";
import { createRepositories, type Repositories } from "../src/db/repositories.js";
import { AUTH_CACHE_TTL_MS } from "../src/api/auth-cache.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Test-only routes: one that fails with an internal error, one behind the sandbox-create rate limit. */
const probeRoutes: RouteModule = async (app, { rateLimiters }) => {
  app.post("/probe/boom", async () => {
    throw new Error("connection to 10.1.2.3 refused: secret detail");
  });
  app.post(
    "/probe/create",
    { preHandler: rateLimiters.sandboxCreate, schema: { response: { 200: z.object({ ok: z.boolean() }) } } },
    async () => ({ ok: true }),
  );
};

/** A pino logger whose lines the test can read. */
function capturedLogger() {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(...chunk.toString("utf8").split("\n").filter(Boolean));
      done();
    },
  });
  return { logger: pino({ level: "error" }, stream), lines };
}

describe("the API on an in-memory database", () => {
  let database: Database;
  let repos: Repositories;
  let app: Api;
  const log = capturedLogger();
  let admin: { teamId: string; secret: string };

  async function newTeam(name = "team"): Promise<{ teamId: string; secret: string; keyId: string }> {
    const team = await repos.teams.create({ name, slug: `${name}-${randomBytes(4).toString("hex")}` });
    const { apiKey, secret } = await repos.apiKeys.create({ teamId: team.id, name: "test key" });
    return { teamId: team.id, secret, keyId: apiKey.id };
  }

  async function call(method: "GET" | "POST" | "DELETE", url: string, key?: string, body?: unknown) {
    const response = await app.inject({
      method,
      url,
      headers: key === undefined ? {} : { "x-api-key": key },
      ...(body === undefined ? {} : { payload: body as Json }),
    });
    const json = response.headers["content-type"]?.toString().startsWith("application/json") ? (response.json() as Json) : undefined;
    return { status: response.statusCode, body: json ?? {}, headers: response.headers, text: response.body };
  }

  before(async () => {
    database = await openDatabase({});
    repos = createRepositories(database.db);
    const config = { ...loadConfig({}), sandboxCreateRateLimit: { max: 2, windowMs: 60_000 } };
    app = await buildApi(
      { repos, database, logger: log.logger, config, services: {} },
      { v1: [...routeModules.v1, probeRoutes], root: routeModules.root },
    );
    await app.ready();
    const adminTeam = await repos.teams.create({ name: "admin", slug: `admin-${randomBytes(4).toString("hex")}`, isAdmin: true });
    admin = { teamId: adminTeam.id, secret: (await repos.apiKeys.create({ teamId: adminTeam.id, name: "admin" })).secret };
  });

  after(async () => {
    await app?.close();
    await database?.close();
  });

  test("a request without an API key gets 401 unauthenticated telling how to send one", async () => {
    const { status, body } = await call("GET", "/v1/teams/current");
    assert.equal(status, 401);
    assert.equal(body.code, "unauthenticated");
    assert.match(body.message, /X-API-Key/);
  });

  test("an unknown key and a revoked key get 401", async () => {
    assert.equal((await call("GET", "/v1/teams/current", "wrn_doesnotexist0000000000000000000000")).status, 401);
    assert.equal((await call("GET", "/v1/teams/current", "not-a-wrenn-key")).status, 401);
    const team = await newTeam();
    assert.equal((await call("GET", "/v1/teams/current", team.secret)).status, 200);
    assert.equal((await call("DELETE", `/v1/api-keys/${team.keyId}`, team.secret)).status, 204);
    const revoked = await call("GET", "/v1/teams/current", team.secret);
    assert.equal(revoked.status, 401, "revoked through this control plane: refused at once");
    assert.match(revoked.body.message, /revoked/);
  });

  test("a key revoked through another control plane (the database alone) is refused within the auth cache's TTL", async () => {
    const team = await newTeam();
    assert.equal((await call("GET", "/v1/teams/current", team.secret)).status, 200);
    await repos.apiKeys.revoke(team.teamId, team.keyId);
    const deadline = Date.now() + AUTH_CACHE_TTL_MS + 1000;
    let status = 200;
    while (status === 200 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      status = (await call("GET", "/v1/teams/current", team.secret)).status;
    }
    assert.equal(status, 401);
  });

  test("X-API-Key and Authorization: Bearer both authenticate, to the key's team", async () => {
    const team = await newTeam("bearer");
    const viaHeader = await call("GET", "/v1/teams/current", team.secret);
    assert.equal(viaHeader.body.id, team.teamId);
    const viaBearer = await app.inject({ url: "/v1/teams/current", headers: { authorization: `Bearer ${team.secret}` } });
    assert.equal(viaBearer.statusCode, 200);
    assert.equal(viaBearer.json().id, team.teamId);
  });

  test("GET /health answers without a key", async () => {
    const { status, body } = await call("GET", "/health");
    assert.equal(status, 200);
    assert.deepEqual(body, { status: "ok" });
  });

  test("a created key's secret and e2b alias are shown once, work, and list only by prefix", async () => {
    const team = await newTeam();
    const created = await call("POST", "/v1/api-keys", team.secret, { name: "ci" });
    assert.equal(created.status, 201);
    assert.match(created.body.secret, /^wrn_[A-Za-z0-9]{32,}$/);
    assert.ok(created.body.secret.startsWith(created.body.prefix));
    assert.match(created.body.e2bKey, /^e2b_[0-9a-f]{40}$/);
    assert.equal(created.body.e2bKey, e2bKeyFor(created.body.secret));

    const asNewKey = await call("GET", "/v1/teams/current", created.body.secret);
    assert.equal(asNewKey.body.id, team.teamId);
    const asAlias = await call("GET", "/v1/teams/current", created.body.e2bKey);
    assert.equal(asAlias.status, 200);
    assert.equal(asAlias.body.id, team.teamId, "the alias authenticates as the same team");

    const listed = await call("GET", "/v1/api-keys", team.secret);
    assert.equal(listed.status, 200);
    const entry = listed.body.find((key: Json) => key.id === created.body.id);
    assert.equal(entry.name, "ci");
    assert.equal(entry.secret, undefined);
    assert.equal(entry.e2bKey, undefined);
    assert.ok(!listed.text.includes(created.body.secret));
    assert.ok(!listed.text.includes(created.body.e2bKey));
    assert.ok(entry.lastUsedAt, "the request made with it shows as its last use");
  });

  test("revoking a key stops it at once; revoking it again is 404", async () => {
    const team = await newTeam();
    const created = await call("POST", "/v1/api-keys", team.secret, { name: "short-lived" });
    const revoked = await call("DELETE", `/v1/api-keys/${created.body.id}`, team.secret);
    assert.equal(revoked.status, 204);
    assert.equal(revoked.text, "");
    assert.equal((await call("GET", "/v1/teams/current", created.body.secret)).status, 401);
    assert.equal((await call("GET", "/v1/teams/current", created.body.e2bKey)).status, 401, "its alias goes with it");
    assert.equal((await call("DELETE", `/v1/api-keys/${created.body.id}`, team.secret)).status, 404);
  });

  test("a key of team A gets 404 for team B's key ids and never sees them listed", async () => {
    const teamA = await newTeam("a");
    const teamB = await newTeam("b");
    const attempt = await call("DELETE", `/v1/api-keys/${teamB.keyId}`, teamA.secret);
    assert.equal(attempt.status, 404);
    assert.equal(attempt.body.code, "not_found");
    assert.equal((await call("GET", "/v1/teams/current", teamB.secret)).status, 200, "B's key still works");
    const listedByA = await call("GET", "/v1/api-keys", teamA.secret);
    assert.deepEqual(
      listedByA.body.map((key: Json) => key.id),
      [teamA.keyId],
    );
  });

  test("admin routes answer 403 to a non-admin key", async () => {
    const team = await newTeam();
    const list = await call("GET", "/v1/teams", team.secret);
    assert.equal(list.status, 403);
    assert.equal(list.body.code, "forbidden");
    assert.equal((await call("POST", "/v1/teams", team.secret, { name: "sneaky" })).status, 403);
  });

  test("an admin creates a team with a first key that works and is confined to it; slugs are unique", async () => {
    const slug = `acme-${randomBytes(3).toString("hex")}`;
    const created = await call("POST", "/v1/teams", admin.secret, { name: "Acme", slug });
    assert.equal(created.status, 201);
    assert.equal(created.body.team.slug, slug);
    assert.equal(created.body.team.isAdmin, false);
    const asNewTeam = await call("GET", "/v1/teams/current", created.body.apiKey.secret);
    assert.equal(asNewTeam.body.id, created.body.team.id);
    assert.equal(created.body.apiKey.e2bKey, e2bKeyFor(created.body.apiKey.secret));
    const asNewTeamAlias = await call("GET", "/v1/teams/current", created.body.apiKey.e2bKey);
    assert.equal(asNewTeamAlias.body.id, created.body.team.id, "the first key's e2b alias works too");
    assert.equal((await call("GET", "/v1/teams", created.body.apiKey.secret)).status, 403);

    const all = await call("GET", "/v1/teams", admin.secret);
    assert.ok(all.body.some((team: Json) => team.id === created.body.team.id));
    const again = await call("POST", "/v1/teams", admin.secret, { name: "Acme again", slug });
    assert.equal(again.status, 409);
    assert.equal(again.body.code, "conflict");
  });

  test("an unknown body field is a 400 invalid_argument naming the field, in the one error shape", async () => {
    const team = await newTeam();
    const { status, body } = await call("POST", "/v1/api-keys", team.secret, { name: "k", color: "blue" });
    assert.equal(status, 400);
    assert.deepEqual(Object.keys(body).sort(), ["code", "message"]);
    assert.equal(body.code, "invalid_argument");
    assert.match(body.message, /color/);
  });

  test("a wrong type, a bad id and a bad query are 400s naming where they are", async () => {
    const team = await newTeam();
    const wrongType = await call("POST", "/v1/api-keys", team.secret, { name: 42 });
    assert.equal(wrongType.status, 400);
    assert.match(wrongType.body.message, /body\.name/);
    const badId = await call("DELETE", "/v1/api-keys/not-a-uuid", team.secret);
    assert.equal(badId.status, 400);
    assert.match(badId.body.message, /params\.id/);
    const badQuery = await call("GET", "/v1/audit?limit=lots", team.secret);
    assert.equal(badQuery.status, 400);
    assert.match(badQuery.body.message, /querystring\.limit/);
    const unknownQuery = await call("GET", "/v1/usage?since=2026-01-01", team.secret);
    assert.equal(unknownQuery.status, 400);
    assert.match(unknownQuery.body.message, /since/);
  });

  test("malformed JSON is a 400 and a body over 1 MiB is a 413, both in the one error shape", async () => {
    const team = await newTeam();
    const malformed = await app.inject({
      method: "POST",
      url: "/v1/api-keys",
      headers: { "x-api-key": team.secret, "content-type": "application/json" },
      payload: '{"name": ',
    });
    assert.equal(malformed.statusCode, 400);
    assert.equal(malformed.json().code, "invalid_argument");
    const oversize = await call("POST", "/v1/api-keys", team.secret, { name: "x".repeat(1024 * 1024 + 10) });
    assert.equal(oversize.status, 413);
    assert.deepEqual(Object.keys(oversize.body).sort(), ["code", "message"]);
    assert.equal(oversize.body.code, "payload_too_large");
  });

  test("an unknown route is a 404 in the one error shape, with or without a key", async () => {
    for (const url of ["/nowhere", "/v1/nowhere"]) {
      const { status, body } = await call("GET", url);
      assert.equal(status, 404);
      assert.equal(body.code, "not_found");
      assert.match(body.message, /nowhere/);
    }
  });

  test("an internal failure is a 500 `internal` that hides the cause from the client and logs it", async () => {
    const team = await newTeam();
    const { status, body, text } = await call("POST", "/v1/probe/boom", team.secret);
    assert.equal(status, 500);
    assert.equal(body.code, "internal");
    assert.ok(!text.includes("secret detail") && !text.includes("10.1.2.3"));
    assert.ok(log.lines.some((line) => line.includes("secret detail")), "the cause is in the log");
  });

  test("the sandbox-create rate limit is per key: past it, 429 rate_limited with Retry-After", async () => {
    const teamA = await newTeam();
    const teamB = await newTeam();
    assert.equal((await call("POST", "/v1/probe/create", teamA.secret)).status, 200);
    assert.equal((await call("POST", "/v1/probe/create", teamA.secret)).status, 200);
    const limited = await call("POST", "/v1/probe/create", teamA.secret);
    assert.equal(limited.status, 429);
    assert.equal(limited.body.code, "rate_limited");
    assert.ok(Number(limited.headers["retry-after"]) > 0);
    assert.equal((await call("POST", "/v1/probe/create", teamB.secret)).status, 200, "another key has its own budget");
  });

  test("/openapi.json is a valid OpenAPI 3.1 document of the routes, also as YAML", async () => {
    const { status, body: document } = await call("GET", "/openapi.json");
    assert.equal(status, 200);
    assert.match(document.openapi, /^3\.1\.\d+$/);
    const validator = new Validator();
    const validation = await validator.validate(document);
    assert.equal(validator.version, "3.1");
    assert.ok(validation.valid, JSON.stringify(validation.errors));
    for (const route of ["/v1/teams/current", "/v1/teams", "/v1/api-keys", "/v1/api-keys/{id}", "/v1/audit", "/v1/usage", "/health"]) {
      assert.ok(document.paths[route], `documents ${route}`);
    }
    assert.ok(document.paths["/v1/api-keys"].post.requestBody.content["application/json"].schema);
    assert.equal(document.paths["/openapi.json"], undefined);
    // Every $ref points at a component that exists.
    const refs = JSON.stringify(document).match(/"\$ref":"#\/components\/schemas\/[^"]+"/g) ?? [];
    for (const ref of refs) assert.ok(document.components.schemas[ref.split("/").at(-1)!.slice(0, -1)], ref);

    const yaml = await call("GET", "/openapi.yaml");
    assert.equal(yaml.status, 200);
    assert.match(String(yaml.headers["content-type"]), /yaml/);
    assert.match(yaml.text, /^openapi: 3\.1\.\d+/m);
  });

  test("/docs serves the interactive documentation", async () => {
    const docs = await app.inject({ url: "/docs" });
    assert.equal(docs.statusCode, 200);
    assert.match(String(docs.headers["content-type"]), /text\/html/);
    assert.match(docs.body, /swagger-ui/i);
  });

  test("key create and revoke are audited with actor, resource and source, readable by the own team only", async () => {
    const teamA = await newTeam("audited");
    const teamB = await newTeam("other");
    const created = await call("POST", "/v1/api-keys", teamA.secret, { name: "to revoke" });
    await call("DELETE", `/v1/api-keys/${created.body.id}`, teamA.secret);
    await call("POST", "/v1/api-keys", teamA.secret, { name: 1 }); // rejected: not audited

    const log = await call("GET", "/v1/audit", teamA.secret);
    assert.equal(log.status, 200);
    assert.deepEqual(
      log.body.entries.map((entry: Json) => entry.action),
      ["api_key.revoke", "api_key.create"],
    );
    for (const entry of log.body.entries) {
      assert.equal(entry.teamId, teamA.teamId);
      assert.equal(entry.actorType, "api_key");
      assert.equal(entry.actorId, teamA.keyId);
      assert.equal(entry.resourceType, "api_key");
      assert.equal(entry.resourceId, created.body.id);
      assert.ok(entry.sourceIp);
    }

    const filtered = await call("GET", "/v1/audit?action=api_key.create", teamA.secret);
    assert.deepEqual(
      filtered.body.entries.map((entry: Json) => entry.action),
      ["api_key.create"],
    );
    const firstPage = await call("GET", "/v1/audit?limit=1", teamA.secret);
    assert.equal(firstPage.body.entries[0].action, "api_key.revoke");
    const secondPage = await call("GET", `/v1/audit?limit=1&cursor=${firstPage.body.nextCursor}`, teamA.secret);
    assert.equal(secondPage.body.entries[0].action, "api_key.create");

    assert.deepEqual((await call("GET", "/v1/audit", teamB.secret)).body.entries, []);
    const peek = await call("GET", `/v1/audit?teamId=${teamA.teamId}`, teamB.secret);
    assert.equal(peek.status, 403);
    const asAdmin = await call("GET", `/v1/audit?teamId=${teamA.teamId}`, admin.secret);
    assert.equal(asAdmin.body.entries.length, 2);
  });

  test("a failing audit write is logged and the request still succeeds", async () => {
    const failing = capturedLogger();
    const brokenAudit = Object.create(repos.audit) as Repositories["audit"];
    brokenAudit.record = async () => {
      throw new Error("audit table unavailable");
    };
    const config = loadConfig({});
    const other = await buildApi({ repos: { ...repos, audit: brokenAudit }, database, logger: failing.logger, config, services: {} });
    try {
      const team = await newTeam();
      const created = await other.inject({ method: "POST", url: "/v1/api-keys", headers: { "x-api-key": team.secret }, payload: { name: "k" } });
      assert.equal(created.statusCode, 201);
      assert.ok(failing.lines.some((line) => line.includes("audit table unavailable")));
    } finally {
      await other.close();
    }
  });

  test("GET /v1/usage returns the team's daily rows in the range, and only its own", async () => {
    const teamA = await newTeam();
    const teamB = await newTeam();
    await repos.usage.add(teamA.teamId, "2026-01-02", { sandboxSeconds: 60, vcpuSeconds: 120 });
    await repos.usage.add(teamA.teamId, "2026-01-02", { sandboxSeconds: 30 });
    await repos.usage.add(teamA.teamId, "2026-01-05", { memoryGibSeconds: 1.5, diskGibSeconds: 2 });
    await repos.usage.add(teamA.teamId, "2026-02-01", { sandboxSeconds: 1 });
    await repos.usage.add(teamB.teamId, "2026-01-03", { sandboxSeconds: 999 });

    const { status, body } = await call("GET", "/v1/usage?from=2026-01-01&to=2026-01-31", teamA.secret);
    assert.equal(status, 200);
    assert.deepEqual(body, {
      teamId: teamA.teamId,
      from: "2026-01-01",
      to: "2026-01-31",
      days: [
        { day: "2026-01-02", sandboxSeconds: 90, vcpuSeconds: 120, memoryGibSeconds: 0, diskGibSeconds: 0 },
        { day: "2026-01-05", sandboxSeconds: 0, vcpuSeconds: 0, memoryGibSeconds: 1.5, diskGibSeconds: 2 },
      ],
    });
    const backwards = await call("GET", "/v1/usage?from=2026-02-01&to=2026-01-01", teamA.secret);
    assert.equal(backwards.status, 400);
  });
});

const repoRoot = fileURLToPath(new URL("../../..", import.meta.url));
const mainScript = fileURLToPath(new URL("../src/main.ts", import.meta.url));

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Starts main.ts and waits for its two lines; rejects with its output if it exits or takes too long. */
async function startMain(port: number, dataDir: string): Promise<{ child: ChildProcessWithoutNullStreams; apiUrl: string; apiKey: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env, WRENN_PORT: String(port), WRENN_DATA_DIR: dataDir, WRENN_LOG_LEVEL: "warn" };
  delete env.DATABASE_URL;
  const child = spawn(process.execPath, ["--import", import.meta.resolve("tsx"), mainScript], { cwd: repoRoot, env });
  let output = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error("main printed no API lines within 60 s")), 60_000);
    const fail = (error: Error) => {
      clearTimeout(timer);
      child.kill("SIGKILL");
      reject(new Error(`${error.message}\n--- output ---\n${output}`));
    };
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      const apiUrl = /^API: (\S+)$/m.exec(output)?.[1];
      const apiKey = /^API key: (\S+)$/m.exec(output)?.[1];
      if (apiUrl && apiKey) {
        clearTimeout(timer);
        resolve({ child, apiUrl, apiKey });
      }
    });
    child.once("exit", (code) => fail(new Error(`main exited with ${code}`)));
  });
}

async function stopMain(child: ChildProcessWithoutNullStreams): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  child.kill("SIGTERM");
  return exited;
}

test("WRENN_NICE sets the control plane's niceness, -10 unless told; out of range is refused", () => {
  assert.equal(loadConfig({}).nice, DEFAULT_CONTROL_PLANE_NICE);
  assert.equal(loadConfig({ WRENN_NICE: "0" }).nice, 0);
  assert.throws(() => loadConfig({ WRENN_NICE: "-21" }), /WRENN_NICE/);
});

describe("the control plane process", () => {
  let dataDir: string;
  const children: ChildProcessWithoutNullStreams[] = [];

  before(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), "wrenn-control-plane-test-"));
  });

  after(async () => {
    for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
    await rm(dataDir, { recursive: true, force: true });
  });

  test("prints the API URL and the admin key, which works, and prints the same key after a restart", async () => {
    const port = await freePort();
    const first = await startMain(port, dataDir);
    children.push(first.child);
    assert.equal(first.apiUrl, `http://127.0.0.1:${port}`);
    assert.match(first.apiKey, /^wrn_[A-Za-z0-9]{32,}$/);
    const response = await fetch(`${first.apiUrl}/v1/teams/current`, { headers: { "X-API-Key": first.apiKey } });
    assert.equal(response.status, 200);
    const team = (await response.json()) as Json;
    assert.equal(team.slug, "admin");
    assert.equal(team.isAdmin, true);
    assert.equal((await stat(path.join(dataDir, "admin-api-key"))).mode & 0o777, 0o600);
    // Ahead of the sandboxes in the CPU's queue (priority.ts), when it may be (root).
    if (process.getuid?.() === 0) assert.equal(getPriority(first.child.pid!), DEFAULT_CONTROL_PLANE_NICE);
    assert.equal(await stopMain(first.child), 0, "SIGTERM stops it cleanly");

    const second = await startMain(port, dataDir);
    children.push(second.child);
    assert.equal(second.apiKey, first.apiKey);
    const again = await fetch(`${second.apiUrl}/v1/teams/current`, { headers: { "X-API-Key": second.apiKey } });
    assert.equal(((await again.json()) as Json).id, team.id);
    assert.equal(await stopMain(second.child), 0);
  });
});
