// What the HTTP API is built from, and the contract every route module follows.
import type { preHandlerAsyncHookHandler } from "fastify";
import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import type { Logger } from "pino";
import type { ControlPlaneConfig } from "../config.js";
import type { Database } from "../db/database.js";
import type { Repositories } from "../db/repositories.js";
import type { AuthCache } from "./auth-cache.js";
import { WrennError } from "../errors.js";
import type { HostRegistry } from "../hosts/registry.js";
import type { SandboxService } from "../sandboxes/service.js";
import type { TemplateService } from "../templates/service.js";

/**
 * The services route modules call beyond the repositories (sandboxes, templates, hosts, …). Add a
 * field here per service when its routes land; make it optional if tests of other routes should
 * not have to build it.
 */
export interface ApiServices {
  sandboxes?: SandboxService;
  templates?: TemplateService;
  hosts?: HostRegistry;
}

/** The service, or a 503 naming it: a route whose service this API was built without. */
export function requireService<K extends keyof ApiServices>(deps: ApiDeps, name: K): NonNullable<ApiServices[K]> {
  const service = deps.services[name];
  if (!service) throw new WrennError("unavailable", `this control plane runs without its ${name} service`);
  return service as NonNullable<ApiServices[K]>;
}

export interface ApiDeps {
  repos: Repositories;
  /** The database handle, for transactions: `database.db.transaction((tx) => … createRepositories(tx) …)`. */
  database: Database;
  logger: Logger;
  config: ControlPlaneConfig;
  services: ApiServices;
}

/** Shared rate limiters, created once so every route that uses one draws on the same per-key budget. */
export interface RateLimiters {
  /** preHandler for sandbox-creating routes: 429 `rate_limited` with Retry-After past the budget. */
  sandboxCreate: preHandlerAsyncHookHandler;
}

export interface RouteModuleOptions {
  deps: ApiDeps;
  rateLimiters: RateLimiters;
  /** Resolved API keys; clear it when a key or team changes (revocation). */
  authCache: AuthCache;
}

/**
 * A set of routes: a Fastify plugin whose zod schemas validate, type and document each route.
 * List it in routes/index.ts. Its routes need an API key (`request.auth`) unless they set
 * `config: { public: true }`; mutating ones are audited (name the action with
 * `config: { auditAction: "sandbox.create" }`, the resource with `request.auditResource`).
 */
export type RouteModule = FastifyPluginAsyncZod<RouteModuleOptions>;

export interface RouteModules {
  /** Mounted under /v1. */
  v1: RouteModule[];
  /** Mounted at the root, for paths fixed by others (e.g. the e2b SDK's /sandboxes and /v2/sandboxes). */
  root: RouteModule[];
}
