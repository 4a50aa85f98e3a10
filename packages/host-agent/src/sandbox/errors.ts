// Errors of the sandbox layer that a caller can act on. Each names what went wrong in words a user
// understands; the RPC edge (server/errors.ts) maps the classes to Connect codes in one place.

export class SandboxNotFoundError extends Error {
  constructor(readonly sandboxId: string) {
    super(`sandbox ${sandboxId} not found on this host`);
    this.name = "SandboxNotFoundError";
  }
}

export class SandboxExistsError extends Error {
  constructor(readonly sandboxId: string) {
    super(`sandbox ${sandboxId} already exists on this host`);
    this.name = "SandboxExistsError";
  }
}

/** A request whose values are wrong whatever the host's state (bad id, negative size, …). */
export class InvalidRequestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvalidRequestError";
  }
}

/** The host has run out of something (memory, addresses) the request needs. */
export class HostCapacityError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "HostCapacityError";
  }
}

/** The sandbox is not in a state the operation needs (e.g. exec in a paused sandbox). */
export class SandboxStateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SandboxStateError";
  }
}
