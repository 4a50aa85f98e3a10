// Firecracker's API contract as a validator: its published swagger file (Swagger 2.0, kept as
// test/specs/firecracker.yaml, a copy of src/firecracker/swagger/firecracker.yaml of the
// firecracker repository, Apache-2.0, API version 1.17.0-dev) says which paths and methods exist
// and what body each takes; Ajv checks a request's body against that schema, every `$ref` into
// `definitions` resolved.
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Ajv, type ErrorObject, type ValidateFunction } from "ajv";
import YAML from "yaml";

export const SPEC_FILE = path.join(path.dirname(fileURLToPath(import.meta.url)), "specs", "firecracker.yaml");

type Schema = Record<string, unknown>;
interface Parameter {
  name: string;
  in: "body" | "path" | "query";
  required?: boolean;
  type?: string;
  schema?: Schema;
}
interface Operation {
  operationId: string;
  parameters?: Parameter[];
}
interface SwaggerSpec {
  swagger: string;
  info: { version: string };
  paths: Record<string, Record<string, Operation>>;
  definitions: Record<string, Schema>;
}

export interface ApiRequest {
  method: string;
  /** The request target, e.g. /drives/root. */
  path: string;
  /** The parsed JSON body; undefined when the request had none. */
  body?: unknown;
}

interface CompiledOperation {
  method: string;
  template: string;
  pattern: RegExp;
  operationId: string;
  pathParameters: string[];
  body?: { required: boolean; validate: ValidateFunction };
}

export class FirecrackerSpec {
  readonly version: string;
  private readonly operations: CompiledOperation[] = [];
  private readonly ajv: Ajv;

  constructor(file = SPEC_FILE) {
    const spec = YAML.parse(readFileSync(file, "utf8")) as SwaggerSpec;
    if (spec.swagger !== "2.0") throw new Error(`${file} is not a Swagger 2.0 document`);
    this.version = spec.info.version;
    // strict: an unknown keyword or format is an error, except what Swagger adds to JSON Schema.
    this.ajv = new Ajv({ allErrors: true, strict: true });
    this.ajv.addVocabulary(["example"]);
    for (const format of formatsIn(spec.definitions)) this.ajv.addFormat(format, formatDefinition(format));
    this.ajv.addSchema({ $id: "firecracker", definitions: closeObjects(spec.definitions) });
    for (const [template, methods] of Object.entries(spec.paths)) {
      for (const [method, operation] of Object.entries(methods)) {
        const parameters = operation.parameters ?? [];
        const body = parameters.find((p) => p.in === "body");
        const pathParameters = parameters.filter((p) => p.in === "path").map((p) => p.name);
        this.operations.push({
          method: method.toUpperCase(),
          template,
          // {param} matches one path segment.
          pattern: new RegExp(`^${template.replace(/[.*+?^$()|[\]\\]/g, "\\$&").replace(/\{[^/}]+\}/g, "([^/]+)")}$`),
          operationId: operation.operationId,
          pathParameters,
          body: body?.schema ? { required: body.required === true, validate: this.ajv.compile(refsInto("firecracker", body.schema)) } : undefined,
        });
      }
    }
  }

  /** The operation a request is (its operationId), or undefined when the spec has none. */
  operationOf(request: Pick<ApiRequest, "method" | "path">): string | undefined {
    return this.find(request)?.operation.operationId;
  }

  /** What is wrong with `request` by the spec: an empty list when it conforms. */
  problems(request: ApiRequest): string[] {
    const what = `${request.method} ${request.path}`;
    const found = this.find(request);
    if (!found) {
      const paths = this.operations.filter((o) => o.pattern.test(request.path.split("?")[0]!));
      return [paths.length > 0 ? `${what}: the spec has no ${request.method} on ${paths[0]!.template}` : `${what}: no such path in the spec`];
    }
    const { operation, params } = found;
    const problems: string[] = [];
    for (const [i, name] of operation.pathParameters.entries()) {
      if (!params[i]) problems.push(`${what}: path parameter ${name} is empty`);
    }
    if (!operation.body) {
      if (request.body !== undefined) problems.push(`${what}: ${operation.operationId} takes no body`);
      return problems;
    }
    if (request.body === undefined) {
      if (operation.body.required) problems.push(`${what}: ${operation.operationId} requires a body`);
      return problems;
    }
    if (!operation.body.validate(request.body)) problems.push(...describe(what, operation.body.validate.errors));
    // Firecracker refuses a body whose id differs from the path's (PUT /drives/{drive_id} with drive_id).
    for (const [i, name] of operation.pathParameters.entries()) {
      const inBody = typeof request.body === "object" && request.body !== null ? (request.body as Record<string, unknown>)[name] : undefined;
      if (inBody !== undefined && inBody !== params[i]) problems.push(`${what}: body ${name} ${JSON.stringify(inBody)} is not the path's ${JSON.stringify(params[i])}`);
    }
    return problems;
  }

  /** What is wrong with `value` as an instance of `definitions.<name>` (e.g. FullVmConfiguration, InstanceInfo). */
  definitionProblems(name: string, value: unknown): string[] {
    const validate = this.ajv.getSchema(`firecracker#/definitions/${name}`);
    if (!validate) return [`the spec has no definition ${name}`];
    return validate(value) ? [] : describe(name, validate.errors);
  }

  private find(request: Pick<ApiRequest, "method" | "path">): { operation: CompiledOperation; params: string[] } | undefined {
    const target = request.path.split("?")[0]!;
    for (const operation of this.operations) {
      if (operation.method !== request.method.toUpperCase()) continue;
      const match = operation.pattern.exec(target);
      if (match) return { operation, params: match.slice(1).map(decodeURIComponent) };
    }
    return undefined;
  }
}

/**
 * Every object schema that lists its properties and says nothing of others gets
 * `additionalProperties: false`. The spec leaves it unsaid, but Firecracker's server parses each
 * body into a Rust struct marked `#[serde(deny_unknown_fields)]` (vmm_config/*.rs), which answers
 * 400 to a field it does not know: a misspelt field must fail here as it fails there. Where the
 * spec says `additionalProperties` (MMDS contents), that stands.
 */
function closeObjects<T>(schema: T): T {
  if (Array.isArray(schema)) return schema.map(closeObjects) as T;
  if (!schema || typeof schema !== "object") return schema;
  const copy: Schema = {};
  for (const [key, value] of Object.entries(schema as Schema)) {
    if (key === "properties" || key === "definitions") {
      copy[key] = Object.fromEntries(Object.entries(value as Record<string, Schema>).map(([name, sub]) => [name, closeObjects(sub)]));
    } else if (key === "example" || key === "default" || key === "enum") {
      copy[key] = value; // data, not schemas
    } else {
      copy[key] = closeObjects(value);
    }
  }
  if (copy.properties && copy.additionalProperties === undefined) copy.additionalProperties = false;
  return copy as T;
}

function formatsIn(schema: unknown, found = new Set<string>()): Set<string> {
  if (Array.isArray(schema)) for (const item of schema) formatsIn(item, found);
  else if (schema && typeof schema === "object") {
    for (const [key, value] of Object.entries(schema)) {
      if (key === "format" && typeof value === "string") found.add(value);
      else formatsIn(value, found);
    }
  }
  return found;
}

/**
 * Swagger's integer formats as ranges; any other `format` in this spec is a regular expression
 * written where `pattern` was meant (MmdsConfig.ipv4_address), and is checked as one.
 */
function formatDefinition(format: string): { type: "number"; validate: (n: number) => boolean } | { type: "string"; validate: RegExp } {
  if (format === "int32") return { type: "number", validate: (n) => Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31 };
  if (format === "int64") return { type: "number", validate: (n) => Number.isSafeInteger(n) };
  return { type: "string", validate: new RegExp(`^${format}$`) };
}

/** `#/definitions/X` → `<id>#/definitions/X`, for an operation's body schema compiled on its own. */
function refsInto(id: string, schema: Schema): Schema {
  return JSON.parse(JSON.stringify(schema).replaceAll('"$ref":"#/', `"$ref":"${id}#/`)) as Schema;
}

function describe(what: string, errors: ErrorObject[] | null | undefined): string[] {
  return (errors ?? []).map((e) => `${what}: body${e.instancePath} ${e.message}${e.keyword === "additionalProperties" ? ` (${String(e.params.additionalProperty)})` : e.keyword === "enum" ? ` (${JSON.stringify(e.params.allowedValues)})` : ""}`);
}
