// Records every mutating request that succeeded in the audit log: who, what, which resource, from where.
import type { FastifyReply, FastifyRequest, onSendAsyncHookHandler } from "fastify";
import type { Logger } from "pino";
import type { NewAuditEntry, PendingAudit } from "../db/audit.js";
import type { Repositories } from "../db/repositories.js";

export interface AuditResource {
  type: string;
  id?: string | null;
}

declare module "fastify" {
  interface FastifyRequest {
    /** The resource a mutating route acted on; set it in the handler once the id is known. */
    auditResource: AuditResource | null;
    /** Set once the service wrote the request's entry itself (see pendingAudit). */
    auditWritten: boolean;
  }
  interface FastifyContextConfig {
    /** The audit log's name for this route's action, e.g. "sandbox.create"; default "POST /v1/…". */
    auditAction?: string;
  }
}

const MUTATING_METHODS = new Set(["POST", "PUT", "PATCH", "DELETE"]);

/** What the audit log says about this request; `status`: the one it will answer with, when not set yet. */
export function auditEntryFor(request: FastifyRequest, reply: FastifyReply, status = reply.statusCode): NewAuditEntry {
  const routeUrl = request.routeOptions.url ?? request.url.split("?")[0]!;
  const action = request.routeOptions.config.auditAction ?? `${request.method} ${routeUrl}`;
  const auth = (request.auth as typeof request.auth | null) ?? null;
  return {
    teamId: auth?.teamId ?? null,
    actorType: auth?.apiKeyId ? "api_key" : auth?.userId ? "user" : "system",
    actorId: auth?.apiKeyId ?? auth?.userId ?? null,
    action,
    resourceType: request.auditResource?.type ?? defaultResourceType(action, routeUrl),
    resourceId: request.auditResource?.id ?? null,
    sourceIp: request.ip,
    details: { method: request.method, path: request.url.split("?")[0], status },
  };
}

/**
 * The entry this request writes if it succeeds with `status`, for the service to write in the same
 * statement as the request's change, or while the request's slow part runs (see PendingAudit):
 * off the request's path either way.
 */
export function pendingAudit(request: FastifyRequest, reply: FastifyReply, resourceType: string, status: number): PendingAudit {
  return {
    entryFor: (resourceId) => {
      request.auditResource = { type: resourceType, id: resourceId };
      return auditEntryFor(request, reply, status);
    },
    written: () => {
      request.auditWritten = true;
    },
  };
}

/** "api_key.create" → "api_key"; "/v1/api-keys/:id" → "api-keys". */
function defaultResourceType(action: string, routeUrl: string): string {
  if (/^[a-z_]+\./.test(action)) return action.slice(0, action.indexOf("."));
  const segments = routeUrl.split("/").filter((segment) => segment && !/^v\d+$/.test(segment));
  return segments[0] ?? "unknown";
}

/**
 * onSend hook: writes the entry before the response leaves, so a client that saw success can read
 * its entry at once. A failed write is logged and never fails the request. Replies that bypass
 * onSend (reply.hijack()) must call `repos.audit.record(auditEntryFor(…))` themselves.
 */
export function recordAudit(repos: Repositories, logger: Logger): onSendAsyncHookHandler {
  return async (request, reply, payload) => {
    if (!MUTATING_METHODS.has(request.method) || reply.statusCode < 200 || reply.statusCode >= 300) return payload;
    if (!request.routeOptions.url || request.auditWritten) return payload;
    const entry = auditEntryFor(request, reply);
    try {
      await repos.audit.record(entry);
    } catch (error) {
      logger.error({ err: error, action: entry.action, teamId: entry.teamId }, "could not write the audit log");
    }
    return payload;
  };
}
