// Every failure of the SDK is a WrennError subclass: catch the class you can act on
// (`NotFoundError`, `RateLimitError`, …); `code` is the API's own code when the server answered.

export class WrennError extends Error {
  /** The API's error code (`not_found`, `rate_limited`, …), or the SDK's own for client-side failures. */
  readonly code: string;
  /** The HTTP status, when the server answered. */
  readonly status: number | undefined;

  constructor(message: string, options: { code: string; status?: number; cause?: unknown }) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = options.code;
    this.status = options.status;
  }
}

/** 401, or no API key at all: the key is missing, wrong or revoked. */
export class AuthenticationError extends WrennError {}
/** 403: the key may not do this (an admin route, a platform template). */
export class PermissionError extends WrennError {}
/** 404: no such sandbox, file or template for this team. */
export class NotFoundError extends WrennError {}
/** 409: the resource is not in a state that allows this (already paused, not running, exists already). */
export class ConflictError extends WrennError {}
/** 400 / 413: the request itself is wrong; the message names the field. */
export class InvalidArgumentError extends WrennError {}
/** 507: the sandbox's disk or the host is full. */
export class ResourceExhaustedError extends WrennError {}
/** 5xx: the control plane or a host failed; transient ones were already retried. */
export class ServerError extends WrennError {}

/** 429 after the retries: the key's budget (e.g. sandbox creates) is used up for now. */
export class RateLimitError extends WrennError {
  /** How long the server asked to wait, when it said. */
  readonly retryAfterMs: number | undefined;

  constructor(message: string, options: { code: string; status?: number; retryAfterMs?: number; cause?: unknown }) {
    super(message, options);
    this.retryAfterMs = options.retryAfterMs;
  }
}

/** The API could not be reached (refused, reset, DNS), after the retries. */
export class ConnectionError extends WrennError {}

/** A call (or a command) took longer than its timeout. */
export class TimeoutError extends WrennError {}

/** A command was killed after its `timeoutMs`; what it printed until then is kept. */
export class CommandTimeoutError extends TimeoutError {
  constructor(
    message: string,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(message, { code: "command_timeout" });
  }
}

/** The error class of an API answer with this status. */
export function errorClassOf(status: number): typeof WrennError {
  if (status === 401) return AuthenticationError;
  if (status === 403) return PermissionError;
  if (status === 404) return NotFoundError;
  if (status === 409) return ConflictError;
  if (status === 400 || status === 413 || status === 422) return InvalidArgumentError;
  if (status === 507) return ResourceExhaustedError;
  if (status >= 500) return ServerError;
  return WrennError;
}

/** A template build failed (a step exited non-zero, a step timed out, the host failed). */
export class TemplateBuildError extends WrennError {
  constructor(
    message: string,
    readonly buildId: string,
  ) {
    super(message, { code: "build_failed" });
  }
}
