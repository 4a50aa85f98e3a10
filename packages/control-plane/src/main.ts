// wrenn-control-plane: opens the database, makes sure an admin key exists, starts the orchestration
// (heartbeats, reconciler, the services), adds the local agent when told to, serves the API.
import { readFile } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { growHeapForRelaying } from "@wrenn/http-relay";
import { pino } from "pino";
import { buildApi } from "./api/server.js";
import { bootstrapAdmin } from "./bootstrap.js";
import { loadConfig, loadSecretKey } from "./config.js";
import { chooseEmbedded, openDatabase } from "./db/database.js";
import { createRepositories } from "./db/repositories.js";
import type { HostRegistry } from "./hosts/registry.js";
import { createOrchestration } from "./orchestration/orchestrator.js";
import { applyNice } from "./priority.js";

/** How long the local agent may take to answer at start (it may still be booting its warm pool). */
const LOCAL_AGENT_WAIT_MS = 60_000;

// The edge proxy relays files and streams: room in the heap for the chunks in flight (http-relay/src/heap.ts).
growHeapForRelaying();
const config = loadConfig();
// Asynchronous, gathered writes: a line per request written synchronously cost ~10% of the CPU of
// a busy API, and one asynchronous write call per line still ~8% (both profiled). Lines are
// written once 4 KiB have gathered, or within 200 ms; at exit, whatever is left.
const logDestination = pino.destination({ dest: 1, sync: false, minLength: 4096 });
setInterval(() => logDestination.flush(), 200).unref();
process.on("exit", () => {
  try {
    logDestination.flushSync();
  } catch {
    // a write still in flight: it ends with the process's own output
  }
});
const logger = pino({ name: "control-plane", level: config.logLevel }, logDestination);
process.on("unhandledRejection", (err) => logger.fatal({ err }, "unhandled rejection"));

// Ahead of the sandboxes on this host's CPUs (priority.ts); the embedded database inherits it.
const nice = applyNice(config.nice, logger);
if (nice !== 0) logger.info({ nice }, "CPU priority");

const embedded = config.databaseUrl === undefined ? chooseEmbedded(config.dataDir, config.embeddedDatabase) : undefined;
if (embedded?.reason) logger.warn({ reason: embedded.reason }, `embedded database: ${embedded.choice}`);
else if (embedded) logger.info(`embedded database: ${embedded.choice} in ${config.dataDir}`);
const database = await openDatabase({
  url: config.databaseUrl,
  dataDir: config.dataDir,
  embedded: embedded?.choice,
  // The error carries the whole client; its message and code say enough.
  onConnectionError: (err) => logger.warn({ error: err.message, code: (err as { code?: string }).code }, "database connection lost; reconnecting on the next query"),
});
const repos = createRepositories(database.db);
const admin = await bootstrapAdmin(repos, config.dataDir, logger);
const orchestration = createOrchestration({ db: database.db, secretKey: await loadSecretKey(config), logger });
const { sandboxes, templates, hosts } = orchestration;
const api = await buildApi({ repos, database, logger, config, services: { sandboxes, templates, hosts } });

let stopping = false;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "stopping");
    void orchestration
      .stop()
      .then(() => api.close())
      .then(() => sandboxes.allSettled())
      .then(() => database.close())
      .then(
        () => process.exit(0),
        (err: unknown) => {
          logger.error({ err }, "unclean stop");
          process.exit(1);
        },
      );
  });
}

if (config.localAgent) await addLocalAgent(hosts, config.localAgent);
// Builds the previous process was running are lost: fail them (and remove their sandboxes) before serving.
await templates.recoverInterruptedBuilds();
orchestration.start();
await api.listen({ host: config.host, port: config.port });

const { port } = api.server.address() as AddressInfo;
// A wildcard address is not one to browse to; the loopback always answers.
const shownHost = ["0.0.0.0", "::"].includes(config.host) ? "127.0.0.1" : config.host.includes(":") ? `[${config.host}]` : config.host;
console.log(`API: ${config.publicUrl ?? `http://${shownHost}:${port}`}`);
console.log(`API key: ${admin.apiKey}`);

/** Adds the agent beside us as a host, retrying while it starts (its token file may appear late too). */
async function addLocalAgent(registry: HostRegistry, agent: { address: string; tokenFile: string }): Promise<void> {
  const deadline = Date.now() + LOCAL_AGENT_WAIT_MS;
  for (let attempt = 1; ; attempt++) {
    try {
      const token = (await readFile(agent.tokenFile, "utf8")).trim();
      const host = await registry.addLocalHost(agent.address, token);
      logger.info({ hostId: host.id, address: agent.address }, "local agent added as a host");
      return;
    } catch (err) {
      if (stopping) return;
      if (Date.now() > deadline) {
        throw new Error(`the local agent at ${agent.address} did not answer within ${LOCAL_AGENT_WAIT_MS / 1000} s (token file ${agent.tokenFile})`, { cause: err });
      }
      if (attempt === 1 || attempt % 10 === 0) logger.info({ address: agent.address, err: (err as Error).message }, "waiting for the local agent");
      await sleep(1000);
    }
  }
}
