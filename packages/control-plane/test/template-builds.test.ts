// Template builds kept in the database: the repository on PGlite and on a real PostgreSQL, and the
// real control plane (src/main.ts as a child process, a real host agent, real gVisor sandboxes)
// restarted on the same database: a finished build's status and log are still there, and a build
// the process was killed in the middle of is failed at the next start with its sandbox removed.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import { openDatabase, type Database } from "../src/db/database.js";
import { createRepositories, type Repositories } from "../src/db/repositories.js";
import { BUILD_OUTPUT_BYTES_KEPT } from "../src/templates/build-log.js";
import { INTERRUPTED_BUILD_ERROR } from "../src/templates/service.js";
import { removeAgent, skipAgent, startManagedAgent, TEST_TEMPLATE, waitFor, type ManagedAgent } from "./orchestration-harness.js";
import { createDatabase, skipPostgres, startPostgres, type PostgresCluster } from "./postgres-harness.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const newBuildId = () => `bld_${randomBytes(16).toString("hex")}`;

const backends: Array<{ name: "pglite" | "postgres"; skip: string | false }> = [
  { name: "pglite", skip: false },
  { name: "postgres", skip: skipPostgres },
];

for (const backend of backends) {
  describe(`template build records on ${backend.name}`, { skip: backend.skip }, () => {
    let cluster: PostgresCluster | undefined;
    let dataDir: string | undefined;
    let open: () => Promise<Database>;
    let database: Database;
    let repos: Repositories;

    before(async () => {
      if (backend.name === "postgres") {
        cluster = await startPostgres();
        const url = await createDatabase(cluster, "template_builds");
        open = () => openDatabase({ url });
      } else {
        dataDir = await mkdtemp(path.join(tmpdir(), "wrenn-builds-db-"));
        open = () => openDatabase({ dataDir });
      }
      database = await open();
      repos = createRepositories(database.db);
    });

    after(async () => {
      await database?.close();
      await cluster?.stop();
      if (dataDir) await rm(dataDir, { recursive: true, force: true });
    });

    const newTeam = () => repos.teams.create({ name: "builders", slug: `builders-${randomBytes(4).toString("hex")}` });
    const newBuild = async (teamId: string, name: string, startedAt?: Date) => {
      const template = await repos.templates.create({ teamId, name, kind: "build" });
      return repos.templateBuilds.create({ id: newBuildId(), teamId, name, baseTemplate: "base", steps: ["echo one", "echo two"], templateId: template.id, startedAt });
    };

    test("a build's log is read back in order, batches appended twice are kept once, and it survives a reopen", async () => {
      const team = await newTeam();
      const build = await newBuild(team.id, "logged");
      assert.equal(build.status, "building");
      assert.deepEqual(build.steps, ["echo one", "echo two"]);
      await repos.templateBuilds.appendEvents(build.id, 0, [{ type: "step", step: 0, command: "echo one" }]);
      await repos.templateBuilds.appendEvents(build.id, 1, [
        { type: "stdout", step: 0, data: "one\n" },
        { type: "exit", step: 0, exitCode: 0 },
      ]);
      // A retried batch (the first write's answer was lost) is not written twice.
      await repos.templateBuilds.appendEvents(build.id, 1, [
        { type: "stdout", step: 0, data: "one\n" },
        { type: "exit", step: 0, exitCode: 0 },
      ]);
      await repos.templateBuilds.setSandbox(build.id, "sbx123");
      assert.ok(await repos.templateBuilds.finish(build.id, { status: "ready" }));

      await database.close();
      database = await open();
      repos = createRepositories(database.db);
      const read = await repos.templateBuilds.get(team.id, build.id);
      assert.equal(read?.status, "ready");
      assert.equal(read?.sandboxId, "sbx123");
      assert.ok(read?.finishedAt instanceof Date);
      assert.deepEqual(await repos.templateBuilds.events(build.id), [
        { type: "step", step: 0, command: "echo one" },
        { type: "stdout", step: 0, data: "one\n" },
        { type: "exit", step: 0, exitCode: 0 },
      ]);
    });

    test("a build ends once: the first outcome and its last event stay", async () => {
      const team = await newTeam();
      const build = await newBuild(team.id, "ending");
      await repos.templateBuilds.appendEvents(build.id, 0, [{ type: "step", step: 0, command: "echo one" }]);
      assert.deepEqual((await repos.templateBuilds.listBuilding()).filter((row) => row.id === build.id).length, 1);
      const failed = await repos.templateBuilds.finish(build.id, { status: "failed", error: "it broke", lastEvent: { type: "failed", message: "it broke" } });
      assert.equal(failed?.status, "failed");
      assert.equal(failed?.error, "it broke");
      assert.equal(await repos.templateBuilds.finish(build.id, { status: "ready", lastEvent: { type: "done" } }), undefined);
      assert.deepEqual((await repos.templateBuilds.events(build.id)).map((event) => event.type), ["step", "failed"]);
      assert.equal((await repos.templateBuilds.get(team.id, build.id))?.status, "failed");
      assert.ok(!(await repos.templateBuilds.listBuilding()).some((row) => row.id === build.id));
    });

    test("a team's builds are its own, newest first", async () => {
      const [team, other] = [await newTeam(), await newTeam()];
      const older = await newBuild(team.id, "older", new Date(Date.now() - 60_000));
      const newer = await newBuild(team.id, "newer");
      assert.deepEqual((await repos.templateBuilds.listForTeam(team.id)).map((row) => row.id), [newer.id, older.id]);
      assert.deepEqual((await repos.templateBuilds.listForTeam(team.id, 1)).map((row) => row.id), [newer.id]);
      assert.equal(await repos.templateBuilds.get(other.id, newer.id), undefined);
      assert.deepEqual(await repos.templateBuilds.listForTeam(other.id), []);
    });

    test("pruning keeps the newest finished builds and every running one, and their logs go with them", async () => {
      const team = await newTeam();
      const base = Date.now() - 3_600_000;
      const finished = [];
      for (let index = 0; index < 5; index++) {
        const build = await newBuild(team.id, `pruned-${index}`, new Date(base + index * 1000));
        await repos.templateBuilds.appendEvents(build.id, 0, [{ type: "step", step: 0, command: "echo one" }]);
        await repos.templateBuilds.finish(build.id, { status: index % 2 ? "ready" : "failed" });
        finished.push(build.id);
      }
      const running = await newBuild(team.id, "still-running", new Date(base - 1000));
      const other = await newTeam();
      const othersBuild = await newBuild(other.id, "someone-elses", new Date(base - 5000));
      await repos.templateBuilds.finish(othersBuild.id, { status: "ready" });

      assert.equal(await repos.templateBuilds.pruneFinished(team.id, 2), 3);
      assert.deepEqual((await repos.templateBuilds.listForTeam(team.id)).map((row) => row.id), [finished[4], finished[3], running.id]);
      assert.deepEqual(await repos.templateBuilds.events(finished[0]!), []);
      assert.ok(await repos.templateBuilds.get(other.id, othersBuild.id));
      assert.equal(await repos.templateBuilds.pruneFinished(team.id, 2), 0);
    });

    test("deleting the template keeps the build's record; deleting the team removes its builds and logs", async () => {
      const team = await newTeam();
      const build = await newBuild(team.id, "doomed");
      await repos.templateBuilds.appendEvents(build.id, 0, [{ type: "step", step: 0, command: "echo one" }]);
      await repos.templates.delete(team.id, "doomed");
      assert.equal((await repos.templateBuilds.get(team.id, build.id))?.templateId, null);
      await repos.teams.delete(team.id);
      assert.equal(await repos.templateBuilds.get(team.id, build.id), undefined);
      assert.deepEqual(await repos.templateBuilds.events(build.id), []);
    });
  });
}

// The control plane restarted for real: src/main.ts as a child process, stopped (SIGTERM) or
// killed (SIGKILL) and started again on the same database.
const MAIN = fileURLToPath(new URL("../src/main.ts", import.meta.url));
const REPO_ROOT = fileURLToPath(new URL("../../..", import.meta.url));

interface ControlPlaneProcess {
  child: ChildProcess;
  url: string;
  key: string;
  output(): string;
}

async function startMain(env: Record<string, string>): Promise<ControlPlaneProcess> {
  const childEnv: NodeJS.ProcessEnv = { ...process.env, WRENN_HOST: "127.0.0.1", WRENN_PORT: "0", WRENN_LOG_LEVEL: "info", ...env };
  if (!("DATABASE_URL" in env)) delete childEnv.DATABASE_URL;
  const child = spawn(process.execPath, ["--import", "tsx", MAIN], { cwd: REPO_ROOT, env: childEnv, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const ready = await new Promise<{ url: string; key: string }>((resolve, reject) => {
    child.stdout!.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      const url = /^API: (\S+)$/m.exec(output)?.[1];
      const key = /^API key: (\S+)$/m.exec(output)?.[1];
      if (url && key) resolve({ url, key });
    });
    child.once("exit", (code, signal) => reject(new Error(`the control plane exited (${code ?? signal}) before serving:\n${output}`)));
  });
  return { child, ...ready, output: () => output };
}

async function stopMain(cp: ControlPlaneProcess | undefined, signal: "SIGTERM" | "SIGKILL"): Promise<void> {
  if (!cp || cp.child.exitCode !== null || cp.child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => cp.child.once("exit", () => resolve()));
  cp.child.kill(signal);
  await exited;
}

async function call(cp: ControlPlaneProcess, method: string, route: string, body?: unknown): Promise<{ status: number; body: Json }> {
  const response = await fetch(cp.url + route, {
    method,
    headers: { "x-api-key": cp.key, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const raw = await response.text();
  return { status: response.status, body: raw ? (JSON.parse(raw) as Json) : {} };
}

interface SseEvent {
  event: string;
  data: Json;
}

const parseSse = (stream: string): SseEvent[] =>
  stream
    .split("\n\n")
    .filter(Boolean)
    .map((block) => ({ event: /^event: (.+)$/m.exec(block)?.[1] ?? "", data: JSON.parse(/^data: (.+)$/m.exec(block)?.[1] ?? "null") as Json }));

/** The whole log of a build (the stream ends with the build, or at once for a finished one). */
async function buildLog(cp: ControlPlaneProcess, buildId: string): Promise<SseEvent[]> {
  const response = await fetch(`${cp.url}/v1/templates/builds/${buildId}/logs`, { headers: { "x-api-key": cp.key } });
  assert.equal(response.status, 200);
  return parseSse(await response.text());
}

/** Reads a running build's live log until `until` matches an event, then hangs up. */
async function readLogUntil(cp: ControlPlaneProcess, buildId: string, until: (event: SseEvent) => boolean): Promise<SseEvent[]> {
  const abort = new AbortController();
  const response = await fetch(`${cp.url}/v1/templates/builds/${buildId}/logs`, { headers: { "x-api-key": cp.key }, signal: abort.signal });
  assert.equal(response.status, 200);
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`the build log ended before the awaited event:\n${text}`);
      text += value;
      const complete = parseSse(text.slice(0, text.lastIndexOf("\n\n") + 2));
      if (complete.some(until)) return complete;
    }
  } finally {
    abort.abort();
    await reader.cancel().catch(() => undefined);
  }
}

const restartCases: Array<{ name: "pglite" | "postgres"; skip: string | false; pool: string; table: string }> = [
  { name: "pglite", skip: false, pool: "10.246.1.0/26", table: "wrenn_h2_tb_pglite" },
  { name: "postgres", skip: skipPostgres, pool: "10.246.2.0/26", table: "wrenn_h2_tb_pg" },
];

for (const restartCase of restartCases) {
  describe(`template builds across control plane restarts on ${restartCase.name}`, { skip: skipAgent || restartCase.skip }, () => {
    let agent: ManagedAgent;
    let dataDir: string;
    let cluster: PostgresCluster | undefined;
    let env: Record<string, string>;
    let cp: ControlPlaneProcess | undefined;
    let readyBuild: { id: string; view: Json; log: SseEvent[] } | undefined;

    const restart = async (signal: "SIGTERM" | "SIGKILL") => {
      await stopMain(cp, signal);
      cp = undefined;
      cp = await startMain(env);
      return cp;
    };

    before(async () => {
      agent = await startManagedAgent(restartCase.pool, restartCase.table);
      dataDir = await mkdtemp(path.join(tmpdir(), "wrenn-builds-cp-"));
      const tokenFile = path.join(dataDir, "agent-token");
      await writeFile(tokenFile, agent.agent.token, { mode: 0o600 });
      env = { WRENN_DATA_DIR: path.join(dataDir, "control-plane"), WRENN_LOCAL_AGENT: agent.address, WRENN_LOCAL_AGENT_TOKEN_FILE: tokenFile };
      if (restartCase.name === "postgres") {
        cluster = await startPostgres();
        env.DATABASE_URL = cluster.url;
      } else {
        env.WRENN_EMBEDDED_DB = "pglite";
      }
      cp = await startMain(env);
    });

    after(async () => {
      await stopMain(cp, "SIGTERM");
      if (agent) await removeAgent(agent);
      await cluster?.stop();
      if (dataDir) await rm(dataDir, { recursive: true, force: true });
    });

    test("a finished build's status and log are read back after the control plane stops and starts again", async () => {
      const started = await call(cp!, "POST", "/v1/templates", {
        baseTemplate: TEST_TEMPLATE,
        name: "kept-build",
        steps: ["echo persisted-line", "echo to-stderr >&2"],
      });
      assert.equal(started.status, 202, JSON.stringify(started.body));
      const id = started.body.id as string;
      const log = await buildLog(cp!, id);
      assert.equal(log.at(-1)?.event, "done", JSON.stringify(log));
      const view = (await call(cp!, "GET", `/v1/templates/builds/${id}`)).body;
      assert.equal(view.status, "ready");
      readyBuild = { id, view, log };

      await restart("SIGTERM");
      const after = await call(cp!, "GET", `/v1/templates/builds/${id}`);
      assert.equal(after.status, 200);
      assert.deepEqual(after.body, view);
      assert.deepEqual(await buildLog(cp!, id), log);
      assert.ok(log.some((e) => e.event === "stdout" && String(e.data.data).includes("persisted-line")));
      assert.ok(log.some((e) => e.event === "stderr" && String(e.data.data).includes("to-stderr")));
      const listed = await call(cp!, "GET", "/v1/templates/builds");
      assert.equal(listed.status, 200);
      assert.deepEqual(listed.body.find((build: Json) => build.id === id), view);
      assert.equal((await call(cp!, "GET", "/v1/templates/kept-build")).status, 200);
    });

    test("a build's output past the cap is dropped with a note, the same live and read back, and builds list newest first", async () => {
      const started = await call(cp!, "POST", "/v1/templates", {
        baseTemplate: TEST_TEMPLATE,
        name: "chatty-build",
        steps: [`head -c ${BUILD_OUTPUT_BYTES_KEPT + 100_000} /dev/zero | tr '\\0' a`, "echo still-logged-exit"],
      });
      assert.equal(started.status, 202, JSON.stringify(started.body));
      const id = started.body.id as string;
      const live = await buildLog(cp!, id); // streamed while it ran
      assert.equal(live.at(-1)?.event, "done", JSON.stringify(live.at(-1)));
      const output = live.filter((e) => e.event === "stdout" || e.event === "stderr").map((e) => String(e.data.data));
      assert.ok(Buffer.byteLength(output.join("")) <= BUILD_OUTPUT_BYTES_KEPT + 200, "output beyond the cap is not kept");
      assert.match(output.at(-1)!, new RegExp(`build output past ${BUILD_OUTPUT_BYTES_KEPT / 1024} KiB is not kept`));
      assert.deepEqual(live.filter((e) => e.event === "exit").map((e) => e.data.exitCode), [0, 0]);
      // Finished: now read from the database, which holds the same log.
      assert.deepEqual(await buildLog(cp!, id), live);

      const listed = await call(cp!, "GET", "/v1/templates/builds?limit=1");
      assert.equal(listed.status, 200);
      assert.deepEqual(listed.body.map((build: Json) => build.id), [id]);
      assert.equal((await call(cp!, "GET", "/v1/templates/builds?limit=0")).status, 400);
      const reserved = await call(cp!, "POST", "/v1/templates", { baseTemplate: TEST_TEMPLATE, name: "builds", steps: ["true"] });
      assert.equal(reserved.status, 400);
      assert.equal(reserved.body.code, "invalid_argument");
    });

    test("a build the control plane was killed during is failed at the next start, and its sandbox is removed from the host", async () => {
      const started = await call(cp!, "POST", "/v1/templates", {
        baseTemplate: TEST_TEMPLATE,
        name: "interrupted-build",
        steps: ["echo before-the-crash", "sleep 600"],
      });
      assert.equal(started.status, 202, JSON.stringify(started.body));
      const id = started.body.id as string;
      // The second step runs: the first one's log is in the database before it starts.
      await readLogUntil(cp!, id, (e) => e.event === "step" && e.data.step === 1);
      const running = (await call(cp!, "GET", `/v1/templates/builds/${id}`)).body;
      assert.equal(running.status, "building");
      const sandboxId = running.sandboxId as string;
      assert.ok(sandboxId);
      assert.ok((await agent.agent.client.listSandboxes({})).sandboxes.some((s) => s.sandboxId === sandboxId));

      await restart("SIGKILL");
      const failed = await call(cp!, "GET", `/v1/templates/builds/${id}`);
      assert.equal(failed.status, 200);
      assert.equal(failed.body.status, "failed");
      assert.equal(failed.body.error, INTERRUPTED_BUILD_ERROR);
      assert.ok(failed.body.finishedAt);
      const log = await buildLog(cp!, id);
      assert.deepEqual(log.slice(0, 3).map((e) => e.event), ["step", "stdout", "exit"]);
      assert.match(String(log[1]!.data.data), /before-the-crash/);
      assert.deepEqual(log.at(-1), { event: "failed", data: { type: "failed", message: INTERRUPTED_BUILD_ERROR } });
      await waitFor("the build sandbox gone from the host", async () => !(await agent.agent.client.listSandboxes({})).sandboxes.some((s) => s.sandboxId === sandboxId));
      assert.equal((await call(cp!, "GET", `/v1/sandboxes/${sandboxId}`)).body.state, "stopped");
      assert.equal((await call(cp!, "GET", "/v1/templates/interrupted-build")).status, 404, "the half-made template is removed");

      // The build finished before the crash is still as it was.
      assert.ok(readyBuild, "the first test ran");
      assert.deepEqual((await call(cp!, "GET", `/v1/templates/builds/${readyBuild.id}`)).body, readyBuild.view);
      assert.deepEqual(await buildLog(cp!, readyBuild.id), readyBuild.log);
      // Recovery ran once: a further restart changes nothing.
      await restart("SIGTERM");
      assert.deepEqual((await call(cp!, "GET", `/v1/templates/builds/${id}`)).body, failed.body);
    });
  });
}
