// The OpenAPI 3.1 document, generated from the routes' zod schemas: /openapi.json, /openapi.yaml, /docs.
import swagger from "@fastify/swagger";
import swaggerUi from "@fastify/swagger-ui";
import type { FastifyInstance } from "fastify";
import { jsonSchemaTransform, jsonSchemaTransformObject } from "fastify-type-provider-zod";

export interface OpenApiOptions {
  version: string;
  /** Base URL to list under `servers`, when known. */
  publicUrl: string | undefined;
}

/** Register before the routes: @fastify/swagger collects routes as they are added. */
export async function registerOpenApi(app: FastifyInstance, options: OpenApiOptions): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: "3.1.0",
      info: {
        title: "Wrenn API",
        version: options.version,
        description: "Self-hosted sandboxes for untrusted code. Authenticate with an API key in the X-API-Key header (the dashboard: a session cookie from POST /v1/auth/login).",
      },
      servers: options.publicUrl ? [{ url: options.publicUrl }] : [],
      components: {
        securitySchemes: {
          apiKey: { type: "apiKey", in: "header", name: "X-API-Key" },
          bearer: { type: "http", scheme: "bearer" },
          // The dashboard's: set by POST /v1/auth/login; mutations also need X-CSRF-Token.
          session: { type: "apiKey", in: "cookie", name: "wrenn_session" },
        },
      },
      security: [{ apiKey: [] }, { bearer: [] }, { session: [] }],
    },
    transform: jsonSchemaTransform,
    transformObject: jsonSchemaTransformObject,
  });
  await app.register(swaggerUi, { routePrefix: "/docs" });

  const hidden = { schema: { hide: true }, config: { public: true } } as const;
  app.get("/openapi.json", hidden, async () => app.swagger());
  app.get("/openapi.yaml", hidden, async (_request, reply) => reply.type("application/yaml").send(app.swagger({ yaml: true })));
}
