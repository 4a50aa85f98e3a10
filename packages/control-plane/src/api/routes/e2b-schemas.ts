// The e2b SDK's REST shapes (its OpenAPI types: `npm pack e2b`, dist/index.d.ts), as zod schemas,
// and how a Wrenn sandbox reads in them. Unknown request fields are dropped, not refused: newer
// SDKs add fields, and an old server must not break them.
import { z } from "zod";
import type { Sandbox, SandboxStatus } from "../../db/schema.js";
import type { MetricPoint } from "../../db/metrics.js";
import { WrennError } from "../../errors.js";
import { FINAL_STATUSES } from "../../sandboxes/transitions.js";

/** E2B's error body: `code` is the HTTP status as a number (the SDK compares it with 404, 409). */
export const E2bError = z.object({ code: z.int(), message: z.string() }).meta({ id: "E2bError" });

/** Every status the error handler can answer with (errors.ts's table), in E2B's shape. */
export const e2bErrorResponses = {
  400: E2bError,
  401: E2bError,
  403: E2bError,
  404: E2bError,
  409: E2bError,
  413: E2bError,
  429: E2bError,
  500: E2bError,
  503: E2bError,
  507: E2bError,
} as const;

/** E2B's SDKs send any id; one Wrenn never made is simply not found. */
export const E2bSandboxParams = z.strictObject({ sandboxID: z.string().min(1).max(128) });

export const E2B_STATES = ["running", "paused"] as const;
export type E2bState = (typeof E2B_STATES)[number];

/** The Wrenn statuses each E2B state stands for in list filters. */
export const WRENN_STATUSES_BY_E2B_STATE: Record<E2bState, SandboxStatus[]> = {
  running: ["running", "unknown"],
  paused: ["paused"],
};

/** `clientID` is deprecated in E2B and meaningless here, but the Python SDK requires it. */
export const E2B_CLIENT_ID = "wrenn";
/** The lowest envd version the SDK accepts, for a sandbox whose envd never reported one. */
const ENVD_VERSION_FLOOR = "0.1.0";
/** `endAt` of a sandbox with no timeout: the SDK parses it as a date, so it must be one. */
const NEVER = "9999-12-31T23:59:59.000Z";

const Seconds = z.int().min(0).max(30 * 86_400);
const StringMap = (what: string) =>
  z.record(z.string().min(1).max(256), z.string().max(32_768)).refine((map) => Object.keys(map).length <= 256, `at most 256 ${what}`);
const Destinations = z.array(z.string().min(1).max(256)).max(256);

export const E2bNewSandbox = z.object({
  templateID: z.string().min(1).max(128),
  timeout: Seconds.optional().meta({ description: "Seconds; in Wrenn, of inactivity before the sandbox is killed (or paused, with autoPause)" }),
  metadata: StringMap("metadata entries").nullish(),
  envVars: StringMap("environment variables").nullish(),
  allow_internet_access: z.boolean().nullish(),
  network: z
    .object({
      allowOut: Destinations.optional(),
      denyOut: Destinations.optional(),
      rules: z.record(z.string(), z.unknown()).optional(),
      egressProxy: z.unknown().optional(),
      allowPublicTraffic: z.boolean().optional().meta({ description: "Only false (the default): Wrenn never serves a sandbox's ports without credentials" }),
    })
    .nullish(),
  autoPause: z.boolean().nullish().meta({ description: "Pause the sandbox when its timeout runs out instead of killing it (E2B's default)" }),
  volumeMounts: z.array(z.object({ name: z.string(), path: z.string() })).nullish(),
});
export type E2bNewSandbox = z.infer<typeof E2bNewSandbox>;

/** Create and connect answer with this. */
export const E2bSandbox = z
  .object({
    sandboxID: z.string(),
    templateID: z.string(),
    alias: z.string().optional(),
    clientID: z.string(),
    envdVersion: z.string(),
    envdAccessToken: z.string().optional(),
    domain: z.string().nullable(),
    trafficAccessToken: z.string().nullable().meta({ description: "Send it as e2b-traffic-access-token to reach the sandbox's own ports (not envd's)" }),
  })
  .meta({ id: "E2bSandbox" });

export const E2bListedSandbox = z
  .object({
    sandboxID: z.string(),
    templateID: z.string(),
    alias: z.string().optional(),
    clientID: z.string(),
    state: z.enum(E2B_STATES),
    cpuCount: z.int(),
    memoryMB: z.int(),
    diskSizeMB: z.int(),
    envdVersion: z.string(),
    metadata: z.record(z.string(), z.string()),
    startedAt: z.iso.datetime(),
    endAt: z.iso.datetime().meta({ description: "When the inactivity timeout, counted from the last start or resume, runs out" }),
  })
  .meta({ id: "E2bListedSandbox" });

export const E2bSandboxDetail = E2bListedSandbox.extend({
  domain: z.string().nullable(),
  allowInternetAccess: z.boolean().nullable(),
  network: z.object({ allowOut: z.array(z.string()), denyOut: z.array(z.string()), allowPublicTraffic: z.boolean() }),
  lifecycle: z.object({ onTimeout: z.enum(["kill", "pause"]), autoResume: z.boolean() }),
}).meta({ id: "E2bSandboxDetail" });

export const E2bSandboxMetric = z
  .object({
    timestamp: z.iso.datetime(),
    timestampUnix: z.int(),
    cpuCount: z.int(),
    cpuUsedPct: z.number().meta({ description: "Percent of all the sandbox's CPUs" }),
    memUsed: z.number(),
    memTotal: z.number(),
    memCache: z.number(),
    diskUsed: z.number(),
    diskTotal: z.number(),
  })
  .meta({ id: "E2bSandboxMetric" });

/** Stopped and failed sandboxes are gone, as killed ones are in E2B. */
export function isGone(sandbox: Sandbox): boolean {
  return FINAL_STATUSES.includes(sandbox.status);
}

function e2bState(status: SandboxStatus): E2bState {
  return status === "paused" ? "paused" : "running";
}

/** Each (re)start restarts the clock; Wrenn's timeout counts inactivity, so this is the earliest it can end. */
function endAt(sandbox: Sandbox, startedAt: Date): string {
  if (sandbox.timeoutSec === 0) return NEVER;
  const since = sandbox.statusChangedAt > startedAt ? sandbox.statusChangedAt : startedAt;
  return new Date(since.getTime() + sandbox.timeoutSec * 1000).toISOString();
}

export function toE2bSandbox(sandbox: Sandbox, domain: string | null): z.infer<typeof E2bSandbox> {
  return {
    sandboxID: sandbox.id,
    templateID: sandbox.template,
    alias: sandbox.template,
    clientID: E2B_CLIENT_ID,
    envdVersion: sandbox.envdVersion || ENVD_VERSION_FLOOR,
    envdAccessToken: sandbox.envdAccessToken ?? undefined,
    domain,
    trafficAccessToken: sandbox.trafficAccessToken,
  };
}

export function toE2bListedSandbox(sandbox: Sandbox): z.infer<typeof E2bListedSandbox> {
  const startedAt = sandbox.startedAt ?? sandbox.createdAt;
  return {
    sandboxID: sandbox.id,
    templateID: sandbox.template,
    alias: sandbox.template,
    clientID: E2B_CLIENT_ID,
    state: e2bState(sandbox.status),
    cpuCount: sandbox.vcpus,
    memoryMB: sandbox.memoryMb,
    diskSizeMB: sandbox.diskSizeMb,
    envdVersion: sandbox.envdVersion || ENVD_VERSION_FLOOR,
    metadata: sandbox.metadata,
    startedAt: startedAt.toISOString(),
    endAt: endAt(sandbox, startedAt),
  };
}

export function toE2bSandboxDetail(sandbox: Sandbox, domain: string | null): z.infer<typeof E2bSandboxDetail> {
  return {
    ...toE2bListedSandbox(sandbox),
    domain,
    allowInternetAccess: null,
    // A sandbox's ports always want credentials (an API key, or its envd or traffic token).
    network: { allowOut: sandbox.allowOut, denyOut: sandbox.denyOut, allowPublicTraffic: false },
    // What its host does when the timeout runs out (autoPause at create); resuming is explicit (connect).
    lifecycle: { onTimeout: sandbox.onTimeout, autoResume: false },
  };
}

export function toE2bMetric(point: MetricPoint, sandbox: Sandbox): z.infer<typeof E2bSandboxMetric> {
  return {
    timestamp: point.ts.toISOString(),
    timestampUnix: Math.floor(point.ts.getTime() / 1000),
    cpuCount: sandbox.vcpus,
    // Wrenn measures percent of one CPU (200 = two busy CPUs); E2B, percent of all of them.
    cpuUsedPct: point.cpuPercent / Math.max(1, sandbox.vcpus),
    memUsed: point.memoryBytes,
    memTotal: sandbox.memoryMb * 1024 * 1024,
    memCache: 0,
    diskUsed: point.diskBytes,
    diskTotal: sandbox.diskSizeMb * 1024 * 1024,
  };
}

/**
 * The `metadata` query: `k=v&…` with keys and values url-encoded once more inside (the SDK encodes
 * each, then the pairs as a query string, which the URL encodes again).
 */
export function parseE2bMetadata(metadata: string | undefined): Record<string, string> | undefined {
  if (metadata === undefined || metadata === "") return undefined;
  const result: Record<string, string> = {};
  for (const [key, value] of new URLSearchParams(metadata)) result[safeDecode(key)] = safeDecode(value);
  return result;
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** `state=running,paused` (the SDK joins arrays with commas) to Wrenn's statuses; default both. */
export function parseE2bStates(state: string | string[] | undefined): SandboxStatus[] {
  const names = (Array.isArray(state) ? state : [state ?? ""]).flatMap((s) => s.split(",")).map((s) => s.trim()).filter(Boolean);
  const states = names.length === 0 ? [...E2B_STATES] : names;
  return states.flatMap((name) => {
    if (!(E2B_STATES as readonly string[]).includes(name)) throw new WrennError("invalid_argument", `querystring.state: unknown state "${name}"; use running or paused`);
    return WRENN_STATUSES_BY_E2B_STATE[name as E2bState];
  });
}
