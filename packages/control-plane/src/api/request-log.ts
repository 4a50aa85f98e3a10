// One log line per request, when it completes, with the team; health checks only at debug level.
import { LogController, type FastifyReply, type FastifyRequest } from "fastify";
import type { RequestAuth } from "./auth.js";

export class RequestLog extends LogController {
  override incomingRequest(): void {}

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    const auth = request.auth as RequestAuth | null;
    const line = {
      method: request.method,
      url: request.url,
      statusCode: reply.statusCode,
      ms: Math.round(reply.elapsedTime),
      teamId: auth?.teamId,
      err: error ?? undefined,
    };
    if (error) reply.log.error(line, "request errored");
    else if (request.routeOptions.config?.public) reply.log.debug(line, "request");
    else reply.log.info(line, "request");
  }
}
