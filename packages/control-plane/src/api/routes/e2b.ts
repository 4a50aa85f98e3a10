// The e2b SDK's REST API (paths fixed by E2B, at the root beside /v1), over the same services as
// /v1. Errors leave in E2B's shape: `{ code: <HTTP status>, message }`, the status from the same
// table as everywhere else (error-responses.ts).
import type { FastifyError } from "fastify";
import type { RouteModule } from "../deps.js";
import { errorHandler } from "../error-responses.js";
import { e2bSandboxDataRoutes } from "./e2b-sandbox-data.js";
import { e2bSandboxRoutes } from "./e2b-sandboxes.js";
import { e2bTemplateRoutes } from "./e2b-templates.js";

export const e2bRoutes: RouteModule = async (app, options) => {
  app.setErrorHandler<FastifyError>((error, request, reply) => {
    const { message } = errorHandler(error, request, reply);
    return { code: reply.statusCode, message };
  });
  await app.register(e2bSandboxRoutes, options);
  await app.register(e2bSandboxDataRoutes, options);
  await app.register(e2bTemplateRoutes, options);
};
