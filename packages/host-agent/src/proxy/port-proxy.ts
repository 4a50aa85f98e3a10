// Forwards HTTP and WebSocket traffic for (sandbox, port) to http://<sandbox address>:<port>, so
// the control plane can expose any port a sandbox listens on, envd's included.
//
// Written on node:http rather than a proxy library: http-proxy is unmaintained since 2020,
// http-proxy-3's current major needs Node 22, and @fastify/http-proxy needs a Fastify server; what
// remains after routing, auth and E2B-shaped errors is two pipes and an upgrade handshake.
// Bodies stream both ways with backpressure (only a small body is read whole first, so that it can
// be replayed: @wrenn/http-relay's replay.ts), and a streaming response is forwarded chunk by chunk
// as it arrives.
// Connections to sandbox ports are kept alive per sandbox (@wrenn/http-relay's SandboxConnections): a fresh TCP connect
// into gVisor's netstack costs milliseconds on every call otherwise.
import { createHash, timingSafeEqual } from "node:crypto";
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import { pipeline } from "node:stream";
import type { Duplex } from "node:stream";
import { forwardable, HOP_BY_HOP_HEADERS, limitConnect, rawHead, readReplayableBody, type Refusal, refuseOnResponse, refuseOnSocket, SandboxConnections, watchReuse, writeRelayedHead } from "@wrenn/http-relay";
import { logger } from "../logging/logger.js";
import { InvalidRouteError, routeOf, type ProxyRoute } from "./route.js";

const log = logger.child({ component: "port-proxy" });

export const HOST_TOKEN_HEADER = "x-wrenn-host-token";

/** A sandbox port that does not answer a connect within this is reported as unreachable. */
const CONNECT_TIMEOUT_MS = 10_000;
/**
 * How long a client's idle connection stays open. The control plane's edge proxy drops its idle
 * connections after 30 s, well before this, so we never close one it is about to reuse.
 */
export const PORT_PROXY_KEEP_ALIVE_TIMEOUT_MS = 65_000;

export interface PortProxyOptions {
  host: string;
  /** 0 picks any free port. */
  port: number;
  /** The sandbox's address on this host, or undefined when there is no such sandbox here. */
  resolve: (sandboxId: string) => { address: string } | undefined;
  /** When set, every request must carry it in X-Wrenn-Host-Token (removed before forwarding). */
  token?: string;
  /** Called once per forwarded request or WebSocket, e.g. to keep the sandbox's TTL alive. */
  onRequest?: (sandboxId: string) => void;
}

export interface PortProxy {
  port: number;
  /** Closes the connections kept to a sandbox that went away; `cutActive` cuts exchanges in flight too. */
  dropSandbox(sandboxId: string, cutActive: boolean): void;
  /** Connections open to the sandbox's ports (idle or busy), for tests and diagnostics. */
  openConnections(sandboxId: string): number;
  close(): Promise<void>;
}

interface Target extends ProxyRoute {
  address: string;
}

// Beyond the hop-by-hop headers: the host token must never reach the sandbox.
const NOT_FORWARDED = new Set([...HOP_BY_HOP_HEADERS, HOST_TOKEN_HEADER]);

function tokenMatches(given: string | string[] | undefined, expected: string): boolean {
  if (typeof given !== "string") return false;
  // Hashing first gives equal lengths, so the comparison time says nothing about the token.
  const digest = (text: string) => createHash("sha256").update(text).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

/** What a failed connection to the sandbox port is reported as; E2B's SDK reads 502 as "not reachable". */
function unreachable(target: Target, err: NodeJS.ErrnoException): Refusal {
  const message =
    err.code === "ECONNREFUSED"
      ? "The sandbox is running but port is not open" // E2B's own wording, which its tests match
      : `cannot reach port ${target.port} of sandbox ${target.sandboxId}: ${err.message}`;
  return { status: 502, body: { code: 502, message, sandboxId: target.sandboxId, port: target.port } };
}

export async function startPortProxy(options: PortProxyOptions): Promise<PortProxy> {
  // Uploads of any size and long streams are the upstream's business to time out, not ours.
  const server = http.createServer({ requestTimeout: 0, keepAliveTimeout: PORT_PROXY_KEEP_ALIVE_TIMEOUT_MS });
  server.headersTimeout = PORT_PROXY_KEEP_ALIVE_TIMEOUT_MS + 1_000;
  const connections = new SandboxConnections();
  const upgraded = new Set<Duplex>();

  /** Checks the token, the route and the sandbox, in that order; a refusal or the target. */
  function admit(req: IncomingMessage): Target | Refusal {
    if (options.token !== undefined && !tokenMatches(req.headers[HOST_TOKEN_HEADER], options.token)) {
      return { status: 401, body: { code: 401, message: `missing or wrong ${HOST_TOKEN_HEADER}` } };
    }
    let route: ProxyRoute;
    try {
      route = routeOf(req.headers);
    } catch (err) {
      if (err instanceof InvalidRouteError) return { status: 400, body: { code: 400, message: err.message } };
      throw err;
    }
    try {
      const sandbox = options.resolve(route.sandboxId);
      if (!sandbox) return { status: 404, body: { code: 404, message: `sandbox ${route.sandboxId} not found` } };
      options.onRequest?.(route.sandboxId);
      return { ...route, address: sandbox.address };
    } catch (err) {
      // A failing callback is the agent's bug: answer 500 rather than crash on an event handler.
      log.error({ sandboxId: route.sandboxId, err }, "resolving a proxied sandbox failed");
      return { status: 500, body: { code: 500, message: `could not resolve sandbox ${route.sandboxId}` } };
    }
  }

  function requestUpstream(req: IncomingMessage, target: Target, upgrade: boolean, agent: http.Agent): http.ClientRequest {
    const upstream = http.request({
      host: target.address,
      port: target.port,
      method: req.method,
      path: req.url,
      headers: forwardable(req.headers, upgrade, NOT_FORWARDED),
      agent,
    });
    limitConnect(upstream, CONNECT_TIMEOUT_MS);
    return upstream;
  }

  /**
   * Sends the request to the sandbox: a replayable one (`body` read whole) on a kept-alive
   * connection, sent once more on a fresh one if that connection turns out dead; any other on a
   * fresh connection, streaming its body.
   */
  function forward(req: IncomingMessage, res: ServerResponse, target: Target, body: Buffer | undefined, pooled: boolean): void {
    const agent = pooled ? connections.agentFor(target.sandboxId, target.address, target.port) : connections.fresh;
    const upstream = requestUpstream(req, target, false, agent);
    const diedUnused = watchReuse(upstream);

    let responded = false;
    upstream.on("response", (upstreamRes) => {
      responded = true;
      const headers = forwardable(upstreamRes.headers, false, NOT_FORWARDED);
      writeRelayedHead(res, upstreamRes, headers);
      pipeline(upstreamRes, res, () => {});
    });
    upstream.on("error", (err: NodeJS.ErrnoException) => {
      if (responded) {
        res.destroy(err); // cut short mid-body: the client must see a broken response, not a short one
        return;
      }
      if (pooled && body !== undefined && diedUnused(err) && !res.destroyed) {
        log.debug({ sandboxId: target.sandboxId, port: target.port, err: err.message }, "a kept-alive connection was closed; sending again");
        return forward(req, res, target, body, false);
      }
      log.debug({ sandboxId: target.sandboxId, port: target.port, err }, "sandbox port unreachable");
      refuseOnResponse(req, res, unreachable(target, err));
    });
    // The client went away (mid-upload or mid-response): so must the request to the sandbox.
    const abandon = () => {
      if (!res.writableFinished) upstream.destroy();
    };
    res.once("close", abandon);
    upstream.once("close", () => res.off("close", abandon));
    if (body !== undefined) upstream.end(body.length > 0 ? body : undefined);
    // pipe (not pipeline): a failed upstream must not destroy the client's socket before the 502.
    else req.pipe(upstream);
  }

  server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    const admission = admit(req);
    if (!("address" in admission)) return refuseOnResponse(req, res, admission);
    const target = admission;
    readReplayableBody(req).then(
      (body) => forward(req, res, target, body, body !== undefined),
      () => res.destroy(), // the client went away mid-body
    );
  });

  server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on("error", () => socket.destroy());
    const admission = admit(req);
    if (!("address" in admission)) return refuseOnSocket(socket, admission);
    const target = admission;
    // An upgraded connection leaves its pool anyway: a fresh one.
    const upstream = requestUpstream(req, target, true, connections.fresh);
    const abandon = () => upstream.destroy();
    socket.once("close", abandon);

    upstream.on("upgrade", (upstreamRes, upstreamSocket: Duplex, upstreamHead: Buffer) => {
      socket.off("close", abandon);
      upgraded.add(socket);
      socket.once("close", () => upgraded.delete(socket));
      upstreamSocket.on("error", () => upstreamSocket.destroy());
      socket.write(rawHead(101, upstreamRes.statusMessage, upstreamRes.rawHeaders));
      if (upstreamHead.length > 0) socket.write(upstreamHead);
      if (head.length > 0) upstreamSocket.write(head);
      // Each direction ends (or breaks) the other, like the TCP connection it stands for.
      pipeline(upstreamSocket, socket, () => {});
      pipeline(socket, upstreamSocket, () => {});
    });
    // The sandbox declined the upgrade: pass its answer on and close.
    upstream.on("response", (upstreamRes) => {
      const headers = forwardable(upstreamRes.headers, false, NOT_FORWARDED);
      const raw = Object.entries(headers).flatMap(([name, value]) =>
        (Array.isArray(value) ? value : [String(value)]).flatMap((v) => [name, v]),
      );
      socket.write(rawHead(upstreamRes.statusCode ?? 502, upstreamRes.statusMessage, [...raw, "connection", "close"]));
      pipeline(upstreamRes, socket, () => {});
    });
    upstream.on("error", (err: NodeJS.ErrnoException) => {
      refuseOnSocket(socket, unreachable(target, err));
    });
    upstream.end();
  });

  server.on("clientError", (err: NodeJS.ErrnoException, socket: Duplex) => {
    // Malformed HTTP from a client: answer 400 if the socket still can, never crash the agent.
    if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n");
    else socket.destroy();
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("the port proxy is not listening on TCP");
  log.info({ host: options.host, port: address.port }, "port proxy listening");

  return {
    port: address.port,
    dropSandbox: (sandboxId, cutActive) => connections.drop(sandboxId, cutActive),
    openConnections: (sandboxId) => connections.openCount(sandboxId),
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      for (const socket of upgraded) socket.destroy();
      connections.destroy();
      await closed;
    },
  };
}
