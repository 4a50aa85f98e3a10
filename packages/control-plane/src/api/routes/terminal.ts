// GET /v1/sandboxes/:id/terminal as a WebSocket: the dashboard's terminal, a login shell in the
// sandbox's PTY (sandboxes/terminal-session.ts has the frames). The sandbox is checked before the
// upgrade, so another team's answers 404 and one not running 409 as plain HTTP.
import type { FastifyRequest } from "fastify";
import { z } from "zod";
import type { NewAuditEntry } from "../../db/audit.js";
import { WrennError } from "../../errors.js";
import { EnvdProcesses, type SandboxProcesses } from "../../sandboxes/envd-process.js";
import { TerminalDimension, TerminalSession } from "../../sandboxes/terminal-session.js";
import { requireStatus } from "../../sandboxes/transitions.js";
import { auditEntryFor } from "../audit-recorder.js";
import { requireService, type RouteModule } from "../deps.js";
import { SandboxParams } from "./sandboxes.js";

const TerminalQuery = z.strictObject({
  cols: z.coerce.number().pipe(TerminalDimension).default(80),
  rows: z.coerce.number().pipe(TerminalDimension).default(24),
  pid: z.coerce.number().int().min(1).max(2 ** 32 - 1).optional().meta({ description: "Attach to this running terminal process instead of starting a shell" }),
});

/** What the check before the upgrade found, for the WebSocket handler. */
interface Upgrade {
  processes: SandboxProcesses;
  audit: NewAuditEntry;
}

export const terminalRoutes: RouteModule = async (app, { deps }) => {
  let envd: EnvdProcesses | undefined;
  const envdProcesses = () => (envd ??= new EnvdProcesses({ sandboxes: requireService(deps, "sandboxes"), registry: requireService(deps, "hosts") }));
  const upgrades = new WeakMap<FastifyRequest, Upgrade>();

  app.get(
    "/sandboxes/:id/terminal",
    {
      websocket: true,
      config: { auditAction: "sandbox.terminal" },
      schema: { params: SandboxParams, querystring: TerminalQuery },
      // Runs before the upgrade: a refusal is an HTTP answer (401, 404, 409, 503).
      preHandler: async (request, reply) => {
        const processes = await envdProcesses().of(request.auth.teamId, request.params.id);
        request.auditResource = { type: "sandbox", id: processes.sandbox.id };
        upgrades.set(request, { processes, audit: auditEntryFor(request, reply, 101) });
      },
    },
    async (socket, request) => {
      const upgrade = upgrades.get(request);
      if (!upgrade) throw new WrennError("internal", "terminal upgrade without its sandbox check");
      const { processes, audit } = upgrade;
      const { teamId } = request.auth;
      const sandboxId = processes.sandbox.id;
      const log = deps.logger.child({ sandboxId, teamId, reqId: request.id });
      const { cols, rows, pid } = request.query;
      const session = new TerminalSession({
        socket,
        processes,
        size: { cols, rows },
        pid,
        log,
        whyNotRunning: async () => {
          try {
            requireStatus(await requireService(deps, "sandboxes").get(teamId, sandboxId), ["running"]);
            return undefined;
          } catch (err) {
            return err instanceof WrennError ? err : undefined;
          }
        },
        onStarted: (startedPid) => {
          log.info({ pid: startedPid, attached: pid !== undefined }, "terminal opened");
          // The reply was hijacked for the upgrade: onSend's audit never sees it.
          const entry = { ...audit, details: { ...audit.details, pid: startedPid, attached: pid !== undefined } };
          deps.repos.audit.record(entry).catch((err: unknown) => log.error({ err, action: entry.action }, "could not write the audit log"));
        },
      });
      await session.run();
    },
  );
};
