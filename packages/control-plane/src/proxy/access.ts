// Who may reach a sandbox's ports through the edge proxy: the sandbox's own team, by one of its
// API keys (X-API-Key, checked as the API checks it and through the same cache), or anyone holding
// the sandbox's envd access token (X-Access-Token, what the e2b SDK sends), or, for envd's /files
// only, a URL signed with that token (the SDK's downloadUrl/uploadUrl), or, for the sandbox's own
// ports but never envd's, its traffic access token (E2B's e2b-traffic-access-token: it lets a web
// client reach a server in the sandbox without control of the sandbox). Everything else is
// refused before the sandbox's host is contacted; an unknown sandbox, another team's and a wrong
// token look the same (404), so the proxy never tells whether a sandbox id exists.
import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";
import type { AuthCache } from "../api/auth-cache.js";
import { resolveApiKey, type RequestAuth } from "../api/auth.js";
import type { Repositories } from "../db/repositories.js";
import { ENVD_PORT } from "../sandboxes/envd-files.js";
import { checkPortTicket, matchesPortCookie, PORT_COOKIE, PORT_TICKET_PARAM } from "./port-links.js";
import { cookieValue } from "../cookies.js";
import { isValidSandboxId, type EdgeRoute } from "./route.js";
import type { SandboxLocation, SandboxLocator } from "./sandbox-locator.js";

export const API_KEY_HEADER = "x-api-key";
export const ACCESS_TOKEN_HEADER = "x-access-token";
export const TRAFFIC_ACCESS_TOKEN_HEADER = "e2b-traffic-access-token";

/** An answer the proxy gives itself, in E2B's shape: `{ code, message }` with the HTTP status as code. */
export interface Refusal {
  status: number;
  body: { code: number; message: string; sandboxId?: string };
}

export interface Admitted {
  sandbox: SandboxLocation & { hostProxy: NonNullable<SandboxLocation["hostProxy"]> };
  /**
   * How the caller proved it may: an API key of the sandbox's team, the envd access token, a signed
   * /files URL, the traffic access token, a port link's cookie (port-links.ts), or a port link's
   * ticket (answered by the proxy itself with the cookie, never forwarded).
   */
  by: "api-key" | "access-token" | "signature" | "traffic-token" | "port-cookie" | "port-ticket";
}

const HOW_ENVD =
  "send X-API-Key with an API key of the sandbox's team, or X-Access-Token with the sandbox's envdAccessToken";
const HOW_PORT =
  "send X-API-Key with an API key of the sandbox's team, X-Access-Token with the sandbox's envdAccessToken, " +
  `or ${TRAFFIC_ACCESS_TOKEN_HEADER} with its trafficAccessToken`;

const refusal = (status: number, message: string, sandboxId?: string): Refusal => ({
  status,
  body: sandboxId === undefined ? { code: status, message } : { code: status, message, sandboxId },
});

export class EdgeAccess {
  constructor(private readonly options: { repos: Repositories; authCache: AuthCache; locator: SandboxLocator }) {}

  /** The sandbox and how the caller may reach it, or the refusal to answer. */
  async admit(request: { method?: string; url?: string; headers: IncomingHttpHeaders }, route: EdgeRoute): Promise<Admitted | Refusal> {
    const { headers } = request;
    const apiKey = single(headers[API_KEY_HEADER])?.trim();
    const accessToken = single(headers[ACCESS_TOKEN_HEADER]);
    const isEnvd = route.port === ENVD_PORT;
    // On envd's port the traffic token is no credential at all.
    const trafficToken = isEnvd ? undefined : single(headers[TRAFFIC_ACCESS_TOKEN_HEADER]);
    const how = isEnvd ? HOW_ENVD : HOW_PORT;
    if (!apiKey && !accessToken && !trafficToken) {
      const signed = isEnvd ? signedFileRequest(request) : undefined;
      if (signed) return this.admitSigned(route, signed);
      if (!isEnvd) {
        const ticket = portTicketOf(request.url);
        if (ticket !== undefined) return this.admitPortLink(route, { ticket });
        const cookie = cookieValue(single(headers.cookie), PORT_COOKIE);
        if (cookie !== undefined) return this.admitPortLink(route, { cookie });
      }
      const trafficOnEnvd = isEnvd && headers[TRAFFIC_ACCESS_TOKEN_HEADER] !== undefined;
      return refusal(401, `missing credentials: ${how}${trafficOnEnvd ? ` (${TRAFFIC_ACCESS_TOKEN_HEADER} opens the sandbox's own ports, never envd's)` : ""}`);
    }
    let teamId: string | undefined;
    if (apiKey) {
      teamId = (await this.teamOfKey(apiKey))?.teamId;
      if (!teamId) return refusal(401, `invalid or revoked API key (${apiKey.slice(0, 8)}…): ${how}`);
    }
    const notFound = refusal(404, `sandbox ${route.sandboxId} not found`, route.sandboxId);
    if (!isValidSandboxId(route.sandboxId)) return notFound;
    const sandbox = await this.options.locator.find(route.sandboxId);
    if (!sandbox) return notFound;
    // A valid key decides alone; the access token then travels on to envd, which checks it again.
    if (teamId !== undefined) return sandbox.teamId === teamId ? this.reachable(sandbox, "api-key") : notFound;
    if (accessToken && tokenMatches(accessToken, sandbox.envdAccessToken)) return this.reachable(sandbox, "access-token");
    if (trafficToken && tokenMatches(trafficToken, sandbox.trafficAccessToken)) return this.reachable(sandbox, "traffic-token");
    return notFound;
  }

  private reachable(sandbox: SandboxLocation, by: Admitted["by"]): Admitted | Refusal {
    if (!sandbox.hostProxy) {
      // The e2b SDK's isRunning() reads 502 as "not running".
      const why = sandbox.status === "running" ? `its host cannot be reached: ${sandbox.unreachable}` : `it is ${sandbox.status}`;
      return refusal(502, `sandbox ${sandbox.sandboxId} is not running: ${why}`, sandbox.sandboxId);
    }
    return { sandbox: sandbox as Admitted["sandbox"], by };
  }

  /**
   * A pre-signed envd /files URL (the e2b SDK's downloadUrl/uploadUrl) carries no header: its
   * signature, made with the sandbox's access token, is checked here as envd checks it, so only
   * valid ones reach the sandbox (envd checks again).
   */
  private async admitSigned(route: EdgeRoute, signed: SignedFileRequest): Promise<Admitted | Refusal> {
    const notFound = refusal(404, `sandbox ${route.sandboxId} not found`, route.sandboxId);
    if (!isValidSandboxId(route.sandboxId)) return notFound;
    const sandbox = await this.options.locator.find(route.sandboxId);
    if (!sandbox?.envdAccessToken) return notFound;
    const problem = fileSignatureProblem(signed, sandbox.envdAccessToken);
    if (problem === "expired") return refusal(401, "the signed URL has expired; ask for a new one");
    if (problem) return notFound;
    return this.reachable(sandbox, "signature");
  }

  /** A port link's ticket or cookie (port-links.ts), checked against the sandbox's traffic token. */
  private async admitPortLink(route: EdgeRoute, given: { ticket: string } | { cookie: string }): Promise<Admitted | Refusal> {
    const notFound = refusal(404, `sandbox ${route.sandboxId} not found`, route.sandboxId);
    if (!isValidSandboxId(route.sandboxId)) return notFound;
    const sandbox = await this.options.locator.find(route.sandboxId);
    const token = sandbox?.trafficAccessToken;
    if (!sandbox || !token) return notFound;
    if ("cookie" in given) {
      return matchesPortCookie(given.cookie, token, sandbox.sandboxId, route.port) ? this.reachable(sandbox, "port-cookie") : notFound;
    }
    const verdict = checkPortTicket(given.ticket, token, sandbox.sandboxId, route.port);
    if (verdict === "expired") return refusal(401, "this link to the sandbox's port has expired; open it again from the dashboard");
    return verdict === "ok" ? this.reachable(sandbox, "port-ticket") : notFound;
  }

  /** The key's team, as the API's authenticate() resolves it (same cache, same checks). */
  private teamOfKey(secret: string): Promise<RequestAuth | undefined> {
    return resolveApiKey(this.options.repos, this.options.authCache, secret);
  }
}

export function isRefusal(value: Admitted | Refusal): value is Refusal {
  return "status" in value;
}

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** Constant time: both sides are hashed first, so the comparison says nothing about the token. */
function tokenMatches(given: string, expected: string | null): boolean {
  if (expected === null || expected === "") return false;
  const digest = (text: string) => createHash("sha256").update(text).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

interface SignedFileRequest {
  path: string;
  operation: "read" | "write";
  username: string;
  signature: string;
  expiration: string | null;
}

/** The signature parameters of `GET/POST /files?…&signature=`, or undefined for any other request. */
function signedFileRequest(request: { method?: string; url?: string }): SignedFileRequest | undefined {
  const { method, url } = request;
  if (!url?.startsWith("/files?") || (method !== "GET" && method !== "POST")) return undefined;
  const query = new URLSearchParams(url.slice("/files?".length));
  const signature = query.get("signature");
  if (!signature) return undefined;
  return {
    path: query.get("path") ?? "",
    operation: method === "GET" ? "read" : "write",
    username: query.get("username") ?? "",
    signature,
    expiration: query.get("signature_expiration"),
  };
}

/**
 * envd's check (packages/envd/src/server/auth.ts): "v1_" + base64(sha256("path:operation:user:token[:expiration]"))
 * without padding, unexpired. "expired", "invalid" or undefined when it holds.
 */
function fileSignatureProblem(signed: SignedFileRequest, token: string): "expired" | "invalid" | undefined {
  let raw = `${signed.path}:${signed.operation}:${signed.username}:${token}`;
  let expiration: number | undefined;
  if (signed.expiration !== null && signed.expiration !== "") {
    expiration = Number(signed.expiration);
    if (!Number.isInteger(expiration)) return "invalid";
    raw += `:${expiration}`;
  }
  const expected = "v1_" + createHash("sha256").update(raw).digest("base64").replace(/=+$/, "");
  // The signature first: only its holder learns that it expired.
  if (!tokenMatches(signed.signature, expected)) return "invalid";
  return expiration !== undefined && expiration < Date.now() / 1000 ? "expired" : undefined;
}

/** The port link ticket in a request's query, or undefined. */
function portTicketOf(url: string | undefined): string | undefined {
  const query = url?.indexOf("?") ?? -1;
  if (query < 0) return undefined;
  return new URLSearchParams(url!.slice(query + 1)).get(PORT_TICKET_PARAM) ?? undefined;
}
