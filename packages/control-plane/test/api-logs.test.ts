// GET /v1/sandboxes/:id/logs end to end: real HTTP against the API, a real host agent and gVisor
// sandbox; envd's lines in E2B's shape, start and limit, paused and stopped sandboxes, other
// teams, bad queries.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { startApi, type ApiTeam, type ApiUnderTest } from "./api-harness.js";
import { skipAgent, TEST_TEMPLATE, waitFor } from "./orchestration-harness.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const AGENT = { pool: "10.245.2.0/24", table: "wrenn_h1_logs_api" }; // 10.245.1.0/24 is e2b-rest.test.ts's

describe("sandbox logs over HTTP", { skip: skipAgent }, () => {
  let stack: ApiUnderTest;
  const json = async (response: Response): Promise<Json> => (await response.json()) as Json;

  async function createSandbox(team: ApiTeam): Promise<string> {
    const response = await stack.call(team, "POST", "/v1/sandboxes", { template: TEST_TEMPLATE, timeoutSec: 0 });
    const created = await json(response);
    assert.equal(response.status, 201, JSON.stringify(created));
    return created.id as string;
  }

  async function logs(team: ApiTeam, id: string, query = ""): Promise<Json> {
    const response = await stack.call(team, "GET", `/v1/sandboxes/${id}/logs${query}`);
    const body = await json(response);
    assert.equal(response.status, 200, JSON.stringify(body));
    return body;
  }

  before(async () => {
    stack = await startApi({ database: "pglite", agents: [AGENT] });
  });

  after(async () => {
    await stack?.close();
  });

  test("envd's lines come back as E2B's logs and logEntries, filtered by start and limit", async () => {
    const { teamA } = stack;
    const id = await createSandbox(teamA);
    try {
      const first = await waitFor("envd's start-up lines", async () => {
        const body = await logs(teamA, id);
        return body.logEntries.some((e: Json) => e.message === "envd listening") ? body : undefined;
      });
      assert.equal(first.logs.length, first.logEntries.length);
      const index = first.logEntries.findIndex((e: Json) => e.message === "envd listening");
      const listening = first.logEntries[index];
      assert.equal(listening.level, "info");
      assert.equal(listening.fields.name, "envd");
      assert.ok(!Number.isNaN(Date.parse(listening.timestamp)));
      assert.equal(first.logs[index].timestamp, listening.timestamp);
      assert.match(first.logs[index].line, /^\{.*"msg":"envd listening"/);
      assert.ok(first.logs.some((l: Json) => l.line === "envd listening on port 49983"), "plain lines are kept too");

      const ran = await stack.call(teamA, "POST", `/v1/sandboxes/${id}/exec`, { cmd: "/bin/true" });
      assert.equal(ran.status, 200);
      const withExec = await waitFor("the exec's log lines", async () => {
        const body = await logs(teamA, id, "?limit=1000");
        return body.logEntries.some((e: Json) => e.message === "process ended") ? body : undefined;
      });
      const started = withExec.logEntries.find((e: Json) => e.message === "process started");
      assert.equal(started.fields.cmd, "/bin/true");

      const startMs = Date.parse(started.timestamp);
      const from = await logs(teamA, id, `?start=${startMs}`);
      assert.ok(from.logEntries.length > 0);
      assert.ok(from.logEntries.every((e: Json) => Date.parse(e.timestamp) >= startMs));
      assert.deepEqual((await logs(teamA, id, `?start=${Date.now() + 3_600_000}`)), { logs: [], logEntries: [] });
      const one = await logs(teamA, id, "?limit=1");
      assert.deepEqual(one.logs, [withExec.logs[0]], "limit keeps the oldest");

      assert.equal((await stack.call(teamA, "POST", `/v1/sandboxes/${id}/pause`)).status, 200);
      const paused = await logs(teamA, id);
      assert.ok(paused.logEntries.some((e: Json) => e.message === "envd listening"), "a paused sandbox's logs are readable");

      assert.equal((await stack.call(teamA, "DELETE", `/v1/sandboxes/${id}`)).status, 200);
      assert.deepEqual(await logs(teamA, id), { logs: [], logEntries: [] }, "a stopped sandbox has no logs left");
    } finally {
      await stack.call(teamA, "DELETE", `/v1/sandboxes/${id}`);
    }
  });

  test("another team's sandbox and an unknown one are 404; bad queries are 400", async () => {
    const { teamA, teamB } = stack;
    const id = await createSandbox(teamA);
    try {
      const foreign = await stack.call(teamB, "GET", `/v1/sandboxes/${id}/logs`);
      assert.equal(foreign.status, 404);
      assert.equal((await json(foreign)).code, "not_found");
      assert.equal((await stack.call(teamA, "GET", "/v1/sandboxes/nosuchsandbox/logs")).status, 404);
      for (const query of ["?limit=0", "?limit=1001", "?limit=ten", "?start=-1", "?start=soon", "?since=5"]) {
        const response = await stack.call(teamA, "GET", `/v1/sandboxes/${id}/logs${query}`);
        const body = await json(response);
        assert.equal(response.status, 400, `${query}: ${JSON.stringify(body)}`);
        assert.equal(body.code, "invalid_argument", query);
        assert.ok(body.message, query);
      }
      assert.equal((await stack.call(teamA, "GET", "/v1/sandboxes/Not-An-Id/logs")).status, 400);
      const openapi = await json(await stack.call(undefined, "GET", "/openapi.json"));
      assert.ok(openapi.paths["/v1/sandboxes/{id}/logs"]?.get, "documented in /openapi.json");
    } finally {
      await stack.call(teamA, "DELETE", `/v1/sandboxes/${id}`);
    }
  });
});
