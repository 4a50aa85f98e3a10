// Which sandbox port a proxied request is for. The control plane names it in two headers; a
// client that reached us directly names it E2B's way, in the host: `<port>-<sandboxId>.<domain>`.
import type { IncomingHttpHeaders } from "node:http";

export const SANDBOX_ID_HEADER = "x-wrenn-sandbox-id";
export const SANDBOX_PORT_HEADER = "x-wrenn-sandbox-port";

export interface ProxyRoute {
  sandboxId: string;
  port: number;
}

/** The request names no sandbox port, or an impossible one; answered with 400. */
export class InvalidRouteError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvalidRouteError";
  }
}

/** The route named by the headers (which win) or else by the Host; throws InvalidRouteError. */
export function routeOf(headers: IncomingHttpHeaders): ProxyRoute {
  const sandboxId = headers[SANDBOX_ID_HEADER];
  if (typeof sandboxId === "string" && sandboxId !== "") {
    const port = headers[SANDBOX_PORT_HEADER];
    if (typeof port !== "string") throw new InvalidRouteError(`${SANDBOX_ID_HEADER} needs ${SANDBOX_PORT_HEADER} beside it`);
    return { sandboxId, port: portOf(port) };
  }
  // Only the first label counts; the rest is whatever domain the control plane serves.
  const label = /^([^.]+)\./.exec(headers.host ?? "")?.[1];
  const dash = label?.indexOf("-") ?? -1;
  if (!label || dash <= 0 || dash === label.length - 1) {
    throw new InvalidRouteError(
      `no sandbox named: send Host <port>-<sandboxId>.<domain>, or ${SANDBOX_ID_HEADER} and ${SANDBOX_PORT_HEADER}`,
    );
  }
  return { sandboxId: label.slice(dash + 1), port: portOf(label.slice(0, dash)) };
}

function portOf(text: string): number {
  const port = /^\d{1,5}$/.test(text) ? Number(text) : NaN;
  if (!(port >= 1 && port <= 65535)) throw new InvalidRouteError(`invalid port "${text}": expected 1-65535`);
  return port;
}
