// Every HTTP call of the SDK: the API key, a time limit per call, cancellation, retries of
// transient failures, and API errors turned into error classes. Typed calls go through
// openapi-fetch (`api.client`) with `api.fetchFor(…)` as their fetch; raw ones through `api.send`.
import { setTimeout as sleep } from "node:timers/promises";
import createClient, { type Client } from "openapi-fetch";
import { Agent } from "undici";
import type { paths } from "../api/schema.js";
import { ConnectionError, RateLimitError, TimeoutError, WrennError, errorClassOf } from "../errors.js";
import type { CallOptions, ConnectionConfig } from "./config.js";
import { backoffMs, isRetriableNetworkCode, isRetriableStatus, networkErrorCode, retryAfterMs, type RetryPolicy } from "./retry.js";

export interface SendOptions extends CallOptions {
  /** Which failures may be retried: see retry.ts. */
  retry: RetryPolicy;
  /** Hand the body over as it comes (downloads, event streams): the time limit ends when the answer starts. */
  stream?: boolean;
}

export interface RawRequest {
  method: string;
  /** Path and query under the API URL, e.g. `/v1/sandboxes/abc/files?path=x`. */
  path: string;
  headers?: Record<string, string>;
  body?: BodyInit;
}

/**
 * fetch's own limits off (undici's default cuts a body silent for 300 s: a quiet command's output
 * stream): each call's `timeoutMs` and each command's own timeout bound the waits instead.
 */
const dispatcher = new Agent({ headersTimeout: 0, bodyTimeout: 0 });

export class Transport {
  /** openapi-fetch over the generated schema; pass `fetch: api.fetchFor(…)` with every call. */
  readonly client: Client<paths>;

  constructor(readonly config: ConnectionConfig) {
    this.client = createClient<paths>({ baseUrl: config.apiUrl });
  }

  /** A fetch for one openapi-fetch call, with these options. */
  fetchFor(options: SendOptions): (request: Request) => Promise<Response> {
    return async (request) => {
      const url = new URL(request.url);
      // openapi-fetch's bodies are small (JSON): sent whole, and again on a retry.
      const body = request.body === null ? undefined : await request.arrayBuffer();
      return this.send({ method: request.method, path: url.pathname + url.search, headers: Object.fromEntries(request.headers), body }, options);
    };
  }

  /** Sends a request, retrying as `options.retry` allows, and answers a successful response or throws a WrennError. */
  async send(request: RawRequest, options: SendOptions): Promise<Response> {
    const what = `${request.method} ${request.path.split("?")[0]}`;
    const timeoutMs = options.timeoutMs ?? this.config.requestTimeoutMs;
    const timeout = new AbortController();
    const timer = timeoutMs > 0 && Number.isFinite(timeoutMs) ? setTimeout(() => timeout.abort(), timeoutMs) : undefined;
    const deadline = timer ? Date.now() + timeoutMs : Number.POSITIVE_INFINITY;
    const signal = options.signal ? AbortSignal.any([options.signal, timeout.signal]) : timeout.signal;
    // The caller's abort reason as it is; a timeout as TimeoutError; anything else as it came.
    const stopped = (err: unknown): unknown => {
      if (options.signal?.aborted) return options.signal.reason;
      if (timeout.signal.aborted) return new TimeoutError(`${what} took longer than ${timeoutMs} ms: pass a larger timeoutMs (or requestTimeoutMs)`, { code: "timeout", cause: err });
      return undefined;
    };
    const wait = async (ms: number) => {
      try {
        await sleep(ms, undefined, { signal });
      } catch (err) {
        throw stopped(err) ?? err;
      }
    };
    const headers = { ...request.headers, "x-api-key": this.config.apiKey };
    const streamedBody = request.body instanceof ReadableStream;
    try {
      for (let attempt = 0; ; attempt++) {
        const retriesLeft = options.retry !== "never" && !streamedBody && attempt < this.config.maxRetries;
        let response: Response;
        try {
          response = await fetch(this.config.apiUrl + request.path, {
            method: request.method,
            headers,
            body: request.body ?? null,
            signal,
            dispatcher,
            ...(streamedBody ? { duplex: "half" } : {}),
          } as RequestInit);
          if (response.ok && !options.stream) {
            // The whole body within the time limit, so a caller never waits on a stalled read.
            const nullBody = response.status === 204 || response.status === 205 || response.status === 304;
            const bytes = nullBody ? null : await response.arrayBuffer();
            response = new Response(bytes, { status: response.status, statusText: response.statusText, headers: response.headers });
          }
        } catch (err) {
          const reason = stopped(err);
          if (reason !== undefined) throw reason;
          const code = networkErrorCode(err);
          if (retriesLeft && isRetriableNetworkCode(code, options.retry)) {
            await wait(backoffMs(attempt));
            continue;
          }
          throw new ConnectionError(
            `${what}: could not reach the Wrenn API at ${this.config.apiUrl} (${code ?? (err as Error).message})` +
              `${attempt > 0 ? ` after ${attempt + 1} attempts` : ""}: is the control plane running? Check apiUrl or WRENN_API_URL`,
            { code: "connection_failed", cause: err },
          );
        }
        if (response.ok) return response;

        const { code, message } = await errorBody(response).catch((err: unknown) => {
          throw stopped(err) ?? err;
        });
        const serverDelay = retryAfterMs(response.headers.get("retry-after"));
        if (retriesLeft && isRetriableStatus(response.status, options.retry)) {
          const delay = serverDelay ?? backoffMs(attempt);
          if (Date.now() + delay < deadline) {
            await wait(delay);
            continue;
          }
        }
        throw apiError(response.status, code, message, attempt, serverDelay);
      }
    } finally {
      clearTimeout(timer);
    }
  }
}

/** openapi-fetch's result to its data: the transport has thrown already when there was an error. */
export const dataOf = <T>(result: { data?: T }): T => result.data as T;

/** The `{code, message}` of an error answer (or what the body said, when it is not that). */
async function errorBody(response: Response): Promise<{ code: string; message: string }> {
  const text = await response.text();
  try {
    const body = JSON.parse(text) as { code?: unknown; message?: unknown };
    if (typeof body.message === "string") return { code: String(body.code ?? response.status), message: body.message };
  } catch {
    // not JSON: use the text
  }
  return { code: String(response.status), message: text.trim() || `HTTP ${response.status} ${response.statusText}` };
}

function apiError(status: number, code: string, message: string, attempt: number, retryAfter: number | undefined): WrennError {
  const retried = attempt > 0 ? ` (gave up after ${attempt} ${attempt === 1 ? "retry" : "retries"})` : "";
  if (status === 429) return new RateLimitError(`${message}${retried}`, { code, status, retryAfterMs: retryAfter });
  if (status === 401) return new (errorClassOf(status))(`${message}: check apiKey or WRENN_API_KEY`, { code, status });
  return new (errorClassOf(status))(`${message}${retried}`, { code, status });
}
