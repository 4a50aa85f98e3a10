// The whole control plane over real HTTP: host agent processes, the orchestration, and the API
// listening on 127.0.0.1:<free port>, on PGlite or on a private PostgreSQL; two teams with keys.
import { randomBytes } from "node:crypto";
import { pino } from "pino";
import { buildApi, type Api } from "../src/api/server.js";
import { loadConfig, type ControlPlaneConfig } from "../src/config.js";
import { openDatabase, type Database } from "../src/db/database.js";
import { createRepositories, type Repositories } from "../src/db/repositories.js";
import { createOrchestration, type Orchestration } from "../src/orchestration/orchestrator.js";
import { removeAgent, restartAgent, startBashAgent, startManagedAgent, type ManagedAgent } from "./orchestration-harness.js";
import { startPostgres, type PostgresCluster } from "./postgres-harness.js";

export interface ApiTeam {
  teamId: string;
  /** An API key of the team (X-API-Key). */
  key: string;
}

export interface ApiUnderTest {
  /** http://127.0.0.1:<port> */
  url: string;
  api: Api;
  database: Database;
  repos: Repositories;
  orchestration: Orchestration;
  agents: ManagedAgent[];
  teamA: ApiTeam;
  teamB: ApiTeam;
  /** A new process for `agents[index]` on its data dir and port, once the old one is gone (killed, stopped); it takes that slot. */
  restartAgent(index: number): Promise<ManagedAgent>;
  /** fetch against the API with a team's key; JSON bodies are sent as JSON. */
  call(team: ApiTeam | undefined, method: string, path: string, body?: unknown, init?: RequestInit): Promise<Response>;
  /** Stops the API, the orchestration and the agents (destroying their sandboxes), and the database. */
  close(): Promise<void>;
}

export interface ApiHarnessOptions {
  database: "pglite" | "postgres";
  /**
   * One agent per entry: an address pool and an nftables table, both unique to the caller;
   * `bashTemplate`: its data dir also holds BASH_TEMPLATE (orchestration-harness.ts).
   */
  agents: Array<{ pool: string; table: string; bashTemplate?: boolean }>;
  config?: Partial<ControlPlaneConfig>;
  /** How often the reconciler runs (default 1 s). */
  reconcileIntervalMs?: number;
}

export async function startApi(options: ApiHarnessOptions): Promise<ApiUnderTest> {
  const undo: Array<() => Promise<void>> = [];
  const close = async () => {
    for (const step of undo.reverse()) await step().catch((err: unknown) => console.error("api harness cleanup:", err));
    undo.length = 0;
  };
  try {
    let cluster: PostgresCluster | undefined;
    if (options.database === "postgres") {
      cluster = await startPostgres();
      undo.push(() => cluster!.stop());
    }
    const database = await openDatabase(cluster ? { url: cluster.url } : {});
    undo.push(() => database.close());
    const repos = createRepositories(database.db);
    const logger = pino({ level: process.env.WRENN_LOG_LEVEL ?? "silent" });

    const agents: ManagedAgent[] = [];
    for (const [index, { pool, table, bashTemplate }] of options.agents.entries()) {
      agents.push(await (bashTemplate ? startBashAgent(pool, table) : startManagedAgent(pool, table)));
      // Whichever process holds the slot at close: a test may have restarted the agent.
      undo.push(() => removeAgent(agents[index]!));
    }
    // Heartbeats every 3 s, so each waits up to 3 s for its answer (the registry's timeout is the
    // interval, at most 3 s, as in production). At 1 s, a control plane or agent stalled for a
    // second on a busy machine (another test file beside this one) missed a beat, and a missed beat
    // drops the host's connection with every call in flight on it (a create then fails with 503).
    const orchestration = createOrchestration({ db: database.db, secretKey: randomBytes(32), logger, heartbeatIntervalMs: 3000, reconcileIntervalMs: options.reconcileIntervalMs ?? 1000 });
    undo.push(() => orchestration.stop());
    for (const agent of agents) await orchestration.hosts.addLocalHost(agent.address, agent.agent.token);
    orchestration.start();

    const config = { ...loadConfig({}), ...options.config };
    const api = await buildApi({
      repos,
      database,
      logger,
      config,
      services: { sandboxes: orchestration.sandboxes, templates: orchestration.templates, hosts: orchestration.hosts },
    });
    undo.push(() => api.close());
    await api.listen({ host: "127.0.0.1", port: 0 });
    const address = api.server.address();
    if (!address || typeof address === "string") throw new Error("the API did not listen on TCP");
    const url = `http://127.0.0.1:${address.port}`;

    const newTeam = async (name: string): Promise<ApiTeam> => {
      const team = await repos.teams.create({ name, slug: `${name}-${randomBytes(4).toString("hex")}` });
      const { secret } = await repos.apiKeys.create({ teamId: team.id, name: "test key" });
      return { teamId: team.id, key: secret };
    };
    const [teamA, teamB] = [await newTeam("team-a"), await newTeam("team-b")];

    const call: ApiUnderTest["call"] = (team, method, path, body, init = {}) => {
      const headers = new Headers(init.headers);
      if (team) headers.set("x-api-key", team.key);
      let payload = init.body;
      if (body !== undefined) {
        headers.set("content-type", "application/json");
        payload = JSON.stringify(body);
      }
      return fetch(url + path, { ...init, method, headers, body: payload });
    };
    const restart: ApiUnderTest["restartAgent"] = async (index) => (agents[index] = await restartAgent(agents[index]!));
    return { url, api, database, repos, orchestration, agents, teamA, teamB, restartAgent: restart, call, close };
  } catch (err) {
    await close();
    throw err;
  }
}
