// /v1/usage: the team's daily usage (sandbox-, vCPU-, memory- and disk-seconds).
import { z } from "zod";
import { usageDay } from "../../db/usage.js";
import { WrennError } from "../../errors.js";
import type { RouteModule } from "../deps.js";
import { errorResponses } from "../error-responses.js";

const DAY_MS = 24 * 60 * 60 * 1000;
const DEFAULT_DAYS = 30;
const MAX_DAYS = 366;

const UsageDayView = z
  .object({
    day: z.iso.date(),
    sandboxSeconds: z.number(),
    vcpuSeconds: z.number(),
    memoryGibSeconds: z.number(),
    diskGibSeconds: z.number(),
  })
  .meta({ id: "UsageDay" });

export const usageRoutes: RouteModule = async (app, { deps }) => {
  app.get(
    "/usage",
    {
      schema: {
        tags: ["usage"],
        summary: "The team's usage per UTC day, oldest first; days without usage are left out",
        operationId: "getUsage",
        querystring: z.strictObject({
          from: z.iso.date().optional().meta({ description: `First day (UTC), default ${DEFAULT_DAYS - 1} days before \`to\`` }),
          to: z.iso.date().optional().meta({ description: "Last day (UTC), inclusive; default today" }),
        }),
        response: {
          200: z.object({ teamId: z.uuid(), from: z.iso.date(), to: z.iso.date(), days: z.array(UsageDayView) }),
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const to = request.query.to ?? usageDay(new Date());
      const from = request.query.from ?? usageDay(new Date(Date.parse(to) - (DEFAULT_DAYS - 1) * DAY_MS));
      const span = (Date.parse(to) - Date.parse(from)) / DAY_MS + 1;
      if (span < 1) throw new WrennError("invalid_argument", `querystring.from (${from}) is after querystring.to (${to}).`);
      if (span > MAX_DAYS) throw new WrennError("invalid_argument", `At most ${MAX_DAYS} days per request; ${from}..${to} is ${span}.`);
      const rows = await deps.repos.usage.list(request.auth.teamId, from, to);
      return {
        teamId: request.auth.teamId,
        from,
        to,
        days: rows.map(({ day, sandboxSeconds, vcpuSeconds, memoryGibSeconds, diskGibSeconds }) => ({
          day,
          sandboxSeconds,
          vcpuSeconds,
          memoryGibSeconds,
          diskGibSeconds,
        })),
      };
    },
  );
};
