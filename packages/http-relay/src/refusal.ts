// A proxy's own answer (an error it reports as JSON), on a response or on an upgrade's raw socket.
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { rawHead } from "./headers.js";

export interface Refusal {
  status: number;
  body: Record<string, unknown>;
}

export function refuseOnResponse(req: IncomingMessage, res: ServerResponse, { status, body }: Refusal): void {
  if (res.headersSent || res.destroyed) return;
  const json = JSON.stringify(body);
  // A request body left unread would be parsed as the next request: close the connection instead.
  if (!req.complete) res.shouldKeepAlive = false;
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(json) });
  res.end(json);
}

/** Answers and closes an upgrade's socket; a socket already closed (or ending) is left alone. */
export function refuseOnSocket(socket: Duplex, { status, body }: Refusal): void {
  if (socket.destroyed || !socket.writable) return;
  const json = JSON.stringify(body);
  const headers = ["content-type", "application/json", "content-length", String(Buffer.byteLength(json)), "connection", "close"];
  socket.end(rawHead(status, undefined, headers) + json);
}
