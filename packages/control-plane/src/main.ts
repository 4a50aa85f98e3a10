// wrenn-control-plane: opens the database, makes sure an admin key exists, serves the API.
import type { AddressInfo } from "node:net";
import { pino } from "pino";
import { buildApi } from "./api/server.js";
import { bootstrapAdmin } from "./bootstrap.js";
import { loadConfig } from "./config.js";
import { openDatabase } from "./db/database.js";
import { createRepositories } from "./db/repositories.js";

const config = loadConfig();
const logger = pino({ name: "control-plane", level: config.logLevel });
process.on("unhandledRejection", (err) => logger.fatal({ err }, "unhandled rejection"));

const database = await openDatabase({
  url: config.databaseUrl,
  dataDir: config.dataDir,
  onConnectionError: (err) => logger.warn({ err }, "database connection lost; reconnecting on the next query"),
});
const repos = createRepositories(database.db);
const admin = await bootstrapAdmin(repos, config.dataDir, logger);
const api = await buildApi({ repos, database, logger, config, services: {} });
await api.listen({ host: config.host, port: config.port });

const { port } = api.server.address() as AddressInfo;
// A wildcard address is not one to browse to; the loopback always answers.
const shownHost = ["0.0.0.0", "::"].includes(config.host) ? "127.0.0.1" : config.host.includes(":") ? `[${config.host}]` : config.host;
console.log(`API: ${config.publicUrl ?? `http://${shownHost}:${port}`}`);
console.log(`API key: ${admin.apiKey}`);

let stopping = false;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "stopping");
    void api
      .close()
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
