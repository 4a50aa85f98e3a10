// Names for the generated schema's shapes that the SDK hands to its callers.
import type { components, operations } from "./schema.js";

type Schemas = components["schemas"];

/** A sandbox as the API describes it (`GET /v1/sandboxes/{id}`). */
export type SandboxInfo = Schemas["Sandbox"];
export type SandboxState = SandboxInfo["state"];
/** A runtime a sandbox boots on: gvisor, or a qemu or firecracker microVM (hosts say which they offer). */
export type SandboxRuntime = NonNullable<SandboxInfo["runtime"]>;
export type FileEntry = Schemas["FileEntry"];
export type WrittenFile = Schemas["WrittenFile"];
export type SandboxLogs = Schemas["SandboxLogs"];
export type TemplateInfo = Schemas["Template"];
export type MetricPoint = Schemas["MetricPoint"];
export type SandboxMetrics = operations["getSandboxMetrics"]["responses"][200]["content"]["application/json"];
export type MetricsRange = NonNullable<NonNullable<operations["getSandboxMetrics"]["parameters"]["query"]>["range"]>;
/** The create request's body, as the API names its fields. */
export type CreateSandboxBody = NonNullable<operations["createSandbox"]["requestBody"]>["content"]["application/json"];
export type TemplateBuildInfo = Schemas["TemplateBuild"];
export type BuildTemplateRequest = Schemas["BuildTemplateRequest"];
