// The one place where the agent's errors become Connect codes. Anything not listed is internal,
// logged with its stack, and reported without internals.
import { Code, ConnectError } from "@connectrpc/connect";
import { logger } from "../logging/logger.js";
import { EnvdError } from "../sandbox/envd/client.js";
import { HostCapacityError, InvalidRequestError, SandboxExistsError, SandboxNotFoundError, SandboxStateError } from "../sandbox/errors.js";
import { InvalidMetricsRangeError } from "../sandbox/metrics/tiers.js";
import { InvalidDiskSizeError } from "../sandbox/storage/disk.js";
import { InvalidTemplateNameError, TemplateExistsError, TemplateInUseError, TemplateNotFoundError, TooManyLayersError } from "../sandbox/storage/templates.js";

const log = logger.child({ component: "rpc" });

type ErrorClass = abstract new (...args: never[]) => Error;

// Subclasses take their parent's code (SlotsExhaustedError is a HostCapacityError,
// InvalidEgressRuleError an InvalidRequestError, EnvdUnavailableError an EnvdError carrying its own).
const CODES: [ErrorClass, Code][] = [
  [SandboxNotFoundError, Code.NotFound],
  [TemplateNotFoundError, Code.NotFound],
  [SandboxExistsError, Code.AlreadyExists],
  [TemplateExistsError, Code.AlreadyExists],
  [InvalidRequestError, Code.InvalidArgument],
  [InvalidTemplateNameError, Code.InvalidArgument],
  [InvalidDiskSizeError, Code.InvalidArgument],
  [InvalidMetricsRangeError, Code.InvalidArgument],
  [HostCapacityError, Code.ResourceExhausted],
  [SandboxStateError, Code.FailedPrecondition],
  [TemplateInUseError, Code.FailedPrecondition],
  // A snapshot of a snapshot of …: flatten the sandbox instead (FlattenRootfs).
  [TooManyLayersError, Code.FailedPrecondition],
];

/** The Connect error a caller sees for `err`. */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof EnvdError) return new ConnectError(err.message, err.code);
  for (const [type, code] of CODES) if (err instanceof type) return new ConnectError(err.message, code);
  log.error({ err }, "internal error");
  return new ConnectError(err instanceof Error ? err.message : String(err), Code.Internal);
}
