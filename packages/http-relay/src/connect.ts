// A bound on how long a proxy waits for the connection to its upstream.
import type { ClientRequest } from "node:http";
import type { Socket } from "node:net";

/**
 * Fails `upstream` with ETIMEDOUT when a new connection is not made within `timeoutMs` (a reused
 * one is already connected): an address nobody answers at must not hold the client for the
 * kernel's own connect timeout.
 */
export function limitConnect(upstream: ClientRequest, timeoutMs: number): void {
  upstream.on("socket", (socket: Socket) => {
    if (!socket.connecting) return;
    const timer = setTimeout(() => {
      const err: NodeJS.ErrnoException = new Error(`no answer within ${timeoutMs} ms`);
      err.code = "ETIMEDOUT";
      upstream.destroy(err);
    }, timeoutMs);
    socket.once("connect", () => clearTimeout(timer));
    socket.once("close", () => clearTimeout(timer));
  });
}
