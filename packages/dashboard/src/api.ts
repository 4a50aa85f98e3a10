// The dashboard's client of the control plane's REST API: same origin, the session cookie
// (HttpOnly, set by POST /v1/auth/login) authenticates, and every mutation carries the session's
// CSRF token in X-CSRF-Token. A 401 anywhere means the session is gone: listeners show sign-in.

export interface Session {
  user: { id: string; email: string } | null;
  team: { id: string; name: string; isAdmin: boolean };
  csrfToken: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

let csrfToken = "";
const unauthorizedListeners = new Set<() => void>();

export function setCsrfToken(token: string): void {
  csrfToken = token;
}

/** Called on any 401 (the session expired or was revoked). */
export function onUnauthorized(listener: () => void): () => void {
  unauthorizedListeners.add(listener);
  return () => unauthorizedListeners.delete(listener);
}

export interface RequestOptions {
  query?: Record<string, string | number | undefined>;
  signal?: AbortSignal;
  /** Do not treat a 401 as the end of the session (sign-in's own requests). */
  quiet401?: boolean;
}

export function apiUrl(path: string, query?: RequestOptions["query"]): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query ?? {})) if (value !== undefined && value !== "") params.set(key, String(value));
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

/** One API call: JSON (or FormData) in, JSON out (undefined for 204); errors become ApiError. */
export async function api<T = unknown>(method: string, path: string, body?: unknown, options: RequestOptions = {}): Promise<T> {
  const headers: Record<string, string> = { accept: "application/json" };
  if (method !== "GET" && method !== "HEAD" && csrfToken) headers["x-csrf-token"] = csrfToken;
  let payload: BodyInit | undefined;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) {
    headers["content-type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let response: Response;
  try {
    response = await fetch(apiUrl(path, options.query), { method, headers, body: payload, credentials: "same-origin", signal: options.signal });
  } catch (err) {
    if ((err as Error).name === "AbortError") throw err;
    throw new ApiError(0, "network", "The control plane did not answer; check that it is running");
  }
  if (response.status === 401 && !options.quiet401) for (const listener of unauthorizedListeners) listener();
  if (!response.ok) {
    let code = String(response.status);
    let message = response.statusText || `HTTP ${response.status}`;
    try {
      const error = (await response.json()) as { code?: unknown; message?: unknown };
      if (error.code !== undefined) code = String(error.code);
      if (typeof error.message === "string") message = error.message;
    } catch {
      // not JSON: keep the status text
    }
    throw new ApiError(response.status, code, message);
  }
  if (response.status === 204) return undefined as T;
  const type = response.headers.get("content-type") ?? "";
  return (type.includes("json") ? await response.json() : await response.text()) as T;
}

/** Sandboxes this page just created, as the create answered: their page shows at once, without waiting for a first GET. */
export const justCreated = new Map<string, Sandbox>();

export const errorMessage = (err: unknown): string => (err instanceof Error ? err.message : String(err));

// The shapes the pages read (the control plane's OpenAPI schemas, trimmed to what is shown).
export interface Sandbox {
  id: string;
  template: string;
  state: string;
  vcpus: number;
  memoryMb: number;
  diskSizeMb: number;
  timeoutSec: number;
  metadata: Record<string, string>;
  hostId: string | null;
  envdVersion: string | null;
  createdAt: string;
  startedAt: string | null;
  endAt: string | null;
  endedAt: string | null;
}
export interface MetricPoint {
  timestamp: string;
  cpuPercent: number;
  memoryBytes: number;
  diskBytes: number;
}
export interface FileEntry {
  name: string;
  path: string;
  type: "file" | "dir" | "symlink" | "unknown";
  size: number;
  permissions: string;
  owner: string;
  modifiedAt: string | null;
}
export interface Template {
  id: string;
  name: string;
  kind: string;
  platform: boolean;
  hostId: string | null;
  sizeBytes: number;
  createdAt: string;
}
export interface Build {
  id: string;
  name: string;
  baseTemplate: string;
  steps: string[];
  status: "building" | "ready" | "failed";
  error: string | null;
  startedAt: string;
  finishedAt: string | null;
}
export interface ApiKey {
  id: string;
  name: string;
  prefix: string;
  createdAt: string;
  lastUsedAt: string | null;
  revokedAt: string | null;
}
export type TeamRole = "owner" | "admin" | "member";
export interface Member {
  userId: string;
  email: string;
  role: TeamRole;
  createdAt: string;
}
export interface UsageDay {
  day: string;
  sandboxSeconds: number;
  vcpuSeconds: number;
  memoryGibSeconds: number;
  diskGibSeconds: number;
}
export interface AuditEntry {
  id: number;
  actorType: string;
  actorId: string | null;
  action: string;
  resourceType: string;
  resourceId: string | null;
  sourceIp: string | null;
  details: Record<string, unknown>;
  createdAt: string;
}
export interface Host {
  id: string;
  status: string;
  address: string | null;
  capacity: { cpu: number; memoryMb: number; diskMb: number; slots: number };
  lastHeartbeatAt: string | null;
  missedHeartbeats: number;
  live: {
    agentVersion: string;
    memoryAvailableMb: number;
    diskAvailableMb: number;
    slotsUsed: number;
    sandboxes: { running: number; paused: number };
  } | null;
}
