import { Code } from "@connectrpc/connect";
import { envdError } from "../errors.js";
import { syncClock } from "./clock.js";
import { isHostname, setHostname } from "./hostname.js";
import type { EnvdContext } from "../server/context.js";
import { readBody, RequestTooLarge, sendError, type HttpRequest, type HttpResponse } from "./respond.js";

const MAX_INIT_BODY = 1 << 20;

function isStringRecord(value: unknown): value is Record<string, string> {
  return typeof value === "object" && value !== null && !Array.isArray(value) && Object.values(value).every((v) => typeof v === "string");
}

/**
 * POST /init: the host sets the sandbox's default env vars, access token, default user and
 * working directory, and with `timestamp` its clock and `hostname` its machine name (after a VM was
 * restored from another's memory). Once a token is set, only a caller holding it can call /init again.
 */
export async function handleInit(ctx: EnvdContext, req: HttpRequest, res: HttpResponse): Promise<void> {
  try {
    const raw = await readBody(req, MAX_INIT_BODY).catch((err: unknown) => {
      throw err instanceof RequestTooLarge ? envdError(err.message, Code.InvalidArgument) : err;
    });
    let body: unknown = {};
    if (raw.length > 0) {
      try {
        body = JSON.parse(raw.toString("utf8"));
      } catch {
        throw envdError("the body of /init must be JSON", Code.InvalidArgument);
      }
    }
    if (typeof body !== "object" || body === null || Array.isArray(body)) throw envdError("the body of /init must be a JSON object", Code.InvalidArgument);
    const { envVars, accessToken, defaultUser, defaultWorkdir, timestamp, hostname } = body as Record<string, unknown>;
    if (hostname !== undefined && (typeof hostname !== "string" || !isHostname(hostname))) {
      throw envdError("hostname must be 1–64 letters, digits, '-', '_' or '.'", Code.InvalidArgument);
    }
    const time = timestamp === undefined ? undefined : new Date(typeof timestamp === "string" ? timestamp : NaN);
    if (time && Number.isNaN(time.getTime())) throw envdError("timestamp must be an RFC 3339 date-time string", Code.InvalidArgument);
    if (envVars !== undefined && !isStringRecord(envVars)) throw envdError("envVars must map names to strings", Code.InvalidArgument);
    for (const [field, value] of Object.entries({ accessToken, defaultUser, defaultWorkdir })) {
      if (value !== undefined && typeof value !== "string") throw envdError(`${field} must be a string`, Code.InvalidArgument);
    }
    const defaults = ctx.defaults;
    if (envVars) defaults.envVars = { ...defaults.envVars, ...envVars };
    if (typeof accessToken === "string") defaults.accessToken = accessToken || undefined;
    if (typeof defaultUser === "string" && defaultUser) defaults.defaultUser = defaultUser;
    if (typeof defaultWorkdir === "string") defaults.defaultWorkdir = defaultWorkdir || undefined;
    ctx.log.info({ envVars: Object.keys(defaults.envVars).length, defaultUser: defaults.defaultUser, secured: !!defaults.accessToken }, "initialised");
    if (typeof hostname === "string") {
      // Like the clock: a name that cannot be set (no root, a read-only /proc) is logged, not fatal.
      const renamed = await setHostname(hostname);
      if ("error" in renamed) ctx.log.warn(renamed, "could not set the hostname");
      else if (renamed.changed) ctx.log.info({ from: renamed.from, to: hostname }, "hostname set");
    }
    if (time) {
      // A clock that cannot be set (gVisor refuses, no date(1) in the template) is logged, not fatal.
      const clock = await syncClock(time);
      if ("error" in clock) ctx.log.warn(clock, "could not set the clock to the host's");
      else if (clock.changed) ctx.log.info(clock, "clock set to the host's");
    }
    res.writeHead(204).end();
  } catch (err) {
    sendError(res, err);
  }
}
