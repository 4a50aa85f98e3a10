// GET /v1/sandboxes/:id/logs: what envd printed inside a sandbox, in E2B's shape (`logs` as raw
// lines, `logEntries` split into level, message and fields), from `start` on, oldest first.
import { z } from "zod";
import { LOG_LEVELS, sandboxLogs } from "../../sandboxes/logs.js";
import { requireService, type RouteModule } from "../deps.js";
import { SandboxParams, sandboxErrorResponses } from "./sandboxes.js";

const LogsQuery = z.strictObject({
  start: z.coerce
    .number()
    .int()
    .min(0)
    .max(Number.MAX_SAFE_INTEGER)
    .optional()
    .meta({ description: "Only entries logged at or after this time, in milliseconds since the epoch; default: the oldest kept" }),
  limit: z.coerce.number().int().min(1).max(1000).default(100).meta({ description: "The most entries returned, the oldest first" }),
});

const SandboxLogLine = z.object({ timestamp: z.iso.datetime(), line: z.string() }).meta({ id: "SandboxLog" });

const SandboxLogEntryView = z
  .object({
    timestamp: z.iso.datetime(),
    level: z.enum(LOG_LEVELS),
    message: z.string(),
    fields: z.record(z.string(), z.string()),
  })
  .meta({ id: "SandboxLogEntry" });

const SandboxLogsView = z
  .object({
    logs: z.array(SandboxLogLine).meta({ description: "Each line as printed" }),
    logEntries: z.array(SandboxLogEntryView).meta({ description: "The same lines: envd's JSON lines split up; other lines are info with the line as message" }),
  })
  .meta({ id: "SandboxLogs" });

export const sandboxLogRoutes: RouteModule = async (app, { deps }) => {
  app.get(
    "/sandboxes/:id/logs",
    {
      schema: {
        tags: ["sandboxes"],
        summary: "envd's logs of a running or paused sandbox, oldest first (a stopped sandbox has none)",
        operationId: "getSandboxLogs",
        params: SandboxParams,
        querystring: LogsQuery,
        response: { 200: SandboxLogsView, ...sandboxErrorResponses },
      },
    },
    async (request) => {
      const services = { sandboxes: requireService(deps, "sandboxes"), registry: requireService(deps, "hosts") };
      const entries = await sandboxLogs(services, request.auth.teamId, request.params.id, request.query);
      return {
        logs: entries.map((entry) => ({ timestamp: entry.timestamp.toISOString(), line: entry.line })),
        logEntries: entries.map((entry) => ({ timestamp: entry.timestamp.toISOString(), level: entry.level, message: entry.message, fields: entry.fields })),
      };
    },
  );
};
