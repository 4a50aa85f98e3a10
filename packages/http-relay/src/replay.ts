// Sending a request again when a kept-alive connection died under it. A server may close an idle
// connection just as we reuse it; the request then fails before any answer (ECONNRESET, EPIPE,
// "socket hang up") though the server never acted on it. Such a request is sent once more on a
// fresh connection, when it can be: no body, or a small body of known length read whole first.
// Larger or streamed bodies are never buffered; callers send them on a fresh connection instead,
// so they never meet a connection the far end has closed.
// Used by both proxies: the edge proxy towards a host's port proxy, the port proxy towards a sandbox.
import type { ClientRequest, IncomingMessage } from "node:http";
import type { Socket } from "node:net";

/** Bodies up to this size are read whole so the request can be replayed (Connect unary calls are far smaller). */
export const REPLAYABLE_BODY_MAX_BYTES = 64 * 1024;

const EMPTY = Buffer.alloc(0);
/** What a write to, or a read from, a connection the far end has closed fails with. */
const DEAD_CONNECTION_CODES = new Set(["ECONNRESET", "EPIPE"]);

/**
 * The request's whole body (empty when it has none) when it may be replayed, else undefined: the
 * body is then left unread, to be streamed. Rejects when the client goes away mid-body.
 */
export function readReplayableBody(req: IncomingMessage, maxBytes = REPLAYABLE_BODY_MAX_BYTES): Promise<Buffer | undefined> {
  if (req.headers["transfer-encoding"] !== undefined) return Promise.resolve(undefined);
  const declared = req.headers["content-length"];
  // HTTP/1.1: a request with neither a length nor chunking has no body.
  if (declared === undefined || declared === "0") return Promise.resolve(EMPTY);
  const length = /^\d+$/.test(declared) ? Number(declared) : Infinity;
  if (length > maxBytes) return Promise.resolve(undefined);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.once("end", () => resolve(Buffer.concat(chunks)));
    req.once("error", reject);
    req.once("close", () => {
      if (!req.complete) reject(Object.assign(new Error("the client went away mid-body"), { code: "ECONNRESET" }));
    });
  });
}

/**
 * Watches `upstream` from its start; the returned check says whether an error it failed with
 * means a reused connection the far end had closed: reused, nothing read on it for this request,
 * and a dead-connection error.
 */
export function watchReuse(upstream: ClientRequest): (err: NodeJS.ErrnoException) => boolean {
  let socket: Socket | undefined;
  let readBefore = 0;
  upstream.once("socket", (assigned: Socket) => {
    socket = assigned;
    readBefore = assigned.bytesRead;
  });
  return (err) =>
    upstream.reusedSocket && socket !== undefined && socket.bytesRead === readBefore && DEAD_CONNECTION_CODES.has(err.code ?? "");
}
