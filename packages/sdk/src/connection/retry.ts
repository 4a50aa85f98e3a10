// Which failures are worth another attempt, and how long to wait before it.
//
// A hand-written loop rather than p-retry: the wait must honour the server's Retry-After and the
// call's own deadline, and whether to retry depends on whether the request can have been acted on.

/**
 * - `idempotent`: the call may run twice (reads, kill, set timeout): retried on refused or broken
 *   connections, 502/503/504 and 429.
 * - `unsent`: it must not run twice (create, exec): retried only when it certainly did not run —
 *   the connection was refused, or the server answered 429 before doing anything.
 * - `never`: a body that cannot be sent again (a stream).
 */
export type RetryPolicy = "idempotent" | "unsent" | "never";

const NOT_SENT = new Set(["ECONNREFUSED"]);
const BROKEN = new Set(["ECONNRESET", "EPIPE", "ETIMEDOUT", "EAI_AGAIN", "UND_ERR_SOCKET", "UND_ERR_CLOSED", "UND_ERR_CONNECT_TIMEOUT"]);

export function isRetriableNetworkCode(code: string | undefined, policy: RetryPolicy): boolean {
  if (code === undefined || policy === "never") return false;
  return NOT_SENT.has(code) || (policy === "idempotent" && BROKEN.has(code));
}

export function isRetriableStatus(status: number, policy: RetryPolicy): boolean {
  if (policy === "never") return false;
  return status === 429 || (policy === "idempotent" && (status === 502 || status === 503 || status === 504));
}

/** The system error code under fetch's "fetch failed" (undici puts it in `cause`, sometimes a level deeper). */
export function networkErrorCode(err: unknown): string | undefined {
  for (let current = err, depth = 0; current && depth < 4; current = (current as { cause?: unknown }).cause, depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === "string") return code;
  }
  return undefined;
}

/** Exponential backoff with jitter: ~200 ms, 400 ms, 800 ms, … at most 5 s. */
export function backoffMs(attempt: number): number {
  const base = Math.min(200 * 2 ** attempt, 5_000);
  return Math.round(base / 2 + Math.random() * (base / 2));
}

/** Retry-After in milliseconds (seconds or an HTTP date), or undefined. */
export function retryAfterMs(header: string | null): number | undefined {
  if (header === null || header.trim() === "") return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(header);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}
