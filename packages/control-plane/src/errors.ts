// The one error type of the control plane: a code a caller can act on and a message that says
// what to do. Services throw these; the HTTP edge maps each code to a status in one table.
export type ErrorCode =
  | "invalid_argument"
  | "unauthenticated"
  | "forbidden"
  | "not_found"
  | "conflict"
  | "payload_too_large"
  | "failed_precondition"
  | "resource_exhausted"
  | "rate_limited"
  | "unavailable"
  | "internal";

export const HTTP_STATUS: Record<ErrorCode, number> = {
  invalid_argument: 400,
  unauthenticated: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  payload_too_large: 413,
  failed_precondition: 409,
  resource_exhausted: 507,
  rate_limited: 429,
  unavailable: 503,
  internal: 500,
};

export class WrennError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "WrennError";
  }

  get status(): number {
    return HTTP_STATUS[this.code];
  }
}

export const notFound = (what: string, id: string) => new WrennError("not_found", `${what} ${id} not found`);
