// @wrenn/sdk: a typed client of Wrenn's /v1 API. Start with `Sandbox.create()`.
export { Sandbox, type CreateSandboxOptions, type ListSandboxesOptions, type SnapshotOptions } from "./sandbox/sandbox.js";
export { Commands, type CommandEvent, type CommandOptions, type CommandResult, type RunOptions } from "./sandbox/commands.js";
export { Files, type FileData, type FileOptions } from "./sandbox/files.js";
export type { CallOptions, ConnectionOptions } from "./connection/config.js";
export type { FileEntry, MetricPoint, MetricsRange, SandboxInfo, SandboxLogs, SandboxMetrics, SandboxRuntime, SandboxState, TemplateInfo, WrittenFile } from "./api/types.js";
export type { components, operations, paths } from "./api/schema.js";
export {
  AuthenticationError,
  CommandTimeoutError,
  ConflictError,
  ConnectionError,
  InvalidArgumentError,
  NotFoundError,
  PermissionError,
  RateLimitError,
  ResourceExhaustedError,
  ServerError,
  TimeoutError,
  WrennError,
} from "./errors.js";
export { Pty, PtyHandle, type PtyExit, type PtyOptions, type PtySize } from "./sandbox/pty.js";
export { Template, type BuildLogEvent, type BuildTemplateOptions } from "./template/template.js";
export { TemplateBuildError } from "./errors.js";
export type { TemplateBuildInfo } from "./api/types.js";
