// Who is calling: an API key from `X-API-Key` (what the e2b SDK sends) or `Authorization: Bearer`,
// as its wrn_ secret or its e2b_ alias (db/api-keys.ts).
import type { FastifyRequest, onRequestAsyncHookHandler } from "fastify";
import type { Repositories } from "../db/repositories.js";
import type { AuthCache } from "./auth-cache.js";
import type { Team } from "../db/schema.js";
import { WrennError } from "../errors.js";

export interface RequestAuth {
  teamId: string;
  team: Team;
  /** The key the request came with; null for a dashboard user's session. */
  apiKeyId: string | null;
  /** The signed-in dashboard user; null for API keys. */
  userId: string | null;
  isAdmin: boolean;
}

declare module "fastify" {
  interface FastifyRequest {
    /** Set before any handler of a non-public route runs; do not read it in public routes. */
    auth: RequestAuth;
  }
  interface FastifyContextConfig {
    /** The route needs no API key (health, host registration with its own token, …). */
    public?: boolean;
  }
}

const HOW_TO_AUTHENTICATE =
  "Send an API key in the X-API-Key header (or Authorization: Bearer wrn_…), as its wrn_ secret or its e2b_ alias; `make up` prints the admin key, and POST /v1/api-keys creates more.";

/** The key the request carries, or undefined. */
export function presentedApiKey(request: FastifyRequest): string | undefined {
  const header = request.headers["x-api-key"];
  const fromHeader = Array.isArray(header) ? header[0] : header;
  if (fromHeader) return fromHeader.trim();
  const match = /^Bearer\s+(\S+)\s*$/i.exec(request.headers.authorization ?? "");
  return match?.[1];
}

/** onRequest hook: resolves the API key into `request.auth`, or answers 401. */
export function authenticate(repos: Repositories, cache: AuthCache): onRequestAsyncHookHandler {
  return async (request) => {
    if (request.routeOptions.config.public) return;
    const secret = presentedApiKey(request);
    if (!secret) throw new WrennError("unauthenticated", `Missing API key. ${HOW_TO_AUTHENTICATE}`);
    const auth = await resolveApiKey(repos, cache, secret);
    if (!auth) throw new WrennError("unauthenticated", `Invalid or revoked API key (${secret.slice(0, 8)}…). ${HOW_TO_AUTHENTICATE}`);
    request.auth = auth;
  };
}

/** Who an API key (wrn_ secret or e2b_ alias) authenticates, through the cache; undefined when no key of an existing team has it. */
export function resolveApiKey(repos: Repositories, cache: AuthCache, secret: string): Promise<RequestAuth | undefined> {
  return cache.resolve(secret, async () => {
    const apiKey = await repos.apiKeys.findBySecret(secret);
    const team = apiKey && (await repos.teams.get(apiKey.teamId));
    if (!apiKey || !team) return undefined;
    return { teamId: team.id, team, apiKeyId: apiKey.id, userId: null, isAdmin: team.isAdmin };
  });
}

/** preHandler for admin-only routes: 403 unless the caller's team is an admin team. */
export async function requireAdmin(request: FastifyRequest): Promise<void> {
  if (!request.auth.isAdmin) throw new WrennError("forbidden", "This needs an API key of an admin team.");
}
