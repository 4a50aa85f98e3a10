// e2b's sandbox lifecycle: create (/sandboxes, /v2/sandboxes), connect (resumes), list, get, kill,
// timeout, pause, resume, refreshes. Every call goes to the SandboxService, as /v1's do; only the
// shapes differ (e2b-schemas.ts). A stopped sandbox is not found, as a killed one is in E2B.
import type { FastifyReply, FastifyRequest } from "fastify";
import { z } from "zod";
import type { Sandbox } from "../../db/schema.js";
import { notFound, WrennError } from "../../errors.js";
import type { CreateSandboxInput, SandboxService } from "../../sandboxes/service.js";
import { requireService, type RouteModule } from "../deps.js";
import {
  E2bListedSandbox,
  E2bNewSandbox,
  E2bSandbox,
  E2bSandboxDetail,
  E2bSandboxParams,
  e2bErrorResponses,
  isGone,
  parseE2bMetadata,
  parseE2bStates,
  toE2bListedSandbox,
  toE2bSandbox,
  toE2bSandboxDetail,
  WRENN_STATUSES_BY_E2B_STATE,
} from "./e2b-schemas.js";
import { createAnswering } from "./sandboxes.js";

/** E2B's defaults when a request names no timeout: 15 s on the deprecated paths, 300 s on v2. */
const DEFAULT_TIMEOUT_V1_SEC = 15;
const DEFAULT_TIMEOUT_V2_SEC = 300;
/** E2B's page size limit. */
const MAX_PAGE = 100;

const tags = ["e2b"];
const NoContent = z.null().meta({ description: "Done" });
const Timeout = z.int().min(0).max(30 * 86_400);

/** The team's sandbox, or not_found when it never was or is gone. */
async function liveSandbox(service: SandboxService, teamId: string, sandboxId: string): Promise<Sandbox> {
  const sandbox = await service.get(teamId, sandboxId);
  if (isGone(sandbox)) throw notFound("sandbox", sandboxId);
  return sandbox;
}

function createInput(body: E2bNewSandbox, defaultTimeoutSec: number): CreateSandboxInput {
  if (body.volumeMounts && body.volumeMounts.length > 0) throw new WrennError("invalid_argument", "body.volumeMounts: Wrenn has no volumes; create the sandbox without them");
  if (body.network?.rules && Object.keys(body.network.rules).length > 0) throw new WrennError("invalid_argument", "body.network.rules: request transforms are not supported by Wrenn");
  if (body.network?.egressProxy != null) throw new WrennError("invalid_argument", "body.network.egressProxy: an egress proxy is not supported by Wrenn");
  if (body.network?.allowPublicTraffic === true) {
    throw new WrennError(
      "invalid_argument",
      "body.network.allowPublicTraffic: Wrenn never serves a sandbox's ports without credentials; send the e2b-traffic-access-token header with sandbox.trafficAccessToken",
    );
  }
  // allow_internet_access: false is E2B's shorthand for denying everything (allowOut still wins).
  const denyOut = [...(body.network?.denyOut ?? []), ...(body.allow_internet_access === false ? ["0.0.0.0/0"] : [])];
  return {
    template: body.templateID,
    timeoutSec: body.timeout ?? defaultTimeoutSec,
    // E2B kills a sandbox whose timeout ran out unless auto-pause was asked for (the SDK's lifecycle.onTimeout: "pause").
    onTimeout: body.autoPause === true ? "pause" : "kill",
    ...(body.metadata ? { metadata: body.metadata } : {}),
    ...(body.envVars ? { envVars: body.envVars } : {}),
    ...(body.network?.allowOut ? { allowOut: body.network.allowOut } : {}),
    ...(denyOut.length > 0 ? { denyOut } : {}),
  };
}

export const e2bSandboxRoutes: RouteModule = async (app, { deps, rateLimiters }) => {
  const sandboxes = () => requireService(deps, "sandboxes");
  // The SDK builds `<port>-<id>.<domain>` from it (getHost, and envd's URL unless E2B_SANDBOX_URL
  // is set): Wrenn's edge proxy domain, never the SDK's own default (e2b.app).
  const domain = deps.config.domain;

  /** Create, as /v1 does: a client gone before the answer leaves no sandbox behind. */
  const create = async (request: FastifyRequest, reply: FastifyReply, body: E2bNewSandbox, defaultTimeoutSec: number) => {
    const sandbox = await createAnswering(request, reply, sandboxes(), createInput(body, defaultTimeoutSec));
    if (!sandbox) return reply;
    return reply.send(toE2bSandbox(sandbox, domain));
  };
  const createRoute = (operationId: string) => ({
    preHandler: rateLimiters.sandboxCreate,
    config: { auditAction: "sandbox.create" },
    schema: {
      tags,
      summary: "e2b: create a sandbox from a template (templateID) and wait until it runs",
      operationId,
      body: E2bNewSandbox,
      response: { 201: E2bSandbox, ...e2bErrorResponses },
    },
  });
  app.post("/v2/sandboxes", createRoute("e2bCreateSandboxV2"), (request, reply) => create(request, reply, request.body, DEFAULT_TIMEOUT_V2_SEC));
  app.post("/sandboxes", createRoute("e2bCreateSandbox"), (request, reply) => create(request, reply, request.body, DEFAULT_TIMEOUT_V1_SEC));

  /**
   * Connect: resume a paused sandbox (201) or keep a running one (200). The timeout applies to a
   * resumed sandbox; a running one's is only ever extended, as in E2B.
   */
  const connect = async (request: FastifyRequest, reply: FastifyReply, id: string, timeout: number | undefined, defaultTimeoutSec: number) => {
    const { teamId } = request.auth;
    request.auditResource = { type: "sandbox", id };
    const requested = timeout ?? defaultTimeoutSec;
    let wasPaused = false;
    // One read of the sandbox: the timeout is decided from it inside the resume.
    const after = await sandboxes().resume(teamId, id, {
      timeoutSec: (before) => {
        if (isGone(before)) throw notFound("sandbox", id);
        wasPaused = before.status === "paused";
        return wasPaused ? requested : before.timeoutSec === 0 ? 0 : Math.max(before.timeoutSec, requested);
      },
    });
    return reply.code(wasPaused ? 201 : 200).send(toE2bSandbox(after, domain));
  };
  const connectSchema = (operationId: string, body: z.ZodType<{ timeout?: number } | undefined>) => ({
    config: { auditAction: "sandbox.connect" },
    schema: {
      tags,
      summary: "e2b: connect to a sandbox, resuming it when paused",
      operationId,
      params: E2bSandboxParams,
      body,
      response: { 200: E2bSandbox, 201: E2bSandbox, ...e2bErrorResponses },
    },
  });
  app.post(
    "/v2/sandboxes/:sandboxID/connect",
    connectSchema("e2bConnectSandboxV2", z.object({ timeout: Timeout.optional() }).optional()),
    (request, reply) => connect(request, reply, request.params.sandboxID, request.body?.timeout, DEFAULT_TIMEOUT_V2_SEC),
  );
  app.post(
    "/sandboxes/:sandboxID/connect",
    connectSchema("e2bConnectSandbox", z.object({ timeout: Timeout })),
    (request, reply) => connect(request, reply, request.params.sandboxID, request.body?.timeout, DEFAULT_TIMEOUT_V1_SEC),
  );

  app.get(
    "/v2/sandboxes",
    {
      schema: {
        tags,
        summary: "e2b: list the team's running and paused sandboxes, newest first; the next page's token is in X-Next-Token",
        operationId: "e2bListSandboxesV2",
        querystring: z.object({
          metadata: z.string().max(65_536).optional().meta({ description: "k=v&… with keys and values url-encoded" }),
          state: z.union([z.string(), z.array(z.string())]).optional().meta({ description: "running, paused, or both comma-separated" }),
          limit: z.coerce.number().int().min(1).max(MAX_PAGE).optional(),
          nextToken: z.string().max(512).optional(),
          template: z.string().max(128).optional(),
          startedAfter: z.iso.datetime({ offset: true }).optional(),
          order: z.enum(["asc", "desc"]).optional(),
        }),
        response: { 200: z.array(E2bListedSandbox), ...e2bErrorResponses },
      },
    },
    async (request, reply) => {
      const { metadata, state, limit, nextToken, template, startedAfter, order } = request.query;
      if (order === "asc") throw new WrennError("invalid_argument", "querystring.order: Wrenn lists newest first only (desc)");
      const page = await sandboxes().list(request.auth.teamId, {
        states: parseE2bStates(state),
        metadata: parseE2bMetadata(metadata),
        limit: limit ?? MAX_PAGE,
        ...(nextToken ? { cursor: nextToken } : {}),
      });
      // Filters the service lacks thin each page; the token still walks every sandbox.
      const after = startedAfter ? new Date(startedAfter) : undefined;
      const shown = page.sandboxes.filter(
        (sandbox) => (!template || sandbox.template === template) && (!after || (sandbox.startedAt ?? sandbox.createdAt) >= after),
      );
      if (page.nextCursor) reply.header("x-next-token", page.nextCursor);
      return shown.map(toE2bListedSandbox);
    },
  );

  app.get(
    "/sandboxes",
    {
      schema: {
        tags,
        summary: "e2b (deprecated list): every running sandbox of the team, in one answer",
        operationId: "e2bListRunningSandboxes",
        querystring: z.object({ metadata: z.string().max(65_536).optional() }),
        response: { 200: z.array(E2bListedSandbox), ...e2bErrorResponses },
      },
    },
    async (request) => {
      const service = sandboxes();
      const filter = { states: WRENN_STATUSES_BY_E2B_STATE.running, metadata: parseE2bMetadata(request.query.metadata), limit: MAX_PAGE };
      const all: Sandbox[] = [];
      let cursor: string | undefined;
      do {
        const page = await service.list(request.auth.teamId, { ...filter, ...(cursor ? { cursor } : {}) });
        all.push(...page.sandboxes);
        cursor = page.nextCursor;
      } while (cursor);
      return all.map(toE2bListedSandbox);
    },
  );

  app.get(
    "/sandboxes/:sandboxID",
    {
      schema: {
        tags,
        summary: "e2b: get a running or paused sandbox",
        operationId: "e2bGetSandbox",
        params: E2bSandboxParams,
        response: { 200: E2bSandboxDetail, ...e2bErrorResponses },
      },
    },
    async (request) => toE2bSandboxDetail(await liveSandbox(sandboxes(), request.auth.teamId, request.params.sandboxID), domain),
  );

  app.delete(
    "/sandboxes/:sandboxID",
    {
      config: { auditAction: "sandbox.delete" },
      schema: {
        tags,
        summary: "e2b: kill a sandbox (404 when it is already gone)",
        operationId: "e2bKillSandbox",
        params: E2bSandboxParams,
        response: { 204: NoContent, ...e2bErrorResponses },
      },
    },
    async (request, reply) => {
      const { teamId } = request.auth;
      const id = request.params.sandboxID;
      request.auditResource = { type: "sandbox", id };
      const service = sandboxes();
      await liveSandbox(service, teamId, id);
      await service.destroy(teamId, id);
      return reply.code(204).send(null);
    },
  );

  app.post(
    "/sandboxes/:sandboxID/timeout",
    {
      config: { auditAction: "sandbox.set_timeout" },
      schema: {
        tags,
        summary: "e2b: set the timeout in seconds (in Wrenn, of inactivity before the sandbox is paused; 0: never)",
        operationId: "e2bSetSandboxTimeout",
        params: E2bSandboxParams,
        body: z.object({ timeout: Timeout }),
        response: { 204: NoContent, ...e2bErrorResponses },
      },
    },
    async (request, reply) => {
      request.auditResource = { type: "sandbox", id: request.params.sandboxID };
      await sandboxes().setTimeout(request.auth.teamId, request.params.sandboxID, request.body.timeout);
      return reply.code(204).send(null);
    },
  );

  app.post(
    "/sandboxes/:sandboxID/pause",
    {
      config: { auditAction: "sandbox.pause" },
      schema: {
        tags,
        summary: "e2b: pause a running sandbox (409 when it is already paused); connect resumes it",
        operationId: "e2bPauseSandbox",
        params: E2bSandboxParams,
        body: z.object({ memory: z.boolean().nullish() }).nullish(),
        response: { 204: NoContent, ...e2bErrorResponses },
      },
    },
    async (request, reply) => {
      request.auditResource = { type: "sandbox", id: request.params.sandboxID };
      await sandboxes().pause(request.auth.teamId, request.params.sandboxID);
      return reply.code(204).send(null);
    },
  );

  app.post(
    "/sandboxes/:sandboxID/resume",
    {
      config: { auditAction: "sandbox.resume" },
      schema: {
        tags,
        summary: "e2b (deprecated resume): resume a paused sandbox (409 when it runs)",
        operationId: "e2bResumeSandbox",
        params: E2bSandboxParams,
        body: z.object({ timeout: Timeout.optional() }).nullish(),
        response: { 201: E2bSandbox, ...e2bErrorResponses },
      },
    },
    async (request, reply) => {
      const { teamId } = request.auth;
      const id = request.params.sandboxID;
      request.auditResource = { type: "sandbox", id };
      const service = sandboxes();
      const before = await liveSandbox(service, teamId, id);
      if (before.status !== "paused") throw new WrennError("conflict", `sandbox ${id} is ${before.status}, not paused`);
      const after = await service.resume(teamId, id, { timeoutSec: request.body?.timeout ?? DEFAULT_TIMEOUT_V1_SEC });
      return reply.code(201).send(toE2bSandbox(after, domain));
    },
  );

  app.post(
    "/sandboxes/:sandboxID/refreshes",
    {
      config: { auditAction: "sandbox.ping" },
      schema: {
        tags,
        summary: "e2b: keep a sandbox alive (resets its inactivity timer; `duration` is not needed in Wrenn)",
        operationId: "e2bRefreshSandbox",
        params: E2bSandboxParams,
        body: z.object({ duration: z.int().min(0).optional() }).nullish(),
        response: { 204: NoContent, ...e2bErrorResponses },
      },
    },
    async (request, reply) => {
      request.auditResource = { type: "sandbox", id: request.params.sandboxID };
      await sandboxes().ping(request.auth.teamId, request.params.sandboxID);
      return reply.code(204).send(null);
    },
  );
};
