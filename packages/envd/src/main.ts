#!/usr/bin/env node
import { parseArgs } from "node:util";
import { startEnvd } from "./server/envd.js";

const USAGE = "usage: envd [--port N] [--host ADDRESS]";

function parsePort(value: string | undefined): number {
  if (value === undefined) return 49983;
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`envd: --port must be a whole number from 0 to 65535, got "${value}"\n${USAGE}`);
    process.exit(2);
  }
  return port;
}

const { values } = (() => {
  try {
    return parseArgs({ options: { port: { type: "string" }, host: { type: "string" }, help: { type: "boolean" } } });
  } catch (err) {
    console.error(`envd: ${(err as Error).message}\n${USAGE}`);
    process.exit(2);
  }
})();
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}

// The host gives envd its first access token in the environment, so that envd is never open to
// whoever reaches its address before the host's /init sets the sandbox's own. Removed at once:
// nothing envd starts inherits it.
const BOOT_TOKEN_ENV = "WRENN_ENVD_ACCESS_TOKEN";
const bootToken = process.env[BOOT_TOKEN_ENV];
delete process.env[BOOT_TOKEN_ENV];

const envd = await startEnvd({ port: parsePort(values.port), host: values.host, accessToken: bootToken });

// envd dying takes every process in the sandbox with it, so a bug in one request must not end it.
// Logged at fatal level: the test harness fails any test whose envd logs one.
process.on("unhandledRejection", (reason) => envd.context.log.fatal({ err: reason }, "unhandled rejection"));
process.on("uncaughtException", (err) => envd.context.log.fatal({ err }, "uncaught exception"));
// Tests and supervisors read the bound port from this line (useful with --port 0).
process.stdout.write(`envd listening on port ${envd.port}\n`);

const shutdown = (): void => {
  void envd.close().finally(() => process.exit(0));
};
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
