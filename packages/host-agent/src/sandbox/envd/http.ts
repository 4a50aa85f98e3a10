// envd's plain HTTP endpoints (/health, /init, /files) over the client's keep-alive agent: the
// request/response plumbing the client's methods share, with envd's errors mapped to EnvdError.
import http from "node:http";
import { Code } from "@connectrpc/connect";
import { EnvdError, connectCodeOfHttpStatus, toEnvdError } from "./errors.js";

export interface HttpCall {
  method: "GET" | "POST";
  /** Path and query, e.g. `/files?path=...`. */
  path: string;
  headers?: http.OutgoingHttpHeaders;
  /** Sent as is; an iterable is streamed chunk by chunk with backpressure, never buffered whole. */
  body?: Uint8Array | AsyncIterable<Uint8Array>;
  /** Fails the call when the TCP connection is not up this soon (a booting sandbox may drop SYNs). */
  connectTimeoutMs?: number;
  /** Fails the call when the response headers have not arrived this soon. */
  headersTimeoutMs?: number;
  signal?: AbortSignal;
  /** What the call does, for error messages ("read /etc/hosts"). */
  what: string;
}

/** The TCP connection was not up within `connectTimeoutMs`. */
export class ConnectTimeoutError extends Error {
  readonly code = "ETIMEDOUT";
  constructor(ms: number) {
    super(`no connection within ${ms} ms`);
    this.name = "ConnectTimeoutError";
  }
}

/**
 * Sends one request and resolves with the response once its headers arrive. Rejects with an
 * EnvdError for anything on envd's side of the call, or with the body source's own error when
 * the caller's iterable fails.
 */
export async function sendHttp(agent: http.Agent, baseUrl: string, call: HttpCall): Promise<http.IncomingMessage> {
  const request = http.request(`${baseUrl}${call.path}`, { method: call.method, headers: call.headers, agent, signal: call.signal });
  const timers: NodeJS.Timeout[] = [];
  const failAfter = (ms: number, error: () => Error): void => void timers.push(setTimeout(() => request.destroy(error()), ms));
  if (call.connectTimeoutMs !== undefined) {
    const ms = call.connectTimeoutMs;
    request.once("socket", (socket) => {
      if (!socket.connecting) return; // a kept-alive socket
      const timer = setTimeout(() => request.destroy(new ConnectTimeoutError(ms)), ms);
      timers.push(timer);
      socket.once("connect", () => clearTimeout(timer));
    });
  }
  if (call.headersTimeoutMs !== undefined) {
    const ms = call.headersTimeoutMs;
    failAfter(ms, () => Object.assign(new Error(`no response within ${ms} ms`), { name: "TimeoutError" }));
  }
  const response = new Promise<http.IncomingMessage>((resolve, reject) => {
    request.once("response", resolve);
    request.on("error", reject); // `on`: a late error with no listener would crash the agent
  });

  let sourceError: { error: unknown } | undefined;
  let uploaded: Promise<void>;
  if (call.body === undefined || call.body instanceof Uint8Array) {
    request.end(call.body);
    uploaded = Promise.resolve();
  } else {
    uploaded = streamBody(call.body, request, (error) => (sourceError = { error }));
  }
  // A failed upload that is not the source's fault (envd answered early and closed) leaves the
  // answer to tell what happened; the source's own failure ends the call at once.
  const answered = uploaded.then(
    () => response,
    (err: unknown) => (sourceError ? Promise.reject(err) : response),
  );
  try {
    return await Promise.race([response, answered]);
  } catch (err) {
    request.destroy();
    if (sourceError) throw sourceError.error;
    throw toEnvdError(err, `${call.what} at ${baseUrl}`);
  } finally {
    for (const timer of timers) clearTimeout(timer);
  }
}

/** Writes `source` into the request as the socket takes it, then ends the request. */
async function streamBody(source: AsyncIterable<Uint8Array>, request: http.ClientRequest, onSourceError: (err: unknown) => void): Promise<void> {
  const closed = new Promise<never>((_, reject) => request.once("close", () => reject(new Error("the request closed before its body was sent"))));
  closed.catch(() => undefined);
  const iterator = source[Symbol.asyncIterator]();
  try {
    for (;;) {
      let next: IteratorResult<Uint8Array>;
      try {
        next = await iterator.next();
      } catch (err) {
        onSourceError(err);
        request.destroy(err as Error);
        throw err;
      }
      if (next.done) break;
      if (request.destroyed) throw new Error("the request closed before its body was sent");
      if (!request.write(next.value)) await Promise.race([new Promise((resolve) => request.once("drain", resolve)), closed]);
    }
    request.end();
  } finally {
    await iterator.return?.().catch(() => undefined);
  }
}

/** Reads a whole (small) response body, at most `limit` bytes. */
export async function readSmallBody(response: http.IncomingMessage, limit = 1 << 20): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of response as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) {
      response.destroy();
      throw new EnvdError(`envd's answer is larger than ${limit} bytes`, Code.Internal);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** The EnvdError for a non-2xx answer: the code from its status, the message from envd's `{code, message}` body. */
export async function errorOfResponse(response: http.IncomingMessage, what: string): Promise<EnvdError> {
  const status = response.statusCode ?? 0;
  let message = "";
  try {
    const body = (await readSmallBody(response, 64 << 10)).toString("utf8");
    try {
      const parsed = JSON.parse(body) as { message?: unknown };
      message = typeof parsed.message === "string" ? parsed.message : body;
    } catch {
      message = body;
    }
  } catch {
    // the status alone must do
  }
  return new EnvdError(message.trim() || `${what}: envd answered HTTP ${status}`, connectCodeOfHttpStatus(status));
}
