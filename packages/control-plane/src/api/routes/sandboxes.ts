// /v1/sandboxes: lifecycle (create, list, get, delete, pause, resume, timeout, ping), exec
// (collected, or streamed as server-sent events) and metrics. The sandbox service checks the team
// on every call: another team's sandbox is not_found.
import type { FastifyReply, FastifyRequest } from "fastify";
import { sql, type AnyColumn, type SQL } from "drizzle-orm";
import { z } from "zod";
import type { Sandbox } from "../../db/schema.js";
import { METRIC_TIERS, ON_TIMEOUT_ACTIONS, SANDBOX_RUNTIMES, SANDBOX_STATUSES, sandboxes as sandboxColumns, type SandboxStatus } from "../../db/schema.js";
import { WrennError } from "../../errors.js";
import type { CreateSandboxInput, ExecEvent, SandboxService } from "../../sandboxes/service.js";
import { auditEntryFor, pendingAudit } from "../audit-recorder.js";
import { requireService, type RouteModule } from "../deps.js";
import { sseKeepalive } from "./sse.js";
import { ErrorBody, errorResponses } from "../error-responses.js";
import { AgentTime } from "../../sandboxes/agent-time.js";
import { FINAL_STATUSES, NOT_ENDED_STATUSES } from "../../sandboxes/transitions.js";
import { ENVD_PORT } from "../../sandboxes/envd-files.js";
import { PORT_TICKET_PARAM, portTicket } from "../../proxy/port-links.js";

/** The error statuses sandbox operations answer with beyond the common ones (conflicts, hosts down, disks full). */
export const sandboxErrorResponses = { ...errorResponses, 409: ErrorBody, 503: ErrorBody, 507: ErrorBody } as const;

/** Sandbox ids are what the service makes: lowercase letters and digits (E2B's host names split on '-'). */
export const SandboxId = z.string().regex(/^[a-z0-9]{1,64}$/, "a sandbox id is 1-64 lowercase letters and digits");
export const SandboxParams = z.strictObject({ id: SandboxId });

const PortLink = z
  .object({
    url: z.string().meta({ description: "Open it in a browser within a minute" }),
    expiresAt: z.iso.datetime(),
  })
  .meta({ id: "PortLink" });

const Seconds = z.int().min(0).max(30 * 86_400);
const StringMap = (what: string) =>
  z.record(z.string().min(1).max(256), z.string().max(32_768)).refine((map) => Object.keys(map).length <= 256, `at most 256 ${what}`);
const EgressList = z.array(z.string().min(1).max(256)).max(256);

export const SandboxView = z
  .object({
    id: z.string(),
    template: z.string(),
    runtime: z.enum(SANDBOX_RUNTIMES).nullable().meta({
      description: "The runtime it runs on, as its host said; null while a create that left the choice to the host has not heard back (or failed)",
    }),
    state: z.enum(SANDBOX_STATUSES),
    vcpus: z.int(),
    memoryMb: z.int(),
    diskSizeMb: z.int(),
    timeoutSec: z.int().meta({ description: "Seconds of inactivity before the host pauses it; 0: never" }),
    metadata: z.record(z.string(), z.string()),
    hostId: z.uuid().nullable(),
    envdVersion: z.string().nullable(),
    createdAt: z.iso.datetime(),
    startedAt: z.iso.datetime().nullable(),
    endAt: z.iso.datetime().nullable().meta({
      description: "When it will be paused for inactivity, if known: the control plane does not track activity, so null for now",
    }),
    endedAt: z.iso.datetime().nullable().meta({ description: "When it stopped for good" }),
  })
  .meta({ id: "Sandbox" });

export const CreatedSandbox = SandboxView.extend({
  envdAccessToken: z.string().meta({ description: "envd's X-Access-Token for this sandbox; shown only in this answer" }),
  trafficAccessToken: z.string().meta({
    description: "Opens the sandbox's own ports (never envd's) through the edge proxy, sent as e2b-traffic-access-token; shown only in this answer",
  }),
}).meta({ id: "CreatedSandbox" });

const CreateSandboxBody = z.strictObject({
  template: z.string().min(1).max(128).default("base"),
  vcpus: z.int().min(1).max(64).optional(),
  memoryMb: z.int().min(64).max(1024 * 1024).optional(),
  diskSizeMb: z.int().min(64).max(16 * 1024 * 1024).optional(),
  timeoutSec: Seconds.optional().meta({ description: "Seconds of inactivity before the host pauses it; 0: never; default 300" }),
  runtime: z.enum(SANDBOX_RUNTIMES).optional().meta({
    description: "The runtime to boot on (gVisor, or a QEMU or Firecracker microVM): only hosts offering it are chosen (409 when none does); default: the chosen host's default runtime",
  }),
  onTimeout: z.enum(ON_TIMEOUT_ACTIONS).optional().meta({ description: "When the timeout runs out: pause it (default; resume brings it back) or kill it (it ends stopped)" }),
  metadata: StringMap("metadata entries").optional(),
  envVars: StringMap("environment variables").optional().meta({ description: "Environment of every process in the sandbox; never stored" }),
  allowOut: EgressList.optional().meta({ description: "Egress allowed to these CIDRs or host names only" }),
  denyOut: EgressList.optional().meta({ description: "Egress denied to these CIDRs or host names" }),
});

const ListQuery = z.strictObject({
  state: z
    .string()
    .optional()
    .meta({ description: `Comma-separated states, e.g. running,paused (${SANDBOX_STATUSES.join(", ")}); default: all but ${FINAL_STATUSES.join(" and ")}` }),
  metadata: z
    .union([z.string(), z.array(z.string())])
    .optional()
    .meta({ description: "key=value; repeat the parameter (or join pairs with &, url-encoded) to require several" }),
  limit: z.coerce.number().int().min(1).max(100).optional(),
  cursor: z.string().max(512).optional(),
});

const ExecBody = z.strictObject({
  cmd: z.string().min(1).max(65_536),
  args: z.array(z.string().max(65_536)).max(1024).optional(),
  envs: StringMap("environment variables").optional(),
  cwd: z.string().max(4096).optional(),
  user: z.string().min(1).max(64).optional(),
  stdin: z.string().optional().meta({ description: "UTF-8 text written to the command's stdin, which is then closed" }),
  timeoutSec: z.int().min(1).max(86_400).optional().meta({ description: "The command is killed after this long; default 60" }),
});
const StreamExecBody = ExecBody.omit({ stdin: true });

const ExecResultView = z
  .object({
    stdout: z.string(),
    stderr: z.string(),
    exitCode: z.int(),
    error: z.string().optional().meta({ description: "Set when the command did not exit by itself (e.g. killed after its timeout)" }),
  })
  .meta({ id: "ExecResult" });

const MetricPointView = z
  .object({ timestamp: z.iso.datetime(), cpuPercent: z.number(), memoryBytes: z.number(), diskBytes: z.number() })
  .meta({ id: "MetricPoint" });

const SandboxList = z.object({ sandboxes: z.array(SandboxView), nextCursor: z.string().nullable() });

const iso = (date: Date | null | undefined): string | null => date?.toISOString() ?? null;

/**
 * toSandboxView() below as a PostgreSQL expression over a sandboxes row, for the list: the
 * database renders each row straight to JSON. The same fields in the same order; a test
 * (sandbox-view.test.ts) holds the two to the same output.
 */
export const sandboxViewSql = sql`json_build_object(
  'id', ${sandboxColumns.id}, 'template', ${sandboxColumns.template}, 'runtime', ${sandboxColumns.runtime}, 'state', ${sandboxColumns.status},
  'vcpus', ${sandboxColumns.vcpus}, 'memoryMb', ${sandboxColumns.memoryMb}, 'diskSizeMb', ${sandboxColumns.diskSizeMb},
  'timeoutSec', ${sandboxColumns.timeoutSec}, 'metadata', ${sandboxColumns.metadata}, 'hostId', ${sandboxColumns.hostId},
  'envdVersion', ${sandboxColumns.envdVersion}, 'createdAt', ${isoSql(sandboxColumns.createdAt)},
  'startedAt', ${isoSql(sandboxColumns.startedAt)}, 'endAt', null, 'endedAt', ${isoSql(sandboxColumns.endedAt)})`;

/** Date.toISOString()'s form, in SQL (millisecond precision, UTC, `Z`); null stays null. */
function isoSql(column: AnyColumn): SQL {
  return sql`to_char(${column} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;
}

export function toSandboxView(sandbox: Sandbox): z.infer<typeof SandboxView> {
  return {
    id: sandbox.id,
    template: sandbox.template,
    runtime: sandbox.runtime,
    state: sandbox.status,
    vcpus: sandbox.vcpus,
    memoryMb: sandbox.memoryMb,
    diskSizeMb: sandbox.diskSizeMb,
    timeoutSec: sandbox.timeoutSec,
    metadata: sandbox.metadata,
    hostId: sandbox.hostId,
    envdVersion: sandbox.envdVersion,
    createdAt: sandbox.createdAt.toISOString(),
    startedAt: iso(sandbox.startedAt),
    endAt: null,
    endedAt: iso(sandbox.endedAt),
  };
}

/**
 * A signal that aborts when the client goes away before the answer is sent. The response's
 * `close` is the one to watch: the request's own `close` fires as soon as its body has been read.
 */
export function disconnectSignal(request: FastifyRequest, reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  const onClose = () => {
    if (!reply.raw.writableFinished) controller.abort(new Error("the client disconnected"));
  };
  reply.raw.once("close", onClose);
  // Not `request.raw.destroyed`: a request is destroyed once its body has been read.
  if (request.raw.socket?.destroyed) controller.abort(new Error("the client disconnected"));
  return controller.signal;
}

/**
 * A create for the request's team, answered 201 with the agent's time in Server-Timing (the
 * caller sends the body), its audit entry written with the sandbox's `running`. A client that
 * leaves before the answer gets none and leaves no sandbox: undefined then, the reply hijacked.
 */
export async function createAnswering(request: FastifyRequest, reply: FastifyReply, service: SandboxService, input: CreateSandboxInput): Promise<Sandbox | undefined> {
  const signal = disconnectSignal(request, reply);
  const agentTime = new AgentTime();
  let sandbox: Sandbox;
  try {
    sandbox = await service.create(request.auth.teamId, input, { signal, agentTime, audit: pendingAudit(request, reply, "sandbox", 201) });
  } catch (err) {
    if (!signal.aborted) throw err;
    request.log.info({ teamId: request.auth.teamId }, "client left during create; nothing answered");
    reply.hijack();
    return undefined;
  }
  if (signal.aborted) {
    // Gone between the service's last check and here: nobody will learn the id, so destroy it.
    await service.destroy(request.auth.teamId, sandbox.id).catch((err: unknown) => request.log.warn({ err, sandboxId: sandbox.id }, "destroying an orphaned create failed"));
    reply.hijack();
    return undefined;
  }
  request.auditResource = { type: "sandbox", id: sandbox.id };
  reply.code(201).header("server-timing", agentTime.header());
  return sandbox;
}

function parseStates(state: string | undefined): SandboxStatus[] {
  // By default, sandboxes that are, not those that were (as E2B lists).
  if (state === undefined || state.trim() === "") return [...NOT_ENDED_STATUSES];
  const states = state.split(",").map((s) => s.trim());
  for (const s of states) {
    if (!(SANDBOX_STATUSES as readonly string[]).includes(s)) {
      throw new WrennError("invalid_argument", `querystring.state: unknown state "${s}"; use ${SANDBOX_STATUSES.join(", ")}`);
    }
  }
  return states as SandboxStatus[];
}

function parseMetadata(metadata: string | string[] | undefined): Record<string, string> | undefined {
  if (metadata === undefined) return undefined;
  const result: Record<string, string> = {};
  for (const pair of (Array.isArray(metadata) ? metadata : [metadata]).flatMap((m) => m.split("&")).filter(Boolean)) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new WrennError("invalid_argument", `querystring.metadata: "${pair}" is not key=value`);
    result[decodeURIComponent(pair.slice(0, eq))] = decodeURIComponent(pair.slice(eq + 1));
  }
  return result;
}

const utf8 = (bytes: Uint8Array): string => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8");

function sseEvent(event: ExecEvent): string {
  const data =
    event.type === "start"
      ? { pid: event.pid }
      : event.type === "exit"
        ? { exitCode: event.exitCode, ...(event.error ? { error: event.error } : {}) }
        : { data: utf8(event.data) };
  return `event: ${event.type}\ndata: ${JSON.stringify(data)}\n\n`;
}

export const sandboxRoutes: RouteModule = async (app, { deps, rateLimiters }) => {
  const sandboxes = () => requireService(deps, "sandboxes");
  const tags = ["sandboxes"];

  app.post(
    "/sandboxes",
    {
      preHandler: rateLimiters.sandboxCreate,
      config: { auditAction: "sandbox.create" },
      schema: {
        tags,
        summary: "Create a sandbox from a template and wait until it runs",
        description: "A client that disconnects before the answer gets no sandbox: a create cut short is rolled back.",
        operationId: "createSandbox",
        body: CreateSandboxBody,
        response: { 201: CreatedSandbox, ...sandboxErrorResponses },
      },
    },
    async (request, reply) => {
      const sandbox = await createAnswering(request, reply, sandboxes(), request.body);
      if (!sandbox) return reply;
      return { ...toSandboxView(sandbox), envdAccessToken: sandbox.envdAccessToken ?? "", trafficAccessToken: sandbox.trafficAccessToken ?? "" };
    },
  );

  app.get(
    "/sandboxes",
    {
      schema: {
        tags,
        summary: "List the team's sandboxes, newest first, a page at a time",
        operationId: "listSandboxes",
        querystring: ListQuery,
        response: { 200: SandboxList, ...sandboxErrorResponses },
      },
    },
    // The hottest read: PostgreSQL renders the page as JSON (sandboxViewSql), sent as it comes.
    async (request, reply) => {
      const { state, metadata, limit, cursor } = request.query;
      const page = await sandboxes().listJson(request.auth.teamId, { states: parseStates(state), metadata: parseMetadata(metadata), limit, cursor }, sandboxViewSql);
      const body = `{"sandboxes":${page.json},"nextCursor":${JSON.stringify(page.nextCursor ?? null)}}`;
      // A JSON string is sent as it is (Fastify serializes only objects); the schema still documents it.
      return reply.type("application/json; charset=utf-8").send(body as unknown as z.infer<typeof SandboxList>);
    },
  );

  app.get(
    "/sandboxes/:id",
    {
      schema: { tags, summary: "Get one sandbox", operationId: "getSandbox", params: SandboxParams, response: { 200: SandboxView, ...sandboxErrorResponses } },
    },
    async (request) => toSandboxView(await sandboxes().get(request.auth.teamId, request.params.id)),
  );

  app.delete(
    "/sandboxes/:id",
    {
      config: { auditAction: "sandbox.delete" },
      schema: {
        tags,
        summary: "Stop a sandbox for good (its metrics are kept); deleting a stopped sandbox is a no-op",
        operationId: "deleteSandbox",
        params: SandboxParams,
        response: { 200: SandboxView, ...sandboxErrorResponses },
      },
    },
    async (request) => {
      request.auditResource = { type: "sandbox", id: request.params.id };
      return toSandboxView(await sandboxes().destroy(request.auth.teamId, request.params.id));
    },
  );

  app.post(
    "/sandboxes/:id/pause",
    {
      config: { auditAction: "sandbox.pause" },
      schema: {
        tags,
        summary: "Pause a running sandbox (409 when already paused)",
        operationId: "pauseSandbox",
        params: SandboxParams,
        response: { 200: SandboxView, ...sandboxErrorResponses },
      },
    },
    async (request) => {
      request.auditResource = { type: "sandbox", id: request.params.id };
      return toSandboxView(await sandboxes().pause(request.auth.teamId, request.params.id));
    },
  );

  app.post(
    "/sandboxes/:id/resume",
    {
      config: { auditAction: "sandbox.resume" },
      schema: {
        tags,
        summary: "Resume a paused sandbox, optionally with a new timeout; a running one keeps running",
        operationId: "resumeSandbox",
        params: SandboxParams,
        body: z.strictObject({ timeoutSec: Seconds.optional() }).optional(),
        response: { 200: SandboxView, ...sandboxErrorResponses },
      },
    },
    async (request) => {
      request.auditResource = { type: "sandbox", id: request.params.id };
      const timeoutSec = request.body?.timeoutSec;
      return toSandboxView(await sandboxes().resume(request.auth.teamId, request.params.id, timeoutSec === undefined ? {} : { timeoutSec }));
    },
  );

  app.post(
    "/sandboxes/:id/timeout",
    {
      config: { auditAction: "sandbox.set_timeout" },
      schema: {
        tags,
        summary: "Set the inactivity timeout (seconds, 0: never pause); counts as activity",
        operationId: "setSandboxTimeout",
        params: SandboxParams,
        body: z.strictObject({ timeoutSec: Seconds }),
        response: { 200: SandboxView, ...sandboxErrorResponses },
      },
    },
    async (request) => {
      request.auditResource = { type: "sandbox", id: request.params.id };
      return toSandboxView(await sandboxes().setTimeout(request.auth.teamId, request.params.id, request.body.timeoutSec));
    },
  );

  app.post(
    "/sandboxes/:id/ports/:port/link",
    {
      config: { auditAction: "sandbox.port_link" },
      schema: {
        tags,
        summary: "A link that opens one of the sandbox's ports in a browser (good for a minute)",
        description:
          "For a browser, which cannot send the traffic access token as a header: following the link sets a cookie on that port's host only (HttpOnly, 12 h) standing for the token, and redirects to the same URL without the ticket. envd's port is never opened this way.",
        operationId: "createPortLink",
        params: z.strictObject({ id: SandboxId, port: z.coerce.number().int().min(1).max(65535) }),
        response: { 200: PortLink, ...sandboxErrorResponses },
      },
    },
    async (request) => {
      const { id, port } = request.params;
      request.auditResource = { type: "sandbox", id };
      if (port === ENVD_PORT) throw new WrennError("invalid_argument", `port ${ENVD_PORT} is envd's: use the SDK or the API, not a link`);
      const sandbox = await sandboxes().get(request.auth.teamId, id);
      if (sandbox.status !== "running") throw new WrennError("failed_precondition", `sandbox ${id} is ${sandbox.status}; resume it first`);
      if (!sandbox.trafficAccessToken) throw new WrennError("failed_precondition", `sandbox ${id} has no traffic access token (made before they existed)`);
      const { ticket, expiresAtSec } = portTicket(sandbox.trafficAccessToken, id, port);
      // Where the caller reached the API (or WRENN_PUBLIC_URL): the edge proxy serves ports on the same port.
      const base = new URL(deps.config.publicUrl ?? `${request.protocol}://${request.host}`);
      const url = new URL(`${base.protocol}//${port}-${id}.${deps.config.domain}${base.port ? `:${base.port}` : ""}/`);
      url.searchParams.set(PORT_TICKET_PARAM, ticket);
      return { url: url.toString(), expiresAt: new Date(expiresAtSec * 1000).toISOString() };
    },
  );

  app.post(
    "/sandboxes/:id/ping",
    {
      config: { auditAction: "sandbox.ping" },
      schema: {
        tags,
        summary: "Keep-alive: reset the sandbox's inactivity timer",
        operationId: "pingSandbox",
        params: SandboxParams,
        response: { 204: z.null().meta({ description: "Timer reset" }), ...sandboxErrorResponses },
      },
    },
    async (request, reply) => {
      request.auditResource = { type: "sandbox", id: request.params.id };
      await sandboxes().ping(request.auth.teamId, request.params.id);
      return reply.code(204).send(null);
    },
  );

  app.post(
    "/sandboxes/:id/exec",
    {
      config: { auditAction: "sandbox.exec" },
      schema: {
        tags,
        summary: "Run a command and answer with its whole output (UTF-8 text)",
        operationId: "execInSandbox",
        params: SandboxParams,
        body: ExecBody,
        response: { 200: ExecResultView, ...sandboxErrorResponses },
      },
    },
    async (request, reply) => {
      request.auditResource = { type: "sandbox", id: request.params.id };
      const { stdin, ...command } = request.body;
      const signal = disconnectSignal(request, reply);
      const agentTime = new AgentTime();
      const result = await sandboxes().exec(
        request.auth.teamId,
        request.params.id,
        { ...command, ...(stdin === undefined ? {} : { stdin: Buffer.from(stdin, "utf8") }) },
        { signal, agentTime, audit: pendingAudit(request, reply, "sandbox", 200) },
      );
      reply.header("server-timing", agentTime.header());
      return { stdout: utf8(result.stdout), stderr: utf8(result.stderr), exitCode: result.exitCode, ...(result.error ? { error: result.error } : {}) };
    },
  );

  app.post(
    "/sandboxes/:id/exec/stream",
    {
      config: { auditAction: "sandbox.exec" },
      schema: {
        tags,
        summary: "Run a command and stream its output as server-sent events",
        description:
          "Events in the order the command produced them: `start` {pid}, then `stdout` / `stderr` {data} (UTF-8 text), then `exit` {exitCode, error?}; " +
          "`error` {code, message} if the stream breaks. Disconnecting ends the command's stream.",
        operationId: "execStreamInSandbox",
        params: SandboxParams,
        body: StreamExecBody,
        response: {
          200: z.string().meta({ description: "text/event-stream" }),
          ...sandboxErrorResponses,
        },
      },
    },
    async (request, reply) => {
      request.auditResource = { type: "sandbox", id: request.params.id };
      const signal = disconnectSignal(request, reply);
      const events = sandboxes().execStream(request.auth.teamId, request.params.id, request.body, { signal });
      // The first event before answering: a missing or paused sandbox is still a plain HTTP error.
      const first = await events.next();
      reply.hijack();
      const raw = reply.raw;
      raw.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", "x-accel-buffering": "no" });
      await deps.repos.audit.record(auditEntryFor(request, reply)).catch((err: unknown) => request.log.error({ err }, "could not write the audit log"));
      const write = (chunk: string) => (raw.destroyed ? Promise.resolve() : new Promise<void>((resolve) => (raw.write(chunk) ? resolve() : raw.once("drain", resolve).once("close", resolve))));
      const stopKeepalive = sseKeepalive(raw);
      try {
        if (!first.done) await write(sseEvent(first.value));
        for (let next = await events.next(); !next.done && !signal.aborted; next = await events.next()) await write(sseEvent(next.value));
      } catch (err) {
        if (!signal.aborted) {
          const error = err instanceof WrennError ? err : new WrennError("internal", "the command's stream broke");
          if (!(err instanceof WrennError)) request.log.error({ err }, "exec stream failed");
          await write(`event: error\ndata: ${JSON.stringify({ code: error.code, message: error.message })}\n\n`);
        }
      } finally {
        stopKeepalive();
        await events.return(undefined);
        if (!raw.destroyed) raw.end();
      }
    },
  );

  app.get(
    "/sandboxes/:id/metrics",
    {
      schema: {
        tags,
        summary: "CPU, memory and disk over a range: live from the host while it runs, stored after pause or stop",
        operationId: "getSandboxMetrics",
        params: SandboxParams,
        querystring: z.strictObject({ range: z.enum(METRIC_TIERS).default("10m") }),
        response: { 200: z.object({ range: z.enum(METRIC_TIERS), points: z.array(MetricPointView) }), ...sandboxErrorResponses },
      },
    },
    async (request) => {
      const points = await sandboxes().metrics(request.auth.teamId, request.params.id, request.query.range);
      return {
        range: request.query.range,
        points: points.map((point) => ({ timestamp: point.ts.toISOString(), cpuPercent: point.cpuPercent, memoryBytes: point.memoryBytes, diskBytes: point.diskBytes })),
      };
    },
  );
};
