// GET /health: liveness, no API key needed.
import { z } from "zod";
import type { RouteModule } from "../deps.js";

export const healthRoutes: RouteModule = async (app) => {
  app.get(
    "/health",
    {
      config: { public: true },
      schema: {
        tags: ["health"],
        summary: "Liveness: answers while the process serves requests",
        operationId: "health",
        security: [],
        response: { 200: z.object({ status: z.literal("ok") }) },
      },
    },
    async () => ({ status: "ok" as const }),
  );
};
