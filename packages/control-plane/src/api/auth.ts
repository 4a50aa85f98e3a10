// Who is calling: an API key from `X-API-Key` (what the e2b SDK sends) or `Authorization: Bearer`,
// as its wrn_ secret or its e2b_ alias (db/api-keys.ts); or, without one, the dashboard's session
// cookie (routes/auth.ts signs in), whose requests must also pass the CSRF and WebSocket-Origin checks.
import { timingSafeEqual } from "node:crypto";
import type { FastifyReply, FastifyRequest, onRequestAsyncHookHandler } from "fastify";
import type { Repositories } from "../db/repositories.js";
import { SESSION_REFRESH_MS, SESSION_TTL_MS } from "../db/sessions.js";
import type { AuthCache } from "./auth-cache.js";
import type { Session, Team } from "../db/schema.js";
import { WrennError } from "../errors.js";
import { cookieValue } from "../cookies.js";

export interface RequestAuth {
  teamId: string;
  team: Team;
  /** The key the request came with; null for a dashboard user's session. */
  apiKeyId: string | null;
  /** The signed-in dashboard user; null for API keys. */
  userId: string | null;
  isAdmin: boolean;
  /** Set when the request came with the dashboard's session cookie (not an API key header). */
  session?: { id: string; csrfToken: string };
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
  "Send an API key in the X-API-Key header (or Authorization: Bearer wrn_…), as its wrn_ secret or its e2b_ alias; `make up` prints the admin key, and POST /v1/api-keys creates more. The dashboard signs in with POST /v1/auth/login instead.";

/** The dashboard's session cookie. */
export const SESSION_COOKIE = "wrenn_session";
export const CSRF_HEADER = "x-csrf-token";
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

/** The key the request carries, or undefined. */
export function presentedApiKey(request: FastifyRequest): string | undefined {
  const header = request.headers["x-api-key"];
  const fromHeader = Array.isArray(header) ? header[0] : header;
  if (fromHeader) return fromHeader.trim();
  const match = /^Bearer\s+(\S+)\s*$/i.exec(request.headers.authorization ?? "");
  return match?.[1];
}

/**
 * onRequest hook: resolves the API key (or, without one, the session cookie) into `request.auth`,
 * or answers 401 (403 for a cookie request failing the CSRF or WebSocket-Origin check). It runs
 * for WebSocket routes too, before the upgrade.
 */
export function authenticate(repos: Repositories, cache: AuthCache): onRequestAsyncHookHandler {
  return async (request, reply) => {
    if (request.routeOptions.config.public) return;
    request.auth = await authenticateRequest(repos, cache, request, reply);
  };
}

/**
 * Who the request is, by API key header or session cookie, with the cookie's checks applied;
 * throws 401/403 WrennErrors. For code that authenticates outside the onRequest hook (say a raw
 * upgrade handler); `reply`, when given, receives a refreshed cookie.
 */
export async function authenticateRequest(repos: Repositories, cache: AuthCache, request: FastifyRequest, reply?: FastifyReply): Promise<RequestAuth> {
  const secret = presentedApiKey(request);
  if (secret) {
    const auth = await resolveApiKey(repos, cache, secret);
    if (!auth) throw new WrennError("unauthenticated", `Invalid or revoked API key (${secret.slice(0, 8)}…). ${HOW_TO_AUTHENTICATE}`);
    return auth;
  }
  const token = sessionToken(request);
  if (!token) throw new WrennError("unauthenticated", `Missing API key. ${HOW_TO_AUTHENTICATE}`);
  const auth = await resolveSession(repos, request, reply, token);
  if (!auth) throw new WrennError("unauthenticated", "Your dashboard session has expired or was signed out; sign in again.");
  if (isWebSocketUpgrade(request)) checkWebSocketOrigin(request);
  if (!SAFE_METHODS.has(request.method)) checkCsrf(request, auth.session!.csrfToken);
  return auth;
}

/** Same as the onRequest hook, for a handler that upgrades a request itself: throws 401/403. */
export const authenticateUpgrade = (repos: Repositories, cache: AuthCache, request: FastifyRequest): Promise<RequestAuth> =>
  authenticateRequest(repos, cache, request);

/**
 * The session behind the cookie's `token` as a RequestAuth (no CSRF check), sliding its expiry
 * (and the cookie's, through `reply`) when its last refresh is over an hour old; undefined when
 * it is unknown, expired or signed out, or its user left the team (its key was revoked).
 */
export async function resolveSession(repos: Repositories, request: FastifyRequest, reply: FastifyReply | undefined, token: string): Promise<RequestAuth | undefined> {
  const found = await repos.sessions.findActive(token);
  if (!found) return undefined;
  const { session, team } = found;
  const now = Date.now();
  if (now - session.lastSeenAt.getTime() >= SESSION_REFRESH_MS) {
    await repos.sessions.refresh(session.id, new Date(now));
    reply?.header("set-cookie", sessionCookie(request, token));
  }
  return sessionAuth(session, team);
}

export function sessionAuth(session: Session, team: Team): RequestAuth {
  return {
    teamId: team.id,
    team,
    apiKeyId: session.apiKeyId,
    userId: session.userId,
    isAdmin: team.isAdmin,
    session: { id: session.id, csrfToken: session.csrfToken },
  };
}

/** The session cookie's value, or undefined. */
export function sessionToken(request: FastifyRequest): string | undefined {
  return cookieValue(request.headers.cookie, SESSION_COOKIE);
}

/** Whether the request reached us over https (directly or, per X-Forwarded-Proto, through a proxy). */
function overHttps(request: FastifyRequest): boolean {
  const forwarded = request.headers["x-forwarded-proto"];
  const proto = (Array.isArray(forwarded) ? forwarded[0] : forwarded)?.split(",")[0]?.trim().toLowerCase();
  return proto === "https" || request.protocol === "https";
}

/** Set-Cookie for a session: HttpOnly, SameSite=Strict, Path=/, Secure over https, 7 days. */
export function sessionCookie(request: FastifyRequest, token: string): string {
  const attributes = [`${SESSION_COOKIE}=${token}`, "Path=/", "HttpOnly", "SameSite=Strict", `Max-Age=${Math.floor(SESSION_TTL_MS / 1000)}`];
  if (overHttps(request)) attributes.push("Secure");
  return attributes.join("; ");
}

/** Set-Cookie that removes the session cookie. */
export function clearedSessionCookie(request: FastifyRequest): string {
  const attributes = [`${SESSION_COOKIE}=`, "Path=/", "HttpOnly", "SameSite=Strict", "Max-Age=0"];
  if (overHttps(request)) attributes.push("Secure");
  return attributes.join("; ");
}

/** 403 unless the request's X-CSRF-Token is the session's. */
export function checkCsrf(request: FastifyRequest, csrfToken: string): void {
  const header = request.headers[CSRF_HEADER];
  const presented = Buffer.from((Array.isArray(header) ? header[0] : header) ?? "");
  const expected = Buffer.from(csrfToken);
  if (presented.length !== expected.length || !timingSafeEqual(presented, expected)) {
    throw new WrennError("forbidden", "missing or wrong X-CSRF-Token");
  }
}

export function isWebSocketUpgrade(request: FastifyRequest): boolean {
  return (request.headers.upgrade ?? "").toLowerCase() === "websocket";
}

/** 403 unless the request's Origin names the host it was sent to (no cross-site WebSocket hijacking). */
export function checkWebSocketOrigin(request: FastifyRequest): void {
  let originHost: string | undefined;
  try {
    originHost = request.headers.origin ? new URL(request.headers.origin).host : undefined;
  } catch {
    originHost = undefined;
  }
  const hosts = [request.headers.host, request.host].filter(Boolean).map((host) => host!.toLowerCase());
  if (!originHost || !hosts.includes(originHost.toLowerCase())) {
    throw new WrennError("forbidden", "A WebSocket signed in by the session cookie must come from this site: its Origin must match its Host.");
  }
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
  if (!request.auth.isAdmin) throw new WrennError("forbidden", "This needs an API key (or a dashboard user) of an admin team.");
}
