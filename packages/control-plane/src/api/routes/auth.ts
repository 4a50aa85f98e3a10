// /v1/auth: the dashboard's sign-in. A user signs in with email and password (or anyone with an
// API key of a team), gets the HttpOnly session cookie and a CSRF token to echo in X-CSRF-Token on
// every request that changes something (api/auth.ts checks both on every route).
import { randomUUID } from "node:crypto";
import type { FastifyReply, FastifyRequest } from "fastify";
import { z } from "zod";
import type { Team } from "../../db/schema.js";
import { WrennError } from "../../errors.js";
import { auditEntryFor } from "../audit-recorder.js";
import { checkCsrf, clearedSessionCookie, resolveApiKey, resolveSession, sessionAuth, sessionCookie, sessionToken, type RequestAuth } from "../auth.js";
import type { RouteModule } from "../deps.js";
import { errorResponses } from "../error-responses.js";
import { hashPassword, prepareDummyHash, verifyAgainstDummy, verifyPassword } from "../passwords.js";
import { NewPassword } from "./members.js";

/** Sign-in attempts per client IP: enough for typos, too few to guess passwords. */
export const LOGIN_RATE_LIMIT = { max: 10, windowMs: 60_000 } as const;

const WRONG_PASSWORD = "Wrong email or password.";
const WRONG_KEY = "Invalid or revoked API key.";

const LoginBody = z
  .union([
    z.strictObject({
      email: z.string().trim().min(1).max(320),
      password: z.string().min(1).max(1024),
    }),
    z.strictObject({
      apiKey: z.string().trim().min(1).max(200).meta({ description: "An API key of the team (wrn_… or its e2b_ alias)" }),
    }),
  ])
  .meta({ id: "LoginRequest", description: "A dashboard user's email and password, or an API key" });

export const DashboardSession = z
  .object({
    user: z.object({ id: z.uuid(), email: z.string() }).nullable().meta({ description: "The signed-in user; null when signed in with an API key" }),
    team: z.object({ id: z.uuid(), name: z.string(), isAdmin: z.boolean() }),
    csrfToken: z.string().meta({ description: "Send it in the X-CSRF-Token header of every request that is not GET/HEAD/OPTIONS" }),
  })
  .meta({ id: "DashboardSession" });
type DashboardSession = z.infer<typeof DashboardSession>;

export const authRoutes: RouteModule = async (app, { deps, authCache }) => {
  const { repos } = deps;
  void prepareDummyHash();
  const loginRateLimit = app.rateLimit({
    max: LOGIN_RATE_LIMIT.max,
    timeWindow: LOGIN_RATE_LIMIT.windowMs,
    keyGenerator: (request) => `login:${request.ip}`,
    errorResponseBuilder: (_request, context) =>
      new WrennError("rate_limited", `Too many sign-in attempts from this address: at most ${LOGIN_RATE_LIMIT.max} per minute. Retry in ${context.after}.`),
  });

  async function view(auth: RequestAuth): Promise<DashboardSession> {
    const user = auth.userId ? await repos.users.get(auth.userId) : undefined;
    return {
      user: user ? { id: user.id, email: user.email } : null,
      team: { id: auth.team.id, name: auth.team.name, isAdmin: auth.team.isAdmin },
      csrfToken: auth.session!.csrfToken,
    };
  }

  /** Writes the entry of a failed sign-in (the audit hook records only successes); never fails the request. */
  async function auditFailure(request: FastifyRequest, reply: FastifyReply, entry: { teamId: string | null; userId: string | null; details: Record<string, unknown> }) {
    const base = auditEntryFor(request, reply, 401);
    try {
      await repos.audit.record({
        ...base,
        teamId: entry.teamId,
        actorType: entry.userId ? "user" : "system",
        actorId: entry.userId,
        resourceType: "session",
        details: { ...base.details, outcome: "failure", ...entry.details },
      });
    } catch (error) {
      request.log.error({ err: error }, "could not write the audit log");
    }
  }

  app.post(
    "/auth/login",
    {
      config: { public: true, auditAction: "auth.login" },
      preHandler: loginRateLimit,
      schema: {
        tags: ["auth"],
        summary: "Sign in to the dashboard: sets the session cookie and returns the CSRF token",
        description:
          "With `email` and `password` (a dashboard user) or `apiKey`. Sets the HttpOnly `wrenn_session` cookie (7 days, sliding). Requests authenticated by the cookie that are not GET/HEAD/OPTIONS must carry `X-CSRF-Token`. Rate limited per client address.",
        operationId: "login",
        security: [],
        body: LoginBody,
        response: { 200: DashboardSession, ...errorResponses },
      },
    },
    async (request, reply) => {
      const body = request.body;
      let subject: { userId: string | null; apiKeyId: string | null; team: Team };
      if ("apiKey" in body) {
        const auth = await resolveApiKey(repos, authCache, body.apiKey);
        if (!auth) {
          await auditFailure(request, reply, { teamId: null, userId: null, details: { method: "api_key", keyPrefix: body.apiKey.slice(0, 8) } });
          throw new WrennError("unauthenticated", WRONG_KEY);
        }
        subject = { userId: null, apiKeyId: auth.apiKeyId, team: auth.team };
      } else {
        const user = await repos.users.findByEmail(body.email);
        // Unknown email or wrong password: the same answer after the same work.
        const ok = user ? await verifyPassword(body.password, user.passwordHash) : await verifyAgainstDummy(body.password);
        // The same queries either way too (no user has a random id).
        const teams = await repos.teams.listForUser(user?.id ?? randomUUID());
        if (!user || !ok) {
          await auditFailure(request, reply, { teamId: teams[0]?.id ?? null, userId: user?.id ?? null, details: { method: "password", email: body.email.toLowerCase() } });
          throw new WrennError("unauthenticated", WRONG_PASSWORD);
        }
        // The oldest team the user belongs to (an admin's is the admin team).
        const team = teams[0];
        if (!team) throw new WrennError("forbidden", "This account belongs to no team; ask an admin to add it to one.");
        subject = { userId: user.id, apiKeyId: null, team };
      }
      await repos.sessions.deleteExpired().catch((error: unknown) => request.log.warn({ err: error }, "could not drop expired sessions"));
      const { session, token } = await repos.sessions.create({
        userId: subject.userId,
        apiKeyId: subject.apiKeyId,
        teamId: subject.team.id,
        ip: request.ip,
        userAgent: request.headers["user-agent"] ?? null,
      });
      // For the audit entry: the signed-in user (or key) is the actor.
      request.auth = sessionAuth(session, subject.team);
      request.auditResource = { type: "session", id: null };
      reply.header("set-cookie", sessionCookie(request, token));
      return view(request.auth);
    },
  );

  app.get(
    "/auth/session",
    {
      config: { public: true },
      schema: {
        tags: ["auth"],
        summary: "The dashboard's current session (user, team, CSRF token), or 401",
        operationId: "getSession",
        security: [],
        response: { 200: DashboardSession, ...errorResponses },
      },
    },
    async (request, reply) => {
      const token = sessionToken(request);
      const auth = token ? await resolveSession(repos, request, reply, token) : undefined;
      if (!auth) throw new WrennError("unauthenticated", "Not signed in, or the session has expired; sign in with POST /v1/auth/login.");
      return view(auth);
    },
  );

  app.post(
    "/auth/password",
    {
      config: { auditAction: "auth.password" },
      schema: {
        tags: ["auth"],
        summary: "Change the signed-in user's password; the user's other sessions end",
        operationId: "changePassword",
        body: z.strictObject({ currentPassword: z.string().min(1).max(1024), newPassword: NewPassword }).meta({ id: "ChangePasswordRequest" }),
        response: { 204: z.null().meta({ description: "Changed" }), ...errorResponses },
      },
    },
    async (request, reply) => {
      const { userId, session } = request.auth;
      if (!userId) throw new WrennError("forbidden", "Only a signed-in dashboard user has a password to change (this request came with an API key).");
      const user = await repos.users.get(userId);
      if (!user || !(await verifyPassword(request.body.currentPassword, user.passwordHash))) {
        throw new WrennError("forbidden", "The current password is wrong.");
      }
      await repos.users.setPasswordHash(userId, await hashPassword(request.body.newPassword));
      await repos.sessions.deleteForUser(userId, session?.id);
      request.auditResource = { type: "user", id: userId };
      return reply.code(204).send(null);
    },
  );

  app.post(
    "/auth/logout",
    {
      config: { public: true, auditAction: "auth.logout" },
      schema: {
        tags: ["auth"],
        summary: "Sign out: ends the session and clears its cookie (needs X-CSRF-Token)",
        operationId: "logout",
        security: [],
        response: { 204: z.null().meta({ description: "Signed out" }), ...errorResponses },
      },
    },
    async (request, reply) => {
      const token = sessionToken(request);
      const auth = token ? await resolveSession(repos, request, undefined, token) : undefined;
      if (auth && token) {
        checkCsrf(request, auth.session!.csrfToken);
        await repos.sessions.deleteByToken(token);
        request.auth = auth;
        request.auditResource = { type: "session", id: null };
      } else {
        request.auditWritten = true; // nobody was signed in: nothing to record
      }
      reply.header("set-cookie", clearedSessionCookie(request));
      return reply.code(204).send(null);
    },
  );
};
