// The HTTP API: Fastify with zod schemas (validation, types, OpenAPI) and the route modules of routes/index.ts.
import { readFileSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import rateLimit from "@fastify/rate-limit";
import websocket from "@fastify/websocket";
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type RawServerDefault } from "fastify";
import { serializerCompiler, validatorCompiler, type ZodTypeProvider } from "fastify-type-provider-zod";
import { recordAudit } from "./audit-recorder.js";
import { authenticate, type RequestAuth } from "./auth.js";
import { AuthCache } from "./auth-cache.js";
import type { ApiDeps, RateLimiters, RouteModules } from "./deps.js";
import { errorHandler, notFoundHandler } from "./error-responses.js";
import { createEdgeProxy } from "../proxy/edge-proxy.js";
import { dashboardStatic } from "./dashboard-static.js";
import { registerOpenApi } from "./openapi.js";
import { perKeyRateLimit } from "./rate-limit.js";
import { RequestLog } from "./request-log.js";
import { e2bRoutes } from "./routes/e2b.js";
import { routeModules } from "./routes/index.js";

export type Api = FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, FastifyBaseLogger, ZodTypeProvider>;

const packageVersion = (
  JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }
).version;

/** How long requests in flight may still run once the API is closing. */
const CLOSE_GRACE_MS = 5_000;

/** A configured API, not yet listening: call `listen()` (or `inject()` in tests), and `close()`. */
export async function buildApi(deps: ApiDeps, modules: RouteModules = routeModules): Promise<Api> {
  const authCache = new AuthCache();
  // Requests for a sandbox's port (`<port>-<id>.<domain>`, E2b-Sandbox-Id) never reach Fastify's routing.
  const edgeProxy = createEdgeProxy(deps, authCache);
  const app: Api = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    bodyLimit: deps.config.bodyLimitBytes,
    trustProxy: deps.config.trustProxy,
    logController: new RequestLog(),
    ...(edgeProxy ? { serverFactory: edgeProxy.serverFactory } : {}),
  }).withTypeProvider<ZodTypeProvider>();
  if (edgeProxy) app.addHook("preClose", async () => edgeProxy.close());
  // Closing waits for open connections; Fastify drops the idle ones, but a connection a client
  // opened and never sent a request on (fetch keeps spares) counts as busy until the 60 s headers
  // timeout. Requests in flight get a few seconds to finish, then every connection goes.
  app.addHook("preClose", async () => {
    setTimeout(() => app.server.closeAllConnections(), CLOSE_GRACE_MS).unref();
  });

  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler(notFoundHandler);
  // Null until the onRequest hook of authenticated routes sets it (public routes never read it).
  app.decorateRequest("auth", null as unknown as RequestAuth);
  app.decorateRequest("auditResource", null);
  app.decorateRequest("auditWritten", false);
  app.addHook("onSend", recordAudit(deps.repos, deps.logger));
  // Last: the time the request spent in the control plane until its answer leaves (audit write
  // included), beside the routes' own `agent;dur=`: a client can tell the control plane's own
  // cost from the agent's and from the network's.
  app.addHook("onSend", async (_request, reply, payload) => {
    if (!reply.hasHeader("server-timing")) return payload;
    reply.header("server-timing", `${String(reply.getHeader("server-timing"))}, total;dur=${reply.elapsedTime.toFixed(1)}`);
    return payload;
  });

  await registerOpenApi(app, { version: packageVersion, publicUrl: deps.config.publicUrl });
  await dashboardStatic(app); // the dashboard SPA at / and /ui/* (dashboard-static.ts)
  await app.register(rateLimit, { global: false, hook: "preHandler" });
  // WebSocket routes (`websocket: true`) hear only the upgrades the edge proxy leaves to the API.
  await app.register(websocket, { options: { maxPayload: 1 << 20, ...(edgeProxy ? { server: edgeProxy.apiUpgrades } : {}) } });
  const rateLimiters: RateLimiters = {
    sandboxCreate: perKeyRateLimit(app, deps.config.sandboxCreateRateLimit, "sandbox creates"),
  };

  await app.register(async (authenticated) => {
    authenticated.addHook("onRequest", authenticate(deps.repos, authCache));
    for (const module of modules.v1) await authenticated.register(module, { prefix: "/v1", deps, rateLimiters, authCache });
    for (const module of modules.root) await authenticated.register(module, { deps, rateLimiters, authCache });
    await authenticated.register(e2bRoutes, { deps, rateLimiters, authCache }); // the e2b SDK's paths (routes/e2b.ts)
  });
  return app;
}
