// Connect clients for host agents (hostagent.v1.HostAgentService over h2c with the host's token),
// one cached per host, and the one place where an agent's Connect codes become WrennError codes.
import type { DescMethodUnary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type CallOptions, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { HostAgentService } from "@wrenn/proto/hostagent";
import { WrennError, type ErrorCode } from "../errors.js";
import { unaryCall } from "./unary-call.js";

export type AgentClient = Client<typeof HostAgentService>;
export type { CallOptions };

/** Default deadline of an agent call; long calls (create, snapshot, flatten) pass their own. */
export const AGENT_CALL_TIMEOUT_MS = 30_000;

/** Where an agent listens and the token it wants. */
export interface AgentEndpoint {
  address: string;
  token: string;
}

/** `host:port` (what hosts.address holds) or a full http:// URL. */
export function agentBaseUrl(address: string): string {
  return /^https?:\/\//.test(address) ? address.replace(/\/+$/, "") : `http://${address}`;
}

interface OpenClient {
  client: AgentClient;
  close(): void;
}

/** A client of one agent, with its own HTTP/2 connection; `close` drops the connection. */
export function openAgentClient(endpoint: AgentEndpoint, defaultTimeoutMs = AGENT_CALL_TIMEOUT_MS): OpenClient {
  const baseUrl = agentBaseUrl(endpoint.address);
  const bearer: Interceptor = (next) => (request) => {
    request.header.set("authorization", `Bearer ${endpoint.token}`);
    return next(request);
  };
  // Pings notice a dead agent on an open connection; an idle connection is dropped after a minute.
  const sessionManager = new Http2SessionManager(baseUrl, { pingIntervalMs: 10_000, pingTimeoutMs: 5_000, idleConnectionTimeoutMs: 60_000 });
  const transport = createConnectTransport({ baseUrl, httpVersion: "2", sessionManager, interceptors: [bearer], defaultTimeoutMs });
  const client: Record<string, unknown> = { ...createClient(HostAgentService, transport) };
  // Unary calls go straight on the same connection (unary-call.ts); streams stay Connect's.
  for (const method of HostAgentService.methods) {
    if (method.methodKind === "unary") client[method.localName] = unaryCall(sessionManager, method as DescMethodUnary, { authorization: `Bearer ${endpoint.token}` }, defaultTimeoutMs);
  }
  return { client: client as AgentClient, close: () => sessionManager.abort() };
}

/** One client per host, replaced when the host's address or token changes. */
export class AgentClientCache {
  private readonly open = new Map<string, AgentEndpoint & OpenClient>();

  get(hostId: string, endpoint: AgentEndpoint): AgentClient {
    const cached = this.open.get(hostId);
    if (cached && cached.address === endpoint.address && cached.token === endpoint.token) return cached.client;
    cached?.close();
    const opened = openAgentClient(endpoint);
    this.open.set(hostId, { ...endpoint, ...opened });
    return opened.client;
  }

  /** Drops the host's connection (host deleted, or its agent went away). */
  forget(hostId: string): void {
    this.open.get(hostId)?.close();
    this.open.delete(hostId);
  }

  close(): void {
    for (const hostId of [...this.open.keys()]) this.forget(hostId);
  }
}

const ERROR_CODES: Partial<Record<Code, ErrorCode>> = {
  [Code.NotFound]: "not_found",
  [Code.InvalidArgument]: "invalid_argument",
  [Code.OutOfRange]: "invalid_argument",
  [Code.ResourceExhausted]: "resource_exhausted",
  [Code.FailedPrecondition]: "failed_precondition",
  [Code.AlreadyExists]: "conflict",
  // What connect-node reports when the connection breaks mid-call (ECONNRESET); the agent never sends it.
  [Code.Aborted]: "unavailable",
  [Code.Unavailable]: "unavailable",
  [Code.DeadlineExceeded]: "unavailable",
  [Code.Canceled]: "unavailable",
  // The agent refused the control plane's credentials: for a caller, the host cannot serve.
  [Code.Unauthenticated]: "unavailable",
  [Code.PermissionDenied]: "unavailable",
};

/** Socket errors that say the agent cannot be reached, wherever they sit in an error's cause chain. */
const NETWORK_ERRORS = new Set(["ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "ENOTFOUND", "EAI_AGAIN"]);

function isNetworkError(err: unknown): boolean {
  for (let cause = err, depth = 0; typeof cause === "object" && cause !== null && depth < 5; depth++) {
    const code = (cause as { code?: unknown }).code;
    if (typeof code === "string" && (NETWORK_ERRORS.has(code) || code.startsWith("ERR_HTTP2_"))) return true;
    cause = (cause as { cause?: unknown }).cause;
  }
  return false;
}

/** The WrennError for an agent call's failure; `hostId` goes into messages that blame the host. */
export function agentError(err: unknown, hostId?: string): WrennError {
  if (err instanceof WrennError) return err;
  const connectError = ConnectError.from(err);
  const code = isNetworkError(err) ? "unavailable" : (ERROR_CODES[connectError.code] ?? "internal");
  const where = hostId ? `host ${hostId}` : "the host agent";
  const message =
    code === "unavailable" ? `${where} is unavailable: ${connectError.rawMessage}` : connectError.rawMessage || `${where} failed: ${Code[connectError.code]}`;
  return new WrennError(code, message, { cause: connectError });
}

/** Awaits an agent call, turning its failure into a WrennError. */
export async function callAgent<T>(call: Promise<T>, hostId?: string): Promise<T> {
  try {
    return await call;
  } catch (err) {
    throw agentError(err, hostId);
  }
}

/** Whether a failed call says the host (not the request) is the problem: another host may succeed. */
export function isHostFailure(err: unknown): boolean {
  return err instanceof WrennError && (err.code === "unavailable" || err.code === "resource_exhausted");
}
