// Which of a message's headers may pass a proxy, how a relayed response's head is written, and the
// raw head written to a socket that left the HTTP server (an upgrade).
import { STATUS_CODES, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from "node:http";

/**
 * Connection-level headers (RFC 9110 §7.6.1) belong to one hop; `expect` is answered by the
 * proxy's own server already. A proxy adds the headers it consumes itself (its routing, its token).
 */
export const HOP_BY_HOP_HEADERS: ReadonlySet<string> = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "expect",
]);

/**
 * The headers to send on: all but those in `notForwarded` and those `connection` names. With
 * `keepUpgrade` the upgrade request is kept (a WebSocket handshake passed on).
 */
export function forwardable(headers: IncomingHttpHeaders, keepUpgrade: boolean, notForwarded: ReadonlySet<string> = HOP_BY_HOP_HEADERS): OutgoingHttpHeaders {
  const named = headers.connection ? new Set(headers.connection.toLowerCase().split(",").map((name) => name.trim())) : undefined;
  const result: OutgoingHttpHeaders = {};
  for (const name in headers) {
    const value = headers[name];
    if (value !== undefined && !notForwarded.has(name) && !named?.has(name)) result[name] = value;
  }
  if (keepUpgrade) {
    result.connection = "upgrade";
    result.upgrade = headers.upgrade;
  }
  return result;
}

/** A raw HTTP/1.1 head, for sockets that left the HTTP server (upgrades). */
export function rawHead(status: number, statusMessage: string | undefined, rawHeaders: string[]): string {
  let head = `HTTP/1.1 ${status} ${statusMessage || STATUS_CODES[status] || ""}\r\n`;
  for (let i = 0; i < rawHeaders.length; i += 2) head += `${rawHeaders[i]}: ${rawHeaders[i + 1]}\r\n`;
  return `${head}\r\n`;
}

/**
 * Writes the upstream's status and `headers` to the client. A response without a length (a Connect
 * server stream, SSE, chunked) may send its headers long before its first message: they go at once.
 * One with a length goes out with its first body bytes, in one write (one wake-up of the client,
 * not two, per unary call).
 */
export function writeRelayedHead(res: ServerResponse, upstreamRes: IncomingMessage, headers: OutgoingHttpHeaders): void {
  res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.statusMessage || undefined, headers);
  if (upstreamRes.headers["content-length"] === undefined) res.flushHeaders();
}
