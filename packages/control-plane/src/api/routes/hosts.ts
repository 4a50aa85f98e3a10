// /v1/hosts (admin): the machines sandboxes run on. An admin creates a host and gets a one-time
// registration token; the agent's operator trades it (POST /v1/hosts/register, no API key) for the
// host's credentials. Then list with capacity and health, drain, undrain, delete (Terminate at once).
import { z } from "zod";
import { HOST_STATUSES } from "../../db/schema.js";
import type { HostSummary, PublicHost } from "../../hosts/registry.js";
import { requireAdmin } from "../auth.js";
import { requireService, type RouteModule } from "../deps.js";
import { ErrorBody, errorResponses } from "../error-responses.js";

export const HostView = z
  .object({
    id: z.uuid(),
    status: z.enum(HOST_STATUSES),
    address: z.string().nullable().meta({ description: "host:port of the agent's RPC endpoint; null until it registers" }),
    runtimes: z.array(z.string()),
    capacity: z.object({ cpu: z.number().int(), memoryMb: z.number().int(), diskMb: z.number().int(), slots: z.number().int() }),
    lastHeartbeatAt: z.iso.datetime().nullable(),
    createdAt: z.iso.datetime(),
    missedHeartbeats: z.number().int().meta({ description: "Heartbeats missed in a row (this control plane's view)" }),
    live: z
      .object({
        agentVersion: z.string(),
        defaultRuntime: z.string(),
        memoryAvailableMb: z.number().int(),
        diskAvailableMb: z.number().int(),
        slotsUsed: z.number().int(),
        sandboxes: z.object({ running: z.number().int(), paused: z.number().int() }),
        at: z.iso.datetime(),
      })
      .nullable()
      .meta({ description: "What the agent said at its last heartbeat; null until this control plane has heard from it" }),
  })
  .meta({ id: "Host" });

const toHostView = (host: PublicHost | HostSummary): z.infer<typeof HostView> => {
  const live = "live" in host ? host.live : undefined;
  return {
    id: host.id,
    status: host.status,
    address: host.address,
    runtimes: host.runtimes,
    capacity: { cpu: host.cpu, memoryMb: host.memoryMb, diskMb: host.diskMb, slots: host.slots },
    lastHeartbeatAt: host.lastHeartbeatAt?.toISOString() ?? null,
    createdAt: host.createdAt.toISOString(),
    missedHeartbeats: "missedHeartbeats" in host ? host.missedHeartbeats : 0,
    live: live
      ? {
          agentVersion: live.agentVersion,
          defaultRuntime: live.defaultRuntime,
          memoryAvailableMb: live.memoryAvailableMb,
          diskAvailableMb: live.diskAvailableMb,
          slotsUsed: live.slotsUsed,
          sandboxes: { running: live.sandboxesRunning, paused: live.sandboxesPaused },
          at: live.at.toISOString(),
        }
      : null,
  };
};

const HostParams = z.strictObject({ id: z.uuid() });
const moreErrors = { ...errorResponses, 409: ErrorBody, 503: ErrorBody } as const;

export const hostRoutes: RouteModule = async (app, { deps }) => {
  const hosts = () => requireService(deps, "hosts");

  app.post(
    "/hosts/register",
    {
      config: { public: true, auditAction: "host.register" },
      schema: {
        tags: ["hosts"],
        summary: "Register an agent with a host's one-time registration token (no API key)",
        description: "The control plane calls the agent at `address` with `agentToken` to check it before accepting. The host token in the answer is shown once.",
        operationId: "registerHost",
        security: [],
        body: z.strictObject({
          registrationToken: z.string().min(1).max(200),
          address: z.string().min(1).max(300).meta({ description: "host:port where the control plane reaches the agent" }),
          agentToken: z.string().min(1).max(500).meta({ description: "The agent's host token (its data dir's host-token)" }),
        }),
        response: { 200: z.object({ host: HostView, hostToken: z.string() }), ...moreErrors },
      },
    },
    async (request) => {
      const { registrationToken, address, agentToken } = request.body;
      const { host, hostToken } = await hosts().register(registrationToken, { address, agentToken });
      request.auditResource = { type: "host", id: host.id };
      return { host: toHostView(await hosts().get(host.id)), hostToken };
    },
  );

  app.post(
    "/hosts",
    {
      preHandler: requireAdmin,
      config: { auditAction: "host.create" },
      schema: {
        tags: ["hosts"],
        summary: "Admin: create a pending host; the answer holds its one-time registration token",
        operationId: "createHost",
        response: { 201: z.object({ host: HostView, registrationToken: z.string() }), ...errorResponses },
      },
    },
    async (request, reply) => {
      const { host, registrationToken } = await hosts().createHost();
      request.auditResource = { type: "host", id: host.id };
      reply.code(201);
      return { host: toHostView(host), registrationToken };
    },
  );

  app.get(
    "/hosts",
    {
      preHandler: requireAdmin,
      schema: {
        tags: ["hosts"],
        summary: "Admin: every host with its capacity, health and sandbox counts",
        operationId: "listHosts",
        response: { 200: z.array(HostView), ...errorResponses },
      },
    },
    async () => (await hosts().list()).map(toHostView),
  );

  app.get(
    "/hosts/:id",
    {
      preHandler: requireAdmin,
      schema: {
        tags: ["hosts"],
        summary: "Admin: one host",
        operationId: "getHost",
        params: HostParams,
        response: { 200: HostView, ...errorResponses },
      },
    },
    async (request) => toHostView(await hosts().get(request.params.id)),
  );

  for (const action of ["drain", "undrain"] as const) {
    app.post(
      `/hosts/:id/${action}`,
      {
        preHandler: requireAdmin,
        config: { auditAction: `host.${action}` },
        schema: {
          tags: ["hosts"],
          summary: action === "drain" ? "Admin: place no new sandboxes on the host (its sandboxes keep running)" : "Admin: take placements on the host again",
          operationId: `${action}Host`,
          params: HostParams,
          response: { 200: HostView, ...moreErrors },
        },
      },
      async (request) => {
        const registry = hosts();
        await (action === "drain" ? registry.drain(request.params.id) : registry.undrain(request.params.id));
        request.auditResource = { type: "host", id: request.params.id };
        return toHostView(await registry.get(request.params.id));
      },
    );
  }

  app.delete(
    "/hosts/:id",
    {
      preHandler: requireAdmin,
      config: { auditAction: "host.delete" },
      schema: {
        tags: ["hosts"],
        summary: "Admin: remove the host; its agent is told to destroy its sandboxes and exit at once",
        operationId: "deleteHost",
        params: HostParams,
        response: { 204: z.null().meta({ description: "Deleted" }), ...errorResponses },
      },
    },
    async (request, reply) => {
      await hosts().delete(request.params.id);
      request.auditResource = { type: "host", id: request.params.id };
      return reply.code(204).send(null);
    },
  );
};
