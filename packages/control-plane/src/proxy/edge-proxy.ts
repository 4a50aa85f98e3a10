// The edge proxy: requests to the control plane's own port that name a sandbox port (route.ts)
// go to the port proxy of the sandbox's host, everything else to the API. Dispatching in the
// server's request and upgrade listeners, before Fastify routes anything, keeps a proxied call
// free of the API's hooks (an E2B_SANDBOX_URL equal to the API URL costs no extra hop).
//
// Written on node:http for the same reasons as the host agent's port proxy: bodies stream both
// ways with backpressure, a streamed response (Connect server stream, server-sent events) is
// forwarded chunk by chunk, and a WebSocket is two pipes after the handshake. Connections to hosts
// are kept alive and reused by requests whose body is small enough to read whole first (64 KiB):
// such a request is replayed once on a fresh connection if the reused one turns out closed by the
// host; larger or streamed bodies go on a fresh connection and are never buffered.
//
// Direct to envd: when the sandbox's host is this machine (sandbox-locator.ts), a request for envd's
// port skips the host's port proxy and goes to the sandbox's address, on connections pooled per
// sandbox. Safe against a stale location: every envd holds a token of its own from its first
// instant (the host boots it with one, then /init sets the sandbox's), every request sent direct
// carries the sandbox's token or a signature made with it, so an envd that is not the sandbox's
// (its address since given to another) answers 401, and such a 401, a refused or failed connection
// sends the request through the host instead when its body can be sent again. The host learns of
// the activity by a PingSandbox at most once a second per sandbox (its port proxy counts each
// request). WebSockets and the sandbox's other ports always go through the host, which checks which
// sandbox it reaches by id.
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { pipeline, type Duplex } from "node:stream";
import type { FastifyServerFactory } from "fastify";
import type { Logger } from "pino";
import { forwardable, HOP_BY_HOP_HEADERS, limitConnect, rawHead, readReplayableBody, refuseOnResponse, refuseOnSocket, SandboxConnections, watchReuse, writeRelayedHead } from "@wrenn/http-relay";
import { LRUCache } from "lru-cache";
import type { AuthCache } from "../api/auth-cache.js";
import type { Repositories } from "../db/repositories.js";
import type { HostRegistry } from "../hosts/registry.js";
import type { SandboxStatus } from "../db/schema.js";
import { callAgent } from "../hosts/agent-client.js";
import type { SandboxService } from "../sandboxes/service.js";
import { ENVD_PORT } from "../sandboxes/envd-files.js";
import { ACCESS_TOKEN_HEADER, API_KEY_HEADER, TRAFFIC_ACCESS_TOKEN_HEADER, EdgeAccess, isRefusal, type Admitted, type Refusal } from "./access.js";
import { PORT_COOKIE, PORT_COOKIE_MAX_AGE_SEC, PORT_TICKET_PARAM, portCookieValue } from "./port-links.js";
import { withoutCookie } from "../cookies.js";
import { edgeRouteOf, SANDBOX_ID_HEADER, SANDBOX_PORT_HEADER, type EdgeRoute } from "./route.js";
import { SandboxLocator } from "./sandbox-locator.js";

// What the host agent's port proxy reads (packages/host-agent/src/proxy).
const HOST_TOKEN_HEADER = "x-wrenn-host-token";
const HOST_SANDBOX_ID_HEADER = "x-wrenn-sandbox-id";
const HOST_SANDBOX_PORT_HEADER = "x-wrenn-sandbox-port";

/** A host whose port proxy does not accept a connection within this is reported unreachable. */
const CONNECT_TIMEOUT_MS = 5_000;
/** The host proxy's "no such sandbox here" is a small JSON 404; larger 404s are the sandbox's own. */
const HOST_NOT_FOUND_MAX_BYTES = 512;
/**
 * Idle connections to a host's port proxy are closed after this: well before the proxy's own
 * keep-alive timeout (65 s, PORT_PROXY_KEEP_ALIVE_TIMEOUT_MS in the host agent), so the proxy never
 * closes one we are about to reuse.
 */
const HOST_FREE_TIMEOUT_MS = 30_000;
/** envd at a sandbox's own address that does not accept a connection within this is asked through the host. */
const DIRECT_CONNECT_TIMEOUT_MS = 2_000;
/**
 * How often at most a sandbox's host hears of its direct traffic (PingSandbox: its inactivity
 * timer): a twentieth of the sandbox's timeout, between 1 and 15 s. Traffic within an interval is
 * told at its end, so the host's timer always runs from after the last request: a busy sandbox is
 * never paused early, and an idle one at most an interval late.
 */
export function activityIntervalMs(timeoutSec: number | undefined): number {
  if (!timeoutSec) return 15_000; // no timeout (or not known): nothing to keep from expiring
  return Math.min(15_000, Math.max(1_000, timeoutSec * 50));
}

export interface EdgeProxyOptions {
  /** Sandbox hosts are `<port>-<sandboxId>.<domain>`. */
  domain: string;
  repos: Repositories;
  /** The API's cache of resolved keys, shared so a key costs one lookup for both. */
  authCache: AuthCache;
  registry: HostRegistry;
  /** See SandboxLocator's `settled`. */
  settled?: (sandboxId: string) => Promise<void> | undefined;
  logger: Logger;
  /** How long a running sandbox's location is trusted without a read. */
  locationTtlMs?: number;
  /** Reach envd directly when the sandbox's host is this machine (default true). */
  direct?: boolean;
}


// Beyond the hop-by-hop headers: the routing headers are set afresh for the host's proxy.
const NOT_FORWARDED = new Set([...HOP_BY_HOP_HEADERS, HOST_TOKEN_HEADER, HOST_SANDBOX_ID_HEADER, HOST_SANDBOX_PORT_HEADER]);

const badRoute = (message: string): Refusal => ({ status: 400, body: { code: 400, message } });

function notRunning(sandboxId: string, why: string): Refusal {
  return { status: 502, body: { code: 502, message: `sandbox ${sandboxId} is not running: ${why}`, sandboxId } };
}

export class EdgeProxy {
  private readonly agent = new http.Agent({ keepAlive: true, scheduling: "lifo", timeout: HOST_FREE_TIMEOUT_MS, noDelay: true });
  /** One connection per request: for bodies that cannot be sent twice, replays and WebSockets. */
  private readonly fresh = new http.Agent({ keepAlive: false, noDelay: true });
  private readonly locator: SandboxLocator;
  private readonly access: EdgeAccess;
  private readonly log: Logger;
  /** Client sockets of exchanges in flight and of piped WebSockets: cut when the server closes. */
  private readonly active = new Set<Duplex>();
  /** Kept-alive connections to envd at sandboxes' own addresses, per sandbox. */
  private readonly direct = new SandboxConnections();
  /** When each sandbox's host was last told of its direct traffic, and the report of traffic since, if due. */
  private readonly activity = new LRUCache<string, { pingedAt: number; due?: NodeJS.Timeout }>({ max: 50_000, dispose: (state) => clearTimeout(state.due) });
  /** Upgrades not for a sandbox, for the API: a server that never listens, only emits "upgrade". */
  readonly apiUpgrades = new http.Server();

  constructor(private readonly options: EdgeProxyOptions) {
    this.log = options.logger.child({ component: "edge-proxy" });
    this.locator = new SandboxLocator({ sandboxes: options.repos.sandboxes, settled: options.settled, registry: options.registry, ttlMs: options.locationTtlMs, direct: options.direct });
    this.access = new EdgeAccess({ repos: options.repos, authCache: options.authCache, locator: this.locator });
  }

  /** For Fastify's `serverFactory`: an HTTP server that hands the API what is not for a sandbox. */
  readonly serverFactory: FastifyServerFactory = (api, fastifyOptions) => {
    const server = http.createServer((req, res) => {
      const route = edgeRouteOf(req.headers, this.options.domain);
      if (route === undefined) return api(req, res);
      if ("invalid" in route) return refuseOnResponse(req, res, badRoute(route.invalid));
      this.proxyRequest(req, res, route).catch((err: unknown) => {
        this.log.error({ err, sandboxId: route.sandboxId }, "proxying a request failed");
        refuseOnResponse(req, res, { status: 500, body: { code: 500, message: "the edge proxy failed; see the control plane's log" } });
      });
    });
    // What Fastify sets on a server it makes itself.
    const number = (value: unknown) => (typeof value === "number" ? value : undefined);
    server.keepAliveTimeout = number(fastifyOptions.keepAliveTimeout) ?? server.keepAliveTimeout;
    server.requestTimeout = number(fastifyOptions.requestTimeout) ?? 0;
    server.setTimeout(number(fastifyOptions.connectionTimeout) ?? 0);
    server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      socket.on("error", () => socket.destroy());
      const route = edgeRouteOf(req.headers, this.options.domain);
      if (route === undefined) {
        // The API's WebSocket routes (@fastify/websocket) listen on apiUpgrades, never hearing a sandbox's.
        if (this.apiUpgrades.listenerCount("upgrade") === 0) refuseOnSocket(socket, { status: 404, body: { code: 404, message: `no WebSocket at ${req.url ?? "/"}` } });
        else this.apiUpgrades.emit("upgrade", req, socket, head);
        return;
      }
      if ("invalid" in route) return refuseOnSocket(socket, badRoute(route.invalid));
      this.proxyUpgrade(req, socket, head, route).catch((err: unknown) => {
        this.log.error({ err, sandboxId: route.sandboxId }, "proxying a WebSocket failed");
        refuseOnSocket(socket, { status: 500, body: { code: 500, message: "the edge proxy failed; see the control plane's log" } });
      });
    });
    return server;
  };

  /**
   * The next request for the sandbox looks it up afresh (its status changed: paused, destroyed, …),
   * and its direct connections close; an ended sandbox's exchanges in flight are cut too (its
   * network is gone: they could only hang).
   */
  forget(sandboxId: string, status?: SandboxStatus): void {
    this.locator.forget(sandboxId);
    this.activity.delete(sandboxId); // its report due, if any, is dropped (dispose)
    this.direct.drop(sandboxId, status === "stopped" || status === "error");
  }

  /** Cuts proxied exchanges still open (long streams, WebSockets) so the server can close. */
  close(): void {
    for (const socket of this.active) socket.destroy();
    this.active.clear();
    this.agent.destroy();
    this.fresh.destroy();
    this.direct.destroy();
    this.activity.clear();
  }

  private async proxyRequest(req: IncomingMessage, res: ServerResponse, route: EdgeRoute): Promise<void> {
    const admission = await this.access.admit(req, route);
    if (isRefusal(admission)) return refuseOnResponse(req, res, admission);
    if (admission.by === "port-ticket") return this.openPortLink(req, res, route, admission);
    const socket = req.socket;
    this.active.add(socket);
    res.once("close", () => this.active.delete(socket));
    let body: Buffer | undefined;
    try {
      body = await readReplayableBody(req);
    } catch {
      res.destroy(); // the client went away mid-body
      return;
    }
    const direct = route.port === ENVD_PORT && admission.sandbox.envdDirect !== undefined;
    this.send(req, res, route, admission, body, body !== undefined, direct);
  }

  /**
   * A replayable request (`body` read whole) goes on a kept-alive connection and is sent once more
   * on a fresh one if that connection turns out closed; any other on a fresh one, streaming its body.
   */
  private send(req: IncomingMessage, res: ServerResponse, route: EdgeRoute, admitted: Admitted, body: Buffer | undefined, pooled: boolean, direct = false): void {
    const upstream = direct ? this.requestDirect(req, route, admitted, pooled) : this.request(req, route, admitted, false, pooled ? this.agent : this.fresh);
    if (direct) this.noteActivity(admitted);
    const diedUnused = watchReuse(upstream);
    let responded = false;
    /** Sent direct and not to be answered from there: through the host, if the body can go again. */
    const throughHost = (why: string): boolean => {
      this.forget(route.sandboxId);
      if (body === undefined || res.destroyed) return false;
      this.log.debug({ sandboxId: route.sandboxId, why }, "envd at the sandbox's address did not answer for it; asking its host");
      this.send(req, res, route, admitted, body, true, false);
      return true;
    };
    upstream.on("response", (upstreamRes) => {
      // Not this sandbox's envd (its address was since given to another sandbox): its host knows.
      if (direct && upstreamRes.statusCode === 401 && body !== undefined && !res.destroyed) {
        upstreamRes.resume();
        throughHost("401 from envd");
        return;
      }
      responded = true;
      const status = upstreamRes.statusCode ?? 502;
      if (status === 404 && this.mayBeHostNotFound(upstreamRes)) return void this.answerNotFound(res, upstreamRes, route);
      // The host's proxy could not reach the port (or refused its token): look the sandbox up again next time.
      if (status === 502 || status === 401) this.locator.forget(route.sandboxId);
      writeRelayedHead(res, upstreamRes, forwardable(upstreamRes.headers, false, NOT_FORWARDED));
      // pipe, not pipeline: measured, pipeline's bookkeeping slowed a 256 MiB download from 1.07-1.14x
      // direct to 1.27x in the same relay (docs/benchmarks.md, Edge proxy). What pipeline did besides:
      // an upstream answer broken mid-body must break the client's too, not end it short.
      upstreamRes.once("error", (err) => res.destroy(err));
      upstreamRes.once("aborted", () => res.destroy());
      upstreamRes.pipe(res);
    });
    upstream.on("error", (err: NodeJS.ErrnoException) => {
      if (responded) {
        res.destroy(err); // cut short mid-body: the client must see a broken response, not a short one
        return;
      }
      // A kept-alive connection the host closed just as it was reused: nothing reached it, send again.
      if (pooled && body !== undefined && diedUnused(err) && !res.destroyed) {
        return this.send(req, res, route, admitted, body, false, direct);
      }
      if (direct && throughHost(err.code ?? err.message)) return;
      this.locator.forget(route.sandboxId);
      this.log.warn({ sandboxId: route.sandboxId, err: err.message }, "the sandbox's host could not be reached");
      refuseOnResponse(req, res, notRunning(route.sandboxId, `its host's proxy cannot be reached (${err.code ?? err.message})`));
    });
    // The client went away (mid-upload or mid-response): so must the request to the host.
    const abandon = () => {
      if (!res.writableFinished) upstream.destroy();
    };
    res.once("close", abandon);
    upstream.once("close", () => res.off("close", abandon));
    if (body !== undefined) upstream.end(body.length > 0 ? body : undefined);
    // pipe (not pipeline): a failed upstream must not destroy the client's socket before the 502.
    else req.pipe(upstream);
  }

  private async proxyUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, route: EdgeRoute): Promise<void> {
    const admission = await this.access.admit(req, route);
    if (isRefusal(admission)) return refuseOnSocket(socket, admission);
    if (admission.by === "port-ticket") return refuseOnSocket(socket, badRoute(`a port link opens a browser tab, not a WebSocket: open it, then connect with its cookie`));
    const upstream = this.request(req, route, admission, true, this.fresh);
    const abandon = () => upstream.destroy();
    socket.once("close", abandon);

    upstream.on("upgrade", (upstreamRes, upstreamSocket: Duplex, upstreamHead: Buffer) => {
      socket.off("close", abandon);
      this.active.add(socket);
      socket.once("close", () => this.active.delete(socket));
      upstreamSocket.on("error", () => upstreamSocket.destroy());
      (upstreamSocket as Socket).setNoDelay?.(true);
      socket.write(rawHead(101, upstreamRes.statusMessage, upstreamRes.rawHeaders));
      if (upstreamHead.length > 0) socket.write(upstreamHead);
      if (head.length > 0) upstreamSocket.write(head);
      // Each direction ends (or breaks) the other, like the TCP connection it stands for.
      pipeline(upstreamSocket, socket, () => {});
      pipeline(socket, upstreamSocket, () => {});
    });
    // The sandbox (or the host's proxy) declined the upgrade: pass its answer on and close.
    upstream.on("response", (upstreamRes) => {
      if (upstreamRes.statusCode === 404 || upstreamRes.statusCode === 502) this.locator.forget(route.sandboxId);
      const headers = forwardable(upstreamRes.headers, false, NOT_FORWARDED);
      const raw = Object.entries(headers).flatMap(([name, value]) =>
        (Array.isArray(value) ? value : [String(value)]).flatMap((v) => [name, v]),
      );
      socket.write(rawHead(upstreamRes.statusCode ?? 502, upstreamRes.statusMessage, [...raw, "connection", "close"]));
      pipeline(upstreamRes, socket, () => {});
    });
    upstream.on("error", (err: NodeJS.ErrnoException) => {
      this.locator.forget(route.sandboxId);
      refuseOnSocket(socket, notRunning(route.sandboxId, `its host's proxy cannot be reached (${err.code ?? err.message})`));
    });
    upstream.end();
  }

  /**
   * A port link followed (port-links.ts): the cookie that stands for the traffic token on this host,
   * and a redirect to the same URL without the ticket. Nothing reaches the sandbox.
   */
  private openPortLink(req: IncomingMessage, res: ServerResponse, route: EdgeRoute, admitted: Admitted): void {
    const url = new URL(req.url ?? "/", "http://sandbox");
    url.searchParams.delete(PORT_TICKET_PARAM);
    const cookie = [
      `${PORT_COOKIE}=${portCookieValue(admitted.sandbox.trafficAccessToken!, route.sandboxId, route.port)}`,
      "Path=/",
      "HttpOnly",
      "SameSite=Lax",
      `Max-Age=${PORT_COOKIE_MAX_AGE_SEC}`,
      ...((req.socket as { encrypted?: boolean }).encrypted ? ["Secure"] : []),
    ].join("; ");
    req.resume();
    res.writeHead(302, { location: url.pathname + url.search, "set-cookie": cookie, "cache-control": "no-store", "content-length": 0 });
    res.end();
  }

  /**
   * The request to envd at the sandbox's own address: the client's, minus the credentials the proxy
   * consumed, always with the sandbox's token unless a signature stands for it (see the top).
   */
  private requestDirect(req: IncomingMessage, route: EdgeRoute, admitted: Admitted, pooled: boolean): http.ClientRequest {
    const { sandbox } = admitted;
    const address = sandbox.envdDirect!.address;
    const headers = this.forwardedHeaders(req, route, admitted, false);
    if (admitted.by !== "signature") headers[ACCESS_TOKEN_HEADER] = sandbox.envdAccessToken!;
    const upstream = http.request({
      host: address,
      port: ENVD_PORT,
      method: req.method,
      path: req.url,
      headers,
      agent: pooled ? this.direct.agentFor(route.sandboxId, address, ENVD_PORT) : this.fresh,
    });
    limitConnect(upstream, DIRECT_CONNECT_TIMEOUT_MS);
    return upstream;
  }

  /** Tells the sandbox's host of its direct traffic (activityIntervalMs); a host that no longer runs it ends the direct route. */
  private noteActivity(admitted: Admitted): void {
    const { sandboxId, hostId, pingedAt, timeoutSec } = admitted.sandbox;
    if (hostId === undefined) return;
    let state = this.activity.get(sandboxId);
    if (!state) {
      state = { pingedAt: 0 };
      this.activity.set(sandboxId, state);
    }
    // The lookup's own ping counts: the first request after it need not ping again.
    const last = Math.max(state.pingedAt, pingedAt ?? 0);
    const wait = last + activityIntervalMs(timeoutSec) - Date.now();
    if (wait <= 0) return this.pingForActivity(sandboxId, hostId, state);
    if (state.due) return; // this traffic is told when the interval ends
    const ofState = state;
    state.due = setTimeout(() => {
      ofState.due = undefined;
      if (this.activity.get(sandboxId) === ofState) this.pingForActivity(sandboxId, hostId, ofState);
    }, wait);
    state.due.unref();
  }

  private pingForActivity(sandboxId: string, hostId: string, state: { pingedAt: number }): void {
    state.pingedAt = Date.now();
    void this.options.registry
      .connect(hostId)
      .then(({ client }) => callAgent(client.pingSandbox({ sandboxId }), hostId))
      .then(
        (ping) => {
          if (ping.status !== "running") this.forget(sandboxId);
        },
        () => this.forget(sandboxId),
      );
  }

  /** The client's headers minus hop-by-hop ones, routing headers and credentials meant for us alone. */
  private forwardedHeaders(req: IncomingMessage, route: EdgeRoute, admitted: Admitted, upgrade: boolean): http.OutgoingHttpHeaders {
    const headers = forwardable(req.headers, upgrade, NOT_FORWARDED);
    // The team's API key and the traffic token never reach a sandbox; neither do E2B's routing headers.
    delete headers[API_KEY_HEADER];
    delete headers[TRAFFIC_ACCESS_TOKEN_HEADER];
    delete headers[SANDBOX_ID_HEADER];
    delete headers[SANDBOX_PORT_HEADER];
    if (route.port !== ENVD_PORT) {
      delete headers[ACCESS_TOKEN_HEADER]; // envd's token is for envd only
      // A port link's cookie is ours; the sandbox's own cookies pass.
      const cookie = withoutCookie(typeof headers.cookie === "string" ? headers.cookie : undefined, PORT_COOKIE);
      if (cookie === undefined) delete headers.cookie;
      else headers.cookie = cookie;
    } else if (headers[ACCESS_TOKEN_HEADER] === undefined && admitted.by === "api-key" && admitted.sandbox.envdAccessToken) {
      headers[ACCESS_TOKEN_HEADER] = admitted.sandbox.envdAccessToken; // the team's key stands for the sandbox's token
    }
    return headers;
  }

  /** The request to the host's port proxy: the client's, minus the credentials the proxy consumed. */
  private request(req: IncomingMessage, route: EdgeRoute, admitted: Admitted, upgrade: boolean, agent: http.Agent): http.ClientRequest {
    const { hostProxy } = admitted.sandbox;
    const headers = this.forwardedHeaders(req, route, admitted, upgrade);
    headers[HOST_SANDBOX_ID_HEADER] = route.sandboxId;
    headers[HOST_SANDBOX_PORT_HEADER] = String(route.port);
    headers[HOST_TOKEN_HEADER] = hostProxy.token;
    const upstream = http.request({
      host: hostProxy.hostname,
      port: hostProxy.port,
      method: req.method,
      path: req.url,
      headers,
      agent,
    });
    limitConnect(upstream, CONNECT_TIMEOUT_MS);
    return upstream;
  }

  private mayBeHostNotFound(upstreamRes: IncomingMessage): boolean {
    const length = Number(upstreamRes.headers["content-length"]);
    return upstreamRes.headers["content-type"] === "application/json" && length > 0 && length <= HOST_NOT_FOUND_MAX_BYTES;
  }

  /**
   * A small JSON 404: either the host's proxy saying the sandbox is not there (gone since it was
   * looked up: answered 502 as for any sandbox not running) or the sandbox's own answer, passed on.
   */
  private async answerNotFound(res: ServerResponse, upstreamRes: IncomingMessage, route: EdgeRoute): Promise<void> {
    const chunks: Buffer[] = [];
    try {
      for await (const chunk of upstreamRes) chunks.push(chunk as Buffer);
    } catch {
      res.destroy();
      return;
    }
    const body = Buffer.concat(chunks);
    let hostSaysGone = false;
    try {
      const parsed = JSON.parse(body.toString("utf8")) as { code?: unknown; message?: unknown };
      hostSaysGone = parsed.code === 404 && parsed.message === `sandbox ${route.sandboxId} not found`;
    } catch {
      // not JSON after all: the sandbox's own answer
    }
    if (hostSaysGone) {
      this.locator.forget(route.sandboxId);
      const { status, body: refusal } = notRunning(route.sandboxId, "its host no longer runs it");
      const json = JSON.stringify(refusal);
      res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(json) });
      res.end(json);
      return;
    }
    res.writeHead(404, upstreamRes.statusMessage || undefined, forwardable(upstreamRes.headers, false, NOT_FORWARDED));
    res.end(body);
  }
}

/** The edge proxy for an API built with the sandbox and host services, else undefined (tests of other routes). */
export function createEdgeProxy(
  deps: { repos: Repositories; logger: Logger; config: { domain: string; edgeDirect?: boolean; edgeLocationTtlMs?: number }; services: { hosts?: HostRegistry; sandboxes?: SandboxService } },
  authCache: AuthCache,
): EdgeProxy | undefined {
  if (!deps.services.hosts) return undefined;
  const proxy = new EdgeProxy({
    domain: deps.config.domain,
    repos: deps.repos,
    authCache,
    registry: deps.services.hosts,
    settled: (sandboxId) => deps.services.sandboxes?.settled(sandboxId),
    logger: deps.logger,
    direct: deps.config.edgeDirect ?? true,
    locationTtlMs: deps.config.edgeLocationTtlMs,
  });
  // A pause or destroy (through the API, or found by the reconciler) reaches the proxy at once, not after its cache's TTL.
  deps.services.sandboxes?.onStatusChange((sandboxId, status) => proxy.forget(sandboxId, status));
  return proxy;
}
