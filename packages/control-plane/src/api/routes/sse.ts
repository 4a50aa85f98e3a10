// Server-sent event streams that may stay quiet for long (a command printing nothing, a build step
// that takes minutes): a comment line every few seconds keeps proxies and clients (Node's fetch
// cuts a body silent for 300 s) from taking the stream for dead. Clients ignore comment lines.
import type { ServerResponse } from "node:http";

export const SSE_KEEPALIVE_MS = 15_000;

/** Writes `: keepalive` to `raw` every `intervalMs` until the returned function is called or it closes. */
export function sseKeepalive(raw: ServerResponse, intervalMs = SSE_KEEPALIVE_MS): () => void {
  const timer = setInterval(() => {
    if (!raw.destroyed && !raw.writableEnded) raw.write(": keepalive\n\n");
  }, intervalMs);
  timer.unref();
  const stop = () => clearInterval(timer);
  raw.once("close", stop);
  return stop;
}
