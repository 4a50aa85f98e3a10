// The sandbox and file routes end to end: real HTTP against the API, real host agents and
// sandboxes, on PGlite and on PostgreSQL.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import http from "node:http";
import { after, before, describe, test } from "node:test";
import { startApi, type ApiTeam, type ApiUnderTest } from "./api-harness.js";
import { skipAgent, TEST_TEMPLATE, waitFor } from "./orchestration-harness.js";
import { skipPostgres } from "./postgres-harness.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const RUNS = [
  { name: "PGlite", database: "pglite", pool: "10.241.30.0/26", table: "wrenn_api_sbx_lite", skip: skipAgent },
  { name: "PostgreSQL", database: "postgres", pool: "10.241.30.64/26", table: "wrenn_api_sbx_pg", skip: skipAgent || skipPostgres },
] as const;

interface SseEvent {
  event: string;
  data: Json;
}

function parseSse(text: string): SseEvent[] {
  return text
    .split("\n\n")
    .filter((block) => block.trim() !== "")
    .map((block) => {
      const lines = block.split("\n");
      const event = lines.find((line) => line.startsWith("event: "))!.slice(7);
      const data = lines.filter((line) => line.startsWith("data: ")).map((line) => line.slice(6)).join("\n");
      return { event, data: JSON.parse(data) as Json };
    });
}

for (const run of RUNS) {
  describe(`the sandbox API over HTTP on ${run.name}`, { skip: run.skip }, () => {
    let stack: ApiUnderTest;
    let call: ApiUnderTest["call"];
    const json = async (response: Response): Promise<Json> => (await response.json()) as Json;

    async function createSandbox(team: ApiTeam, body: Json = {}): Promise<Json> {
      const response = await call(team, "POST", "/v1/sandboxes", { template: TEST_TEMPLATE, ...body });
      const created = await json(response);
      assert.equal(response.status, 201, JSON.stringify(created));
      return created;
    }

    before(async () => {
      stack = await startApi({ database: run.database, agents: [{ pool: run.pool, table: run.table }] });
      call = stack.call;
    });

    after(async () => {
      await stack?.close();
    });

    test("a sandbox lives through create → exec → stream → files → pause → resume → metrics → delete", async () => {
      const { teamA } = stack;
      const created = await createSandbox(teamA, { vcpus: 1, memoryMb: 256, timeoutSec: 0, metadata: { purpose: "lifecycle" } });
      const id = created.id as string;
      assert.match(id, /^[a-z0-9]+$/);
      assert.equal(created.state, "running");
      assert.equal(created.memoryMb, 256);
      assert.ok(created.envdAccessToken.length > 0);
      assert.ok(created.envdVersion);
      const base = `/v1/sandboxes/${id}`;

      const got = await json(await call(teamA, "GET", base));
      assert.equal(got.state, "running");
      assert.equal(got.envdAccessToken, undefined, "the envd token is shown only at create");
      const listed = await json(await call(teamA, "GET", "/v1/sandboxes?state=running,paused&metadata=purpose=lifecycle"));
      assert.deepEqual(listed.sandboxes.map((s: Json) => s.id), [id]);
      const none = await json(await call(teamA, "GET", "/v1/sandboxes?metadata=purpose=other"));
      assert.deepEqual(none.sandboxes, []);

      // Exec, collected.
      const echoResponse = await call(teamA, "POST", `${base}/exec`, { cmd: "/bin/sh", args: ["-c", "echo out; echo err >&2; exit 3"] });
      // The time spent waiting on the host agent, and the whole time in the control plane (no less).
      const timing = /^agent;dur=(\d+(?:\.\d)?), total;dur=(\d+(?:\.\d)?)$/.exec(echoResponse.headers.get("server-timing") ?? "");
      assert.ok(timing, `Server-Timing: ${echoResponse.headers.get("server-timing")}`);
      assert.ok(Number(timing[2]) >= Number(timing[1]), "total includes the agent's time");
      const echoed = await json(echoResponse);
      assert.deepEqual(echoed, { stdout: "out\n", stderr: "err\n", exitCode: 3 });
      const piped = await json(await call(teamA, "POST", `${base}/exec`, { cmd: "cat", stdin: "piped ✓" }));
      assert.equal(piped.stdout, "piped ✓");

      // Exec, streamed in order.
      const streamed = await call(teamA, "POST", `${base}/exec/stream`, {
        cmd: "/bin/sh",
        args: ["-c", "echo one; sleep 0.2; echo two >&2; sleep 0.2; echo three; exit 4"],
      });
      assert.equal(streamed.status, 200);
      assert.match(streamed.headers.get("content-type") ?? "", /^text\/event-stream/);
      const events = parseSse(await streamed.text());
      assert.equal(events[0]!.event, "start");
      assert.ok(events[0]!.data.pid > 0);
      const output = events.slice(1, -1).map((e) => `${e.event}:${e.data.data}`).join("");
      assert.equal(output, "stdout:one\nstderr:two\nstdout:three\n");
      assert.deepEqual(events.at(-1), { event: "exit", data: { exitCode: 4 } });

      // Files: two in one multipart upload, one raw PUT, downloads byte for byte.
      const big = randomBytes(3 * 1024 * 1024 + 17);
      const form = new FormData();
      form.append("file", new Blob(["hello from a"]), "a.txt");
      form.append("file", new Blob([big]), "b.bin");
      const uploaded = await call(teamA, "POST", `${base}/files?path=/home/user/up/`, undefined, { body: form });
      assert.equal(uploaded.status, 200, await uploaded.clone().text());
      assert.deepEqual(await json(uploaded), [
        { path: "/home/user/up/a.txt", size: 12 },
        { path: "/home/user/up/b.bin", size: big.length },
      ]);
      const raw = randomBytes(1024 * 1024);
      const put = await call(teamA, "PUT", `${base}/files?path=/tmp/raw.bin`, undefined, {
        body: raw,
        headers: { "content-type": "application/octet-stream" },
      });
      assert.equal(put.status, 200);
      assert.deepEqual(await json(put), { path: "/tmp/raw.bin", size: raw.length });
      for (const [path, expected] of [["/home/user/up/b.bin", big], ["/tmp/raw.bin", raw]] as const) {
        const download = await call(teamA, "GET", `${base}/files?path=${encodeURIComponent(path)}`);
        assert.equal(download.status, 200);
        assert.equal(download.headers.get("content-type"), "application/octet-stream");
        assert.equal(download.headers.get("content-length"), String(expected.length));
        assert.ok(Buffer.from(await download.arrayBuffer()).equals(expected), `${path} comes back byte for byte`);
      }
      const missing = await call(teamA, "GET", `${base}/files?path=/tmp/nothing-here`);
      assert.equal(missing.status, 404);
      assert.equal((await json(missing)).code, "not_found");

      // list, stat, mkdir, move, remove through envd.
      const listing = await json(await call(teamA, "GET", `${base}/files/list?path=/home/user/up`));
      assert.deepEqual(listing.entries.map((e: Json) => `${e.name}:${e.type}`).sort(), ["a.txt:file", "b.bin:file"]);
      const stat = await json(await call(teamA, "GET", `${base}/files/stat?path=/tmp/raw.bin`));
      assert.equal(stat.type, "file");
      assert.equal(stat.size, raw.length);
      assert.equal(stat.path, "/tmp/raw.bin");
      const made = await call(teamA, "POST", `${base}/files/mkdir`, { path: "/home/user/newdir/inner" });
      assert.equal(made.status, 201);
      assert.equal((await json(made)).type, "dir");
      assert.equal((await call(teamA, "POST", `${base}/files/mkdir`, { path: "/home/user/newdir/inner" })).status, 409);
      const moved = await call(teamA, "POST", `${base}/files/move`, { from: "/home/user/up/a.txt", to: "/home/user/newdir/a.txt" });
      assert.equal(moved.status, 200);
      assert.equal((await json(moved)).path, "/home/user/newdir/a.txt");
      assert.equal((await call(teamA, "GET", `${base}/files/stat?path=/home/user/up/a.txt`)).status, 404);
      const deep = await json(await call(teamA, "GET", `${base}/files/list?path=/home/user/newdir&depth=2`));
      assert.deepEqual(deep.entries.map((e: Json) => e.path).sort(), ["/home/user/newdir/a.txt", "/home/user/newdir/inner"]);
      assert.equal((await call(teamA, "DELETE", `${base}/files?path=/home/user/newdir`)).status, 204);
      assert.equal((await call(teamA, "GET", `${base}/files/stat?path=/home/user/newdir`)).status, 404);
      // Removing is idempotent, as in E2B's envd (`os.RemoveAll`): a path already gone is no error.
      assert.equal((await call(teamA, "DELETE", `${base}/files?path=/home/user/newdir`)).status, 204);

      // Pause: commands are refused with a code that says why; resume brings it back.
      const paused = await call(teamA, "POST", `${base}/pause`);
      assert.equal(paused.status, 200);
      assert.equal((await json(paused)).state, "paused");
      assert.equal((await call(teamA, "POST", `${base}/pause`)).status, 409);
      const refused = await call(teamA, "POST", `${base}/exec`, { cmd: "true" });
      assert.equal(refused.status, 409);
      const refusal = await json(refused);
      assert.equal(refusal.code, "failed_precondition");
      assert.match(refusal.message, /paused; resume it first/);
      assert.equal((await call(teamA, "GET", `${base}/files/stat?path=/tmp`)).status, 409);
      const resumed = await call(teamA, "POST", `${base}/resume`, { timeoutSec: 600 });
      assert.equal(resumed.status, 200);
      assert.deepEqual([(await json(resumed)).state, (await json(await call(teamA, "GET", base))).timeoutSec], ["running", 600]);
      const after = await json(await call(teamA, "POST", `${base}/exec`, { cmd: "cat", args: ["/tmp/raw.bin"] }));
      assert.equal(after.exitCode, 0);
      assert.equal((await call(teamA, "POST", `${base}/ping`)).status, 204);
      const timed = await json(await call(teamA, "POST", `${base}/timeout`, { timeoutSec: 120 }));
      assert.equal(timed.timeoutSec, 120);

      const points = await waitFor("metric points", async () => {
        const metrics = await json(await call(teamA, "GET", `${base}/metrics?range=10m`));
        return metrics.points.length > 0 ? (metrics.points as Json[]) : undefined;
      });
      assert.ok(points.every((p) => typeof p.cpuPercent === "number" && p.memoryBytes >= 0 && !Number.isNaN(Date.parse(p.timestamp))));
      assert.equal((await call(teamA, "GET", `${base}/metrics?range=24h`)).status, 200);

      const deleted = await call(teamA, "DELETE", base);
      assert.equal(deleted.status, 200);
      assert.equal((await json(deleted)).state, "stopped");
      const stopped = await json(await call(teamA, "GET", base));
      assert.equal(stopped.state, "stopped");
      assert.ok(stopped.endedAt);
      assert.equal((await call(teamA, "DELETE", base)).status, 200, "deleting a stopped sandbox is a no-op");
      // The list shows sandboxes that are, unless asked for the ended ones by state.
      const ids = (page: unknown) => (page as { sandboxes: Array<{ id: string }> }).sandboxes.map((sandbox) => sandbox.id);
      assert.ok(!ids(await json(await call(teamA, "GET", "/v1/sandboxes"))).includes(id), "a stopped sandbox is not listed by default");
      assert.ok(ids(await json(await call(teamA, "GET", "/v1/sandboxes?state=stopped"))).includes(id));
      assert.equal((await call(teamA, "POST", `${base}/exec`, { cmd: "true" })).status, 404);
      const agentSandboxes = await stack.agents[0]!.agent.client.listSandboxes({});
      assert.ok(!agentSandboxes.sandboxes.some((s) => s.sandboxId === id));

      const actions = new Set((await stack.repos.audit.list(teamA.teamId, { limit: 1000 })).map((entry) => `${entry.action}:${entry.resourceId}`));
      for (const action of ["sandbox.create", "sandbox.exec", "file.write", "file.mkdir", "file.move", "file.remove", "sandbox.pause", "sandbox.resume", "sandbox.delete"]) {
        assert.ok(actions.has(`${action}:${id}`), `audited ${action}`);
      }
      // The create's entry goes to the database with the sandbox's `running` (one statement): once, whole.
      const creates = (await stack.repos.audit.list(teamA.teamId, { action: "sandbox.create", limit: 1000 })).filter((entry) => entry.resourceId === id);
      assert.equal(creates.length, 1);
      assert.equal(creates[0]!.actorType, "api_key");
      assert.equal(creates[0]!.resourceType, "sandbox");
      assert.ok(creates[0]!.actorId && creates[0]!.sourceIp);
      assert.deepEqual(creates[0]!.details, { method: "POST", path: "/v1/sandboxes", status: 201 });
    });

    test("another team's key gets 404 from every sandbox and file endpoint, and changes nothing", async () => {
      const { teamA, teamB } = stack;
      const sandbox = await createSandbox(teamA, { timeoutSec: 0 });
      const base = `/v1/sandboxes/${sandbox.id}`;
      try {
        const put = (): RequestInit => ({ body: new Blob(["x"]), headers: { "content-type": "application/octet-stream" } });
        const form = () => {
          const data = new FormData();
          data.append("file", new Blob(["intruder"]), "x.txt");
          return { body: data };
        };
        const calls: Array<[string, string, unknown?, RequestInit?]> = [
          ["GET", base],
          ["POST", `${base}/pause`],
          ["POST", `${base}/resume`, {}],
          ["POST", `${base}/timeout`, { timeoutSec: 5 }],
          ["POST", `${base}/ping`],
          ["POST", `${base}/exec`, { cmd: "true" }],
          ["POST", `${base}/exec/stream`, { cmd: "true" }],
          ["GET", `${base}/metrics?range=10m`],
          ["GET", `${base}/logs`],
          ["POST", `${base}/files?path=/tmp/`, undefined, form()],
          ["PUT", `${base}/files?path=/tmp/x`, undefined, put()],
          ["GET", `${base}/files?path=/etc/hostname`],
          ["GET", `${base}/files/list?path=/tmp`],
          ["GET", `${base}/files/stat?path=/tmp`],
          ["POST", `${base}/files/mkdir`, { path: "/tmp/intruder" }],
          ["POST", `${base}/files/move`, { from: "/tmp", to: "/tmp2" }],
          ["DELETE", `${base}/files?path=/tmp`],
          ["DELETE", base],
        ];
        for (const [method, path, body, init] of calls) {
          const response = await call(teamB, method, path, body, init);
          const answer = await json(response);
          assert.equal(response.status, 404, `${method} ${path}: ${JSON.stringify(answer)}`);
          assert.equal(answer.code, "not_found", `${method} ${path}`);
        }
        assert.equal((await json(await call(teamB, "GET", "/v1/sandboxes"))).sandboxes.length, 0);
        const still = await json(await call(teamA, "GET", base));
        assert.deepEqual([still.state, still.timeoutSec], ["running", 0]);
        assert.equal((await call(teamA, "GET", `${base}/files/stat?path=/tmp/intruder`)).status, 404);
        assert.equal((await call(teamA, "GET", `${base}/files/stat?path=/tmp/x.txt`)).status, 404);
        assert.equal((await call(teamA, "GET", `${base}/files/stat?path=/tmp`)).status, 200);
      } finally {
        await call(teamA, "DELETE", base);
      }
    });

    test("bad input is refused with 400 before anything runs", async () => {
      const { teamA } = stack;
      const refusals: Array<[string, string, unknown?]> = [
        ["POST", "/v1/sandboxes", { template: TEST_TEMPLATE, bogus: true }],
        ["POST", "/v1/sandboxes", { template: TEST_TEMPLATE, memoryMb: -1 }],
        ["POST", "/v1/sandboxes", { template: TEST_TEMPLATE, vcpus: 1_000_000 }],
        ["POST", "/v1/sandboxes", { template: TEST_TEMPLATE, diskSizeMb: 1.5 }],
        ["GET", "/v1/sandboxes/NOT-an-id!"],
        ["GET", "/v1/sandboxes?state=sleeping"],
        ["GET", "/v1/sandboxes?limit=0"],
        ["GET", "/v1/sandboxes/abc123/files/stat?path="],
        ["GET", "/v1/sandboxes/abc123/files?path=a%00b"],
        ["POST", "/v1/sandboxes/abc123/files/mkdir", { path: "" }],
        ["POST", "/v1/sandboxes/abc123/exec", {}],
        ["POST", "/v1/sandboxes/abc123/timeout", { timeoutSec: -5 }],
        ["GET", "/v1/sandboxes/abc123/metrics?range=1h"],
      ];
      for (const [method, path, body] of refusals) {
        const response = await call(teamA, method, path, body);
        const answer = await json(response);
        assert.equal(response.status, 400, `${method} ${path}: ${JSON.stringify(answer)}`);
        assert.equal(answer.code, "invalid_argument", `${method} ${path}`);
      }
      const page = await json(await call(teamA, "GET", "/v1/sandboxes?state=starting,running,paused"));
      assert.ok(!page.sandboxes.some((s: Json) => s.memoryMb === -1));
      assert.equal((await call(undefined, "GET", "/v1/sandboxes")).status, 401);
    });

    test("a client that leaves a streamed exec ends the command", async () => {
      const { teamA } = stack;
      const sandbox = await createSandbox(teamA, { timeoutSec: 0 });
      const base = `/v1/sandboxes/${sandbox.id}`;
      try {
        const controller = new AbortController();
        const response = await call(teamA, "POST", `${base}/exec/stream`, { cmd: "/bin/sh", args: ["-c", "echo started; exec sleep 4242"] }, { signal: controller.signal });
        const reader = response.body!.getReader();
        let seen = "";
        while (!seen.includes("started")) seen += Buffer.from((await reader.read()).value ?? []).toString();
        const running = await json(await call(teamA, "POST", `${base}/exec`, { cmd: "ps" }));
        assert.match(running.stdout, /sleep 4242/, "the command runs while the client listens");
        controller.abort();
        await waitFor("the command to be killed", async () => {
          const ps = await json(await call(teamA, "POST", `${base}/exec`, { cmd: "ps" }));
          return !(ps.stdout as string).includes("sleep 4242");
        });
      } finally {
        await call(teamA, "DELETE", base);
      }
    });

    test("a client that goes away during create leaves no sandbox running", async () => {
      const { teamA, agents } = stack;
      const before = new Set((await stack.repos.sandboxes.listAll({ teamId: teamA.teamId })).map((s) => s.id));
      const url = new URL(stack.url);
      const request = http.request({
        host: url.hostname,
        port: url.port,
        method: "POST",
        path: "/v1/sandboxes",
        headers: { "x-api-key": teamA.key, "content-type": "application/json" },
      });
      request.on("error", () => {});
      let answered = false;
      request.on("response", () => (answered = true));
      request.end(JSON.stringify({ template: TEST_TEMPLATE, metadata: { purpose: "abandoned" } }));
      // Hang up as soon as the create has a row, i.e. while it is being placed and booted.
      const started = await waitFor("the create to start", async () => {
        const rows = await stack.repos.sandboxes.listAll({ teamId: teamA.teamId, metadata: { purpose: "abandoned" } });
        return rows.find((row) => !before.has(row.id));
      }, 30_000);
      request.destroy();
      const settled = await waitFor("the abandoned create to be rolled back", async () => {
        const row = await stack.repos.sandboxes.get(started.id);
        return row && (row.status === "stopped" || row.status === "error") ? row : undefined;
      }, 60_000);
      assert.equal(answered, false, "the create was still running when the client left");
      assert.ok(["stopped", "error"].includes(settled.status));
      const onAgent = await agents[0]!.agent.client.listSandboxes({});
      assert.deepEqual(onAgent.sandboxes.filter((s) => s.sandboxId === started.id), [], "nothing left on the host");
    });
  });
}
