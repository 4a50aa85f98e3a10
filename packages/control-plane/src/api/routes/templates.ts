// /v1/templates: the catalogue a team sees (platform templates and its own), snapshots of its
// sandboxes, builds from a base template plus shell steps (with their logs as server-sent events),
// and deletes. A platform template is never a team's to delete: 403 before any host is touched.
// Builds are kept in the database: their status and logs outlive a control plane restart.
import { z } from "zod";
import { PLATFORM_TEAM_ID, SANDBOX_RUNTIMES, type Template } from "../../db/schema.js";
import { templateRuntimes } from "../../templates/runtimes.js";
import { FINISHED_BUILDS_KEPT_PER_TEAM, type BuildEvent, type TemplateBuild } from "../../templates/service.js";
import { requireService, type RouteModule } from "../deps.js";
import { sseKeepalive } from "./sse.js";
import { ErrorBody, errorResponses } from "../error-responses.js";

export const TemplateView = z
  .object({
    id: z.uuid(),
    name: z.string(),
    kind: z.string().meta({ description: "base (platform), snapshot or build" }),
    platform: z.boolean().meta({ description: "A platform template: every team may use it, none may delete it" }),
    hostId: z.uuid().nullable().meta({ description: "The host holding it (team templates live where they were made); null: every host" }),
    runtimes: z.array(z.enum(SANDBOX_RUNTIMES)).meta({ description: "The runtimes that boot it (a sandbox's runtime must be one of them): every one, for a filesystem template" }),
    sizeBytes: z.number().int(),
    metadata: z.record(z.string(), z.unknown()),
    createdAt: z.iso.datetime(),
  })
  .meta({ id: "Template" });

export const BuildView = z
  .object({
    id: z.string(),
    name: z.string().meta({ description: "The template the build makes" }),
    baseTemplate: z.string(),
    steps: z.array(z.string()),
    status: z.enum(["building", "ready", "failed"]),
    error: z.string().nullable(),
    sandboxId: z.string().nullable().meta({ description: "The build sandbox, once placed" }),
    startedAt: z.iso.datetime(),
    finishedAt: z.iso.datetime().nullable(),
  })
  .meta({ id: "TemplateBuild" });

const toTemplateView = (template: Template): z.infer<typeof TemplateView> => ({
  id: template.id,
  name: template.name,
  kind: template.kind,
  platform: template.teamId === PLATFORM_TEAM_ID,
  hostId: template.hostId,
  runtimes: [...templateRuntimes(template)],
  sizeBytes: template.sizeBytes,
  metadata: template.metadata,
  createdAt: template.createdAt.toISOString(),
});

const toBuildView = (build: TemplateBuild): z.infer<typeof BuildView> => ({
  id: build.id,
  name: build.name,
  baseTemplate: build.baseTemplate,
  steps: build.steps,
  status: build.status,
  error: build.error ?? null,
  sandboxId: build.sandboxId ?? null,
  startedAt: build.startedAt.toISOString(),
  finishedAt: build.finishedAt?.toISOString() ?? null,
});

/** The service checks the full rule (a-z, 0-9, '.', '_', '-'); the edge bounds the size. */
const TemplateName = z.string().min(1).max(63);
const SandboxId = z.string().regex(/^[a-z0-9]{1,64}$/, "a sandbox id: lowercase letters and digits");
const BuildId = z.string().regex(/^bld_[0-9a-f]{32}$/, "a build id: bld_ and 32 hex digits");

const SnapshotRequest = z
  .strictObject({
    fromSandbox: SandboxId.meta({ description: "The team's running or paused sandbox to save" }),
    name: TemplateName,
    keepRunning: z.boolean().optional().meta({ description: "Keep the sandbox afterwards (default: the snapshot consumes it)" }),
  })
  .meta({ id: "SnapshotTemplateRequest" });

const BuildRequest = z
  .strictObject({
    baseTemplate: TemplateName,
    name: TemplateName,
    steps: z.array(z.string().min(1).max(10_000)).min(1).max(100).meta({ description: "Shell commands run in order as root; the first that fails fails the build" }),
    vcpus: z.number().int().min(1).max(64).optional(),
    memoryMb: z.number().int().min(64).max(1024 * 1024).optional(),
    diskSizeMb: z.number().int().min(64).max(1024 * 1024).optional(),
    stepTimeoutSec: z.number().int().min(1).max(24 * 3600).optional(),
  })
  .meta({ id: "BuildTemplateRequest" });

const moreErrors = { ...errorResponses, 409: ErrorBody, 503: ErrorBody } as const;

/** One server-sent event: a named event with a JSON line of data. */
const sse = (event: BuildEvent): string => `event: ${event.type}\ndata: ${JSON.stringify(event.type === "done" ? { ...event, template: toTemplateView(event.template) } : event)}\n\n`;

export const templateRoutes: RouteModule = async (app, { deps }) => {
  const templates = () => requireService(deps, "templates");

  app.get(
    "/templates",
    {
      schema: {
        tags: ["templates"],
        summary: "List the platform templates and the team's own",
        operationId: "listTemplates",
        response: { 200: z.array(TemplateView), ...errorResponses },
      },
    },
    async (request) => (await templates().list(request.auth.teamId)).map(toTemplateView),
  );

  app.get(
    "/templates/:name",
    {
      schema: {
        tags: ["templates"],
        summary: "Get a template by name (the team's own before a platform one)",
        operationId: "getTemplate",
        params: z.strictObject({ name: TemplateName }),
        response: { 200: TemplateView, ...errorResponses },
      },
    },
    async (request) => toTemplateView(await templates().get(request.auth.teamId, request.params.name)),
  );

  app.post(
    "/templates",
    {
      config: { auditAction: "template.create" },
      schema: {
        tags: ["templates"],
        summary: "Snapshot a sandbox into a template (201), or start a build from a base template and steps (202)",
        description:
          "`{fromSandbox, name}` saves the sandbox's files as the team's template on its host (synchronous). " +
          "`{baseTemplate, name, steps}` starts a build; follow it at /v1/templates/builds/{buildId} and its /logs.",
        operationId: "createTemplate",
        body: z.union([SnapshotRequest, BuildRequest]),
        response: { 201: TemplateView, 202: BuildView, ...moreErrors },
      },
    },
    async (request, reply) => {
      const { teamId } = request.auth;
      const body = request.body;
      if ("fromSandbox" in body) {
        const template = await templates().snapshot(teamId, body.fromSandbox, body.name, { keepRunning: body.keepRunning });
        request.auditResource = { type: "template", id: template.id };
        reply.code(201);
        return toTemplateView(template);
      }
      const build = await templates().build(teamId, body);
      request.auditResource = { type: "template_build", id: build.id };
      reply.code(202).header("location", `/v1/templates/builds/${build.id}`);
      return toBuildView(build);
    },
  );

  app.get(
    "/templates/builds",
    {
      schema: {
        tags: ["templates"],
        summary: "The team's builds, newest first",
        description: `Running builds and the last ${FINISHED_BUILDS_KEPT_PER_TEAM} finished ones (older builds and their logs are deleted).`,
        operationId: "listTemplateBuilds",
        querystring: z.strictObject({
          limit: z.coerce.number().int().min(1).max(FINISHED_BUILDS_KEPT_PER_TEAM).optional().meta({ description: `At most this many (default ${FINISHED_BUILDS_KEPT_PER_TEAM})` }),
        }),
        response: { 200: z.array(BuildView), ...errorResponses },
      },
    },
    async (request) => (await templates().listBuilds(request.auth.teamId, { limit: request.query.limit })).map(toBuildView),
  );

  app.get(
    "/templates/builds/:buildId",
    {
      schema: {
        tags: ["templates"],
        summary: "A build's status",
        operationId: "getTemplateBuild",
        params: z.strictObject({ buildId: BuildId }),
        response: { 200: BuildView, ...errorResponses },
      },
    },
    async (request) => toBuildView(await templates().getBuild(request.auth.teamId, request.params.buildId)),
  );

  app.get(
    "/templates/builds/:buildId/logs",
    {
      schema: {
        tags: ["templates"],
        summary: "A build's log as server-sent events: everything so far, then live until the build ends",
        description: "Events: `step` {step, command}, `stdout`/`stderr` {step, data}, `exit` {step, exitCode}, then `done` {template} or `failed` {message}.",
        operationId: "streamTemplateBuildLogs",
        params: z.strictObject({ buildId: BuildId }),
        response: { 200: z.string().meta({ description: "text/event-stream" }), ...errorResponses },
      },
    },
    async (request, reply) => {
      const service = templates();
      await service.getBuild(request.auth.teamId, request.params.buildId); // 404 before the stream starts
      const abort = new AbortController();
      request.raw.once("close", () => abort.abort());
      reply.hijack();
      reply.raw.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" });
      const stopKeepalive = sseKeepalive(reply.raw);
      try {
        for await (const event of service.buildLogs(request.auth.teamId, request.params.buildId, { signal: abort.signal })) {
          if (reply.raw.destroyed) break;
          reply.raw.write(sse(event));
        }
      } catch (err) {
        if (!reply.raw.destroyed) reply.raw.write(`event: error\ndata: ${JSON.stringify({ message: err instanceof Error ? err.message : String(err) })}\n\n`);
      } finally {
        stopKeepalive();
        reply.raw.end();
      }
    },
  );

  app.delete(
    "/templates/:name",
    {
      config: { auditAction: "template.delete" },
      schema: {
        tags: ["templates"],
        summary: "Delete one of the team's templates from its host and the catalogue; platform templates are 403",
        operationId: "deleteTemplate",
        params: z.strictObject({ name: TemplateName }),
        response: { 204: z.null().meta({ description: "Deleted" }), ...moreErrors },
      },
    },
    async (request, reply) => {
      await templates().delete(request.auth.teamId, request.params.name);
      request.auditResource = { type: "template", id: request.params.name };
      return reply.code(204).send(null);
    },
  );
};
