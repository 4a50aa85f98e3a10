// e2b's template calls that map onto Wrenn's catalogue (TemplateService, as /v1/templates): does
// a name exist, delete one, and snapshots: a sandbox's files saved as one of the team's templates,
// which Sandbox.create then takes. The snapshot id is the template's name. Wrenn's snapshots keep
// files, not memory: a sandbox made from one boots afresh. Template builds are /v1's only.
import { randomBytes } from "node:crypto";
import { z } from "zod";
import { PLATFORM_TEAM_ID, type Template } from "../../db/schema.js";
import { requireService, type RouteModule } from "../deps.js";
import { E2bSandboxParams, e2bErrorResponses } from "./e2b-schemas.js";

const tags = ["e2b"];

const SnapshotInfo = z
  .object({
    snapshotID: z.string().meta({ description: "The template's name: pass it to Sandbox.create" }),
    names: z.array(z.string()),
  })
  .meta({ id: "E2bSnapshotInfo" });

const toSnapshotInfo = (template: Template): z.infer<typeof SnapshotInfo> => ({ snapshotID: template.name, names: [template.name] });

export const e2bTemplateRoutes: RouteModule = async (app, { deps }) => {
  const templates = () => requireService(deps, "templates");

  app.post(
    "/sandboxes/:sandboxID/snapshots",
    {
      config: { auditAction: "template.create" },
      schema: {
        tags,
        summary: "e2b: save a sandbox's files as a snapshot template; the sandbox keeps running",
        operationId: "e2bCreateSnapshot",
        params: E2bSandboxParams,
        body: z.object({ name: z.string().min(1).max(63).optional() }).nullish(),
        response: { 201: SnapshotInfo, ...e2bErrorResponses },
      },
    },
    async (request, reply) => {
      const id = request.params.sandboxID;
      const name = request.body?.name ?? `snapshot-${id.slice(0, 40)}-${randomBytes(3).toString("hex")}`;
      const template = await templates().snapshot(request.auth.teamId, id, name, { keepRunning: true });
      request.auditResource = { type: "template", id: template.id };
      return reply.code(201).send(toSnapshotInfo(template));
    },
  );

  app.get(
    "/snapshots",
    {
      schema: {
        tags,
        summary: "e2b: the team's snapshot templates, optionally of one sandbox or by name; the next page's token is in X-Next-Token",
        operationId: "e2bListSnapshots",
        querystring: z.object({
          sandboxID: z.string().max(128).optional(),
          name: z.string().max(128).optional(),
          limit: z.coerce.number().int().min(1).max(100).optional(),
          nextToken: z.string().max(512).optional(),
        }),
        response: { 200: z.array(SnapshotInfo), ...e2bErrorResponses },
      },
    },
    async (request, reply) => {
      const { teamId } = request.auth;
      const { sandboxID, name, limit = 100, nextToken } = request.query;
      const snapshots = (await templates().list(teamId)).filter(
        (template) =>
          template.teamId === teamId &&
          template.kind === "snapshot" &&
          (sandboxID === undefined || template.metadata.sourceSandbox === sandboxID) &&
          (name === undefined || template.name === name),
      );
      // A team has few snapshots: the token is an offset into the whole list.
      const start = /^\d+$/.test(nextToken ?? "") ? Number(nextToken) : 0;
      if (start + limit < snapshots.length) reply.header("x-next-token", String(start + limit));
      return snapshots.slice(start, start + limit).map(toSnapshotInfo);
    },
  );

  app.get(
    "/templates/aliases/:alias",
    {
      schema: {
        tags,
        summary: "e2b (Template.exists): a template the team sees, by name",
        operationId: "e2bGetTemplateAlias",
        params: z.strictObject({ alias: z.string().min(1).max(128) }),
        response: { 200: z.object({ templateID: z.string(), public: z.boolean() }), ...e2bErrorResponses },
      },
    },
    async (request) => {
      const template = await templates().get(request.auth.teamId, request.params.alias);
      return { templateID: template.name, public: template.teamId === PLATFORM_TEAM_ID };
    },
  );

  app.delete(
    "/templates/:templateID",
    {
      config: { auditAction: "template.delete" },
      schema: {
        tags,
        summary: "e2b: delete one of the team's templates (snapshots included)",
        operationId: "e2bDeleteTemplate",
        params: z.strictObject({ templateID: z.string().min(1).max(128) }),
        response: { 204: z.null().meta({ description: "Deleted" }), ...e2bErrorResponses },
      },
    },
    async (request, reply) => {
      request.auditResource = { type: "template", id: request.params.templateID };
      await templates().delete(request.auth.teamId, request.params.templateID);
      return reply.code(204).send(null);
    },
  );
};
