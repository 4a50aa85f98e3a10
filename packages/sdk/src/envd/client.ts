// envd's Connect services of one sandbox, reached through the control plane's edge proxy on the
// API's own port: the request names the sandbox and port 49983 in headers, and the team's API key
// admits it (the proxy adds the sandbox's envd token).
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { Process } from "@wrenn/proto/envd/process";
import type { ConnectionConfig } from "../connection/config.js";
import { AuthenticationError, ConflictError, InvalidArgumentError, NotFoundError, PermissionError, ResourceExhaustedError, ServerError, TimeoutError, WrennError } from "../errors.js";

export const ENVD_PORT = 49983;

export interface EnvdClients {
  process: Client<typeof Process>;
}

export function envdClients(config: ConnectionConfig, sandboxId: string, envdAccessToken: string | undefined): EnvdClients {
  const headers: Interceptor = (next) => (request) => {
    request.header.set("E2b-Sandbox-Id", sandboxId);
    request.header.set("E2b-Sandbox-Port", String(ENVD_PORT));
    request.header.set("X-API-Key", config.apiKey);
    if (envdAccessToken) request.header.set("X-Access-Token", envdAccessToken);
    return next(request);
  };
  const transport = createConnectTransport({ baseUrl: config.apiUrl, httpVersion: "1.1", interceptors: [headers] });
  return { process: createClient(Process, transport) };
}

/** envd's user for a call: HTTP Basic with an empty password, as envd reads it. */
export function userHeader(user: string | undefined): Record<string, string> {
  return user ? { authorization: `Basic ${Buffer.from(`${user}:`).toString("base64")}` } : {};
}

/** A Connect failure as the SDK's error classes (the caller's abort stays as it is). */
export function fromConnectError(err: unknown, what: string, signal?: AbortSignal): unknown {
  if (signal?.aborted) return signal.reason;
  if (err instanceof WrennError || !(err instanceof ConnectError)) return err;
  const message = `${what}: ${err.rawMessage}`;
  // Code.NotFound → "not_found", the API's spelling.
  const options = { code: (Code[err.code] ?? "unknown").replace(/(?<=[a-z])(?=[A-Z])/g, "_").toLowerCase(), cause: err };
  switch (err.code) {
    case Code.Unauthenticated:
      return new AuthenticationError(`${message}: check apiKey or WRENN_API_KEY`, options);
    case Code.PermissionDenied:
      return new PermissionError(message, options);
    case Code.NotFound:
      return new NotFoundError(message, options);
    case Code.AlreadyExists:
    case Code.FailedPrecondition:
      return new ConflictError(message, options);
    case Code.InvalidArgument:
      return new InvalidArgumentError(message, options);
    case Code.ResourceExhausted:
      return new ResourceExhaustedError(message, options);
    case Code.DeadlineExceeded:
      return new TimeoutError(`${message}: pass a larger timeoutMs`, options);
    default:
      return new ServerError(message, options);
  }
}
