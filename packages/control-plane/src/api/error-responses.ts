// Every error leaves the API as `{ code, message }` with the status of its code (errors.ts).
import type { FastifyError, FastifyReply, FastifyRequest } from "fastify";
import { hasZodFastifySchemaValidationErrors } from "fastify-type-provider-zod";
import { z } from "zod";
import { HTTP_STATUS, WrennError, type ErrorCode } from "../errors.js";

export const ErrorBody = z
  .object({
    code: z.string().meta({ description: "Machine-readable error code, e.g. not_found" }),
    message: z.string().meta({ description: "What went wrong and what to do about it" }),
  })
  .meta({ id: "Error" });
export type ErrorBody = z.infer<typeof ErrorBody>;

/**
 * The error responses to list in a route's schema. They must describe exactly what the error
 * handler sends: the response serializer checks error bodies too, and a mismatch turns a 400 into a 500.
 */
export const errorResponses = {
  400: ErrorBody,
  401: ErrorBody,
  403: ErrorBody,
  404: ErrorBody,
  413: ErrorBody,
  429: ErrorBody,
  500: ErrorBody,
} as const;

const CODE_BY_STATUS = new Map<number, ErrorCode>(
  (Object.entries(HTTP_STATUS) as Array<[ErrorCode, number]>).reverse().map(([code, status]) => [status, code]),
);

/** One readable sentence per failed check, naming the field: `body.name: Invalid input: expected string`. */
function validationMessage(error: FastifyError): string {
  const where = error.validationContext ?? "request";
  const problems = (error.validation ?? []).map((issue) => {
    const field = issue.instancePath.split("/").filter(Boolean).join(".");
    return `${field ? `${where}.${field}` : where}: ${issue.message ?? "is invalid"}`;
  });
  return problems.length > 0 ? problems.join("; ") : error.message;
}

export function errorHandler(error: FastifyError | WrennError | Error, request: FastifyRequest, reply: FastifyReply): ErrorBody {
  if (error instanceof WrennError) {
    if (error.status >= 500) request.log.error({ err: error }, "request failed");
    reply.code(error.status);
    return { code: error.code, message: error.message };
  }
  const fastifyError = error as FastifyError;
  if (hasZodFastifySchemaValidationErrors(error) || fastifyError.validation) {
    reply.code(400);
    return { code: "invalid_argument", message: validationMessage(fastifyError) };
  }
  // Fastify's own client errors (body too large, bad JSON, wrong content type): keep their status.
  const status = fastifyError.statusCode;
  if (status !== undefined && status >= 400 && status < 500) {
    reply.code(status);
    return { code: CODE_BY_STATUS.get(status) ?? "invalid_argument", message: fastifyError.message };
  }
  request.log.error({ err: error }, "request failed");
  reply.code(500);
  return { code: "internal", message: `Internal error; the server logged it under request id ${request.id}.` };
}

export function notFoundHandler(request: FastifyRequest, reply: FastifyReply): void {
  reply.code(404).send({ code: "not_found", message: `No route ${request.method} ${request.url.split("?")[0]}; see /docs for the API.` });
}
