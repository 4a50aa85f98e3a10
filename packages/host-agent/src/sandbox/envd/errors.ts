// What the envd client throws: one error type carrying a Connect code, whether the failure came
// from a Connect RPC, one of envd's plain HTTP endpoints, or the network in between.
import { Code, ConnectError } from "@connectrpc/connect";

/** A call to envd failed; `code` says how (the agent maps it to its own caller's status). */
export class EnvdError extends Error {
  constructor(
    message: string,
    readonly code: Code,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "EnvdError";
  }
}

/** envd did not answer /health before the deadline; `cause` holds the last attempt's failure. */
export class EnvdUnavailableError extends EnvdError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, Code.Unavailable, options);
    this.name = "EnvdUnavailableError";
  }
}

// The inverse of envd's httpStatusOf (packages/envd/src/errors.ts), plus the gateway statuses.
const codesByHttpStatus: Record<number, Code> = {
  400: Code.InvalidArgument,
  401: Code.Unauthenticated,
  403: Code.PermissionDenied,
  404: Code.NotFound,
  408: Code.DeadlineExceeded,
  409: Code.FailedPrecondition, // envd answers 409 for already_exists and failed_precondition alike
  429: Code.ResourceExhausted,
  501: Code.Unimplemented,
  502: Code.Unavailable,
  503: Code.Unavailable,
  504: Code.DeadlineExceeded,
  507: Code.ResourceExhausted,
};

/** The Connect code for an HTTP error status from envd's plain endpoints (/files, /init). */
export function connectCodeOfHttpStatus(status: number): Code {
  return codesByHttpStatus[status] ?? Code.Internal;
}

/** Errno codes that mean envd (or the path to it) is not there, as opposed to refusing the call. */
const unreachable = new Set(["ECONNREFUSED", "ECONNRESET", "EHOSTUNREACH", "ENETUNREACH", "EPIPE", "ETIMEDOUT", "ECONNABORTED", "EAI_AGAIN", "ENOTFOUND"]);

/** Turns whatever a call threw (ConnectError, Node network error, abort) into an EnvdError. */
export function toEnvdError(err: unknown, what: string): EnvdError {
  if (err instanceof EnvdError) return err;
  if (err instanceof ConnectError) return new EnvdError(err.rawMessage || `${what} failed`, err.code, { cause: err });
  const error: NodeJS.ErrnoException = err instanceof Error ? err : new Error(String(err));
  if (error.name === "TimeoutError") return new EnvdError(`${what} timed out`, Code.DeadlineExceeded, { cause: err });
  if (error.name === "AbortError") return new EnvdError(`${what} was cancelled`, Code.Canceled, { cause: err });
  const code = error.code !== undefined && unreachable.has(error.code) ? Code.Unavailable : Code.Internal;
  return new EnvdError(`${what}: ${error.message}`, code, { cause: err });
}
