// Per-API-key request budgets (@fastify/rate-limit, in memory: each control plane counts its own).
import type { FastifyInstance, FastifyRequest, preHandlerAsyncHookHandler } from "fastify";
import type { RateLimit } from "../config.js";
import { WrennError } from "../errors.js";

/** Budgets are per API key, or per dashboard user; a request with neither (public routes) is counted by client IP. */
function rateLimitKey(request: FastifyRequest): string {
  const auth = request.auth as Partial<typeof request.auth> | null;
  if (auth?.apiKeyId) return auth.apiKeyId;
  return auth?.userId ? `user:${auth.userId}` : `ip:${request.ip}`;
}

/**
 * A preHandler allowing each key `limit.max` requests per `limit.windowMs`; past it, 429
 * `rate_limited` with Retry-After. Create one per budget and attach it to every route that shares it.
 * Needs @fastify/rate-limit registered on `app` (buildApi does).
 */
export function perKeyRateLimit(app: FastifyInstance, limit: RateLimit, what: string): preHandlerAsyncHookHandler {
  const handler = app.rateLimit({
    max: limit.max,
    timeWindow: limit.windowMs,
    keyGenerator: rateLimitKey,
    errorResponseBuilder: (_request, context) =>
      new WrennError(
        "rate_limited",
        `Too many ${what} for this API key: at most ${limit.max} per ${limit.windowMs} ms. Retry in ${context.after}.`,
      ),
  });
  return handler as preHandlerAsyncHookHandler;
}
