// /v1/api-keys: the caller's team's keys. A key's secret and its e2b alias are shown once, in the create answer.
import { z } from "zod";
import type { ApiKey } from "../../db/schema.js";
import { notFound } from "../../errors.js";
import type { RouteModule } from "../deps.js";
import { errorResponses } from "../error-responses.js";

export const ApiKeyView = z
  .object({
    id: z.uuid(),
    name: z.string(),
    prefix: z.string().meta({ description: "The secret's first characters, to tell keys apart" }),
    createdAt: z.iso.datetime(),
    lastUsedAt: z.iso.datetime().nullable(),
    revokedAt: z.iso.datetime().nullable(),
  })
  .meta({ id: "ApiKey" });

export const CreatedApiKey = ApiKeyView.extend({
  secret: z.string().meta({ description: "The key itself (wrn_…); shown only in this answer, store it now" }),
  e2bKey: z.string().meta({
    description: "The same key in E2B's shape (e2b_ + 40 hex), for E2B_API_KEY; shown only in this answer, like the secret",
  }),
}).meta({ id: "CreatedApiKey" });

export const toApiKeyView = (key: ApiKey): z.infer<typeof ApiKeyView> => ({
  id: key.id,
  name: key.name,
  prefix: key.prefix,
  createdAt: key.createdAt.toISOString(),
  lastUsedAt: key.lastUsedAt?.toISOString() ?? null,
  revokedAt: key.revokedAt?.toISOString() ?? null,
});

export const ApiKeyName = z.string().trim().min(1).max(100);

export const apiKeyRoutes: RouteModule = async (app, { deps, authCache }) => {
  const { repos } = deps;

  app.get(
    "/api-keys",
    {
      schema: {
        tags: ["api-keys"],
        summary: "List the team's API keys, newest first (revoked ones included)",
        operationId: "listApiKeys",
        response: { 200: z.array(ApiKeyView), ...errorResponses },
      },
    },
    async (request) => (await repos.apiKeys.listForTeam(request.auth.teamId)).map(toApiKeyView),
  );

  app.post(
    "/api-keys",
    {
      config: { auditAction: "api_key.create" },
      schema: {
        tags: ["api-keys"],
        summary: "Create an API key for the team; the answer holds its secret, shown only once",
        operationId: "createApiKey",
        body: z.strictObject({ name: ApiKeyName }),
        response: { 201: CreatedApiKey, ...errorResponses },
      },
    },
    async (request, reply) => {
      const { apiKey, secret, e2bKey } = await repos.apiKeys.create({ teamId: request.auth.teamId, name: request.body.name });
      request.auditResource = { type: "api_key", id: apiKey.id };
      reply.code(201);
      return { ...toApiKeyView(apiKey), secret, e2bKey };
    },
  );

  app.delete(
    "/api-keys/:id",
    {
      config: { auditAction: "api_key.revoke" },
      schema: {
        tags: ["api-keys"],
        summary: "Revoke one of the team's API keys; requests with it fail from now on",
        operationId: "revokeApiKey",
        params: z.strictObject({ id: z.uuid() }),
        response: { 204: z.null().meta({ description: "Revoked" }), ...errorResponses },
      },
    },
    async (request, reply) => {
      if (!(await repos.apiKeys.revoke(request.auth.teamId, request.params.id))) throw notFound("API key", request.params.id);
      authCache.clear();
      request.auditResource = { type: "api_key", id: request.params.id };
      return reply.code(204).send(null);
    },
  );
};
