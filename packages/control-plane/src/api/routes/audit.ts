// /v1/audit: the team's audit log, newest first, a page at a time.
import { z } from "zod";
import type { AuditEntry } from "../../db/schema.js";
import { ACTOR_TYPES } from "../../db/schema.js";
import { WrennError } from "../../errors.js";
import type { RouteModule } from "../deps.js";
import { errorResponses } from "../error-responses.js";

const AuditEntryView = z
  .object({
    id: z.number().int(),
    teamId: z.uuid().nullable(),
    actorType: z.enum(ACTOR_TYPES),
    actorId: z.string().nullable().meta({ description: "The API key or user id" }),
    action: z.string().meta({ description: "e.g. api_key.create, sandbox.create" }),
    resourceType: z.string(),
    resourceId: z.string().nullable(),
    sourceIp: z.string().nullable(),
    details: z.record(z.string(), z.unknown()),
    createdAt: z.iso.datetime(),
  })
  .meta({ id: "AuditEntry" });

const toAuditEntryView = (entry: AuditEntry): z.infer<typeof AuditEntryView> => ({
  ...entry,
  createdAt: entry.createdAt.toISOString(),
});

/** An opaque page token: the last entry's time and id. */
const encodeCursor = (entry: AuditEntry) => Buffer.from(`${entry.createdAt.toISOString()}|${entry.id}`).toString("base64url");

function decodeCursor(cursor: string): Pick<AuditEntry, "createdAt" | "id"> {
  const [time, id] = Buffer.from(cursor, "base64url").toString("utf8").split("|");
  const createdAt = new Date(time ?? "");
  if (Number.isNaN(createdAt.getTime()) || !/^\d+$/.test(id ?? "")) {
    throw new WrennError("invalid_argument", "querystring.cursor: not a cursor this API returned; pass nextCursor from the previous page");
  }
  return { createdAt, id: Number(id) };
}

export const auditRoutes: RouteModule = async (app, { deps }) => {
  app.get(
    "/audit",
    {
      schema: {
        tags: ["audit"],
        summary: "The team's audit log, newest first",
        operationId: "listAuditEntries",
        querystring: z.strictObject({
          limit: z.coerce.number().int().min(1).max(1000).default(100),
          cursor: z.string().min(1).optional().meta({ description: "nextCursor of the previous page" }),
          action: z.string().min(1).optional(),
          resourceType: z.string().min(1).optional(),
          teamId: z.uuid().optional().meta({ description: "Another team's log (admin only)" }),
        }),
        response: {
          200: z.object({ entries: z.array(AuditEntryView), nextCursor: z.string().nullable() }),
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const { limit, cursor, action, resourceType } = request.query;
      const teamId = request.query.teamId ?? request.auth.teamId;
      if (teamId !== request.auth.teamId && !request.auth.isAdmin) {
        throw new WrennError("forbidden", "Only an admin team's API key may read another team's audit log.");
      }
      const entries = await deps.repos.audit.list(teamId, {
        limit,
        before: cursor === undefined ? undefined : decodeCursor(cursor),
        action,
        resourceType,
      });
      const last = entries.length === limit ? entries.at(-1) : undefined;
      return { entries: entries.map(toAuditEntryView), nextCursor: last ? encodeCursor(last) : null };
    },
  );
};
