// e2b's reads of what a sandbox did: metrics (one sandbox over a time range, or the latest of
// several) and envd's logs (the deprecated and the v2 shape), from the same services as /v1.
import { z } from "zod";
import type { MetricTier } from "../../db/schema.js";
import { WrennError } from "../../errors.js";
import { LOG_LEVELS, sandboxLogs, type SandboxLog } from "../../sandboxes/logs.js";
import { requireService, type RouteModule } from "../deps.js";
import { E2bSandboxMetric, E2bSandboxParams, e2bErrorResponses, toE2bMetric } from "./e2b-schemas.js";

const tags = ["e2b"];
const UnixSeconds = z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
/** What the host gives at most per request; filtered reads fetch this much and then cut. */
const MAX_LOG_ENTRIES = 1000;

/** The smallest of Wrenn's metric tiers reaching back to `start` (seconds). */
function tierFor(startSec: number | undefined, nowMs: number): MetricTier {
  if (startSec === undefined) return "10m";
  const span = nowMs / 1000 - startSec;
  return span <= 600 ? "10m" : span <= 7200 ? "2h" : "24h";
}

const LogEntry = z
  .object({ timestamp: z.iso.datetime(), level: z.enum(LOG_LEVELS), message: z.string(), fields: z.record(z.string(), z.string()) })
  .meta({ id: "E2bSandboxLogEntry" });
const toLogEntry = (entry: SandboxLog): z.infer<typeof LogEntry> => ({
  timestamp: entry.timestamp.toISOString(),
  level: entry.level,
  message: entry.message,
  fields: entry.fields,
});

export const e2bSandboxDataRoutes: RouteModule = async (app, { deps }) => {
  const sandboxes = () => requireService(deps, "sandboxes");
  const logServices = () => ({ sandboxes: requireService(deps, "sandboxes"), registry: requireService(deps, "hosts") });

  app.get(
    "/sandboxes/:sandboxID/metrics",
    {
      schema: {
        tags,
        summary: "e2b: CPU, memory and disk samples between start and end (Unix seconds), oldest first",
        operationId: "e2bGetSandboxMetrics",
        params: E2bSandboxParams,
        querystring: z.object({ start: UnixSeconds.optional(), end: UnixSeconds.optional() }),
        response: { 200: z.array(E2bSandboxMetric), ...e2bErrorResponses },
      },
    },
    async (request) => {
      const { start, end } = request.query;
      if (start !== undefined && end !== undefined && end < start) throw new WrennError("invalid_argument", "querystring.end: before start");
      const service = sandboxes();
      const sandbox = await service.get(request.auth.teamId, request.params.sandboxID);
      const points = await service.metrics(request.auth.teamId, sandbox.id, tierFor(start, Date.now()));
      return points
        .filter((point) => (start === undefined || point.ts.getTime() >= start * 1000) && (end === undefined || point.ts.getTime() <= end * 1000))
        .map((point) => toE2bMetric(point, sandbox));
    },
  );

  app.get(
    "/sandboxes/metrics",
    {
      schema: {
        tags,
        summary: "e2b: the latest metrics sample of each of the named sandboxes (those not found are left out)",
        operationId: "e2bGetSandboxesMetrics",
        querystring: z.object({ sandbox_ids: z.string().min(1).max(8192).meta({ description: "Comma-separated sandbox ids, at most 100" }) }),
        response: { 200: z.object({ sandboxes: z.record(z.string(), E2bSandboxMetric) }), ...e2bErrorResponses },
      },
    },
    async (request) => {
      const ids = [...new Set(request.query.sandbox_ids.split(",").map((id) => id.trim()).filter(Boolean))];
      if (ids.length > 100) throw new WrennError("invalid_argument", "querystring.sandbox_ids: at most 100 ids");
      const service = sandboxes();
      const latest: Record<string, z.infer<typeof E2bSandboxMetric>> = {};
      for (const id of ids) {
        const sandbox = await service.get(request.auth.teamId, id).catch((err: unknown) => {
          if (err instanceof WrennError && err.code === "not_found") return undefined;
          throw err;
        });
        if (!sandbox) continue;
        const last = (await service.metrics(request.auth.teamId, id, "10m")).at(-1);
        if (last) latest[id] = toE2bMetric(last, sandbox);
      }
      return { sandboxes: latest };
    },
  );

  app.get(
    "/sandboxes/:sandboxID/logs",
    {
      schema: {
        tags,
        summary: "e2b (deprecated logs): envd's log lines from start (ms), oldest first",
        operationId: "e2bGetSandboxLogs",
        params: E2bSandboxParams,
        querystring: z.object({ start: z.coerce.number().int().min(0).optional(), limit: z.coerce.number().int().min(1).max(MAX_LOG_ENTRIES).default(100) }),
        response: {
          200: z.object({ logs: z.array(z.object({ timestamp: z.iso.datetime(), line: z.string() })), logEntries: z.array(LogEntry) }),
          ...e2bErrorResponses,
        },
      },
    },
    async (request) => {
      const entries = await sandboxLogs(logServices(), request.auth.teamId, request.params.sandboxID, request.query);
      return { logs: entries.map((entry) => ({ timestamp: entry.timestamp.toISOString(), line: entry.line })), logEntries: entries.map(toLogEntry) };
    },
  );

  app.get(
    "/v2/sandboxes/:sandboxID/logs",
    {
      schema: {
        tags,
        summary: "e2b: envd's log entries from cursor (ms), forward or backward, at or above a level, matching a text",
        operationId: "e2bGetSandboxLogsV2",
        params: E2bSandboxParams,
        querystring: z.object({
          cursor: z.coerce.number().int().min(0).optional(),
          limit: z.coerce.number().int().min(1).max(MAX_LOG_ENTRIES).default(100),
          direction: z.enum(["forward", "backward"]).default("forward"),
          level: z.enum(LOG_LEVELS).optional(),
          search: z.string().max(1024).optional(),
        }),
        response: { 200: z.object({ logs: z.array(LogEntry) }), ...e2bErrorResponses },
      },
    },
    async (request) => {
      const { cursor, limit, direction, level, search } = request.query;
      const filtered = level !== undefined || search !== undefined || direction === "backward";
      const forward = direction === "forward";
      const entries = await sandboxLogs(logServices(), request.auth.teamId, request.params.sandboxID, {
        ...(forward && cursor !== undefined ? { start: cursor } : {}),
        limit: filtered ? MAX_LOG_ENTRIES : limit,
      });
      const minimum = level === undefined ? 0 : LOG_LEVELS.indexOf(level);
      const kept = entries.filter(
        (entry) =>
          LOG_LEVELS.indexOf(entry.level) >= minimum &&
          (search === undefined || entry.message.includes(search)) &&
          (forward || cursor === undefined || entry.timestamp.getTime() <= cursor),
      );
      const page = forward ? kept.slice(0, limit) : kept.slice(-limit).reverse();
      return { logs: page.map(toLogEntry) };
    },
  );
};
