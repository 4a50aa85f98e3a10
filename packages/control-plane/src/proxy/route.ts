// Which sandbox port a request to the control plane's own port is for, if any: E2B's two ways of
// naming it, the headers `E2b-Sandbox-Id` + `E2b-Sandbox-Port` (what the e2b SDK sends when
// E2B_SANDBOX_URL is set; they win) or the Host `<port>-<sandboxId>.<domain>`.
import type { IncomingHttpHeaders } from "node:http";

export const SANDBOX_ID_HEADER = "e2b-sandbox-id";
export const SANDBOX_PORT_HEADER = "e2b-sandbox-port";

export interface EdgeRoute {
  sandboxId: string;
  port: number;
}

/** The request is meant for a sandbox but names it wrongly: answered 400, never passed on. */
export interface InvalidEdgeRoute {
  invalid: string;
}

// Sandbox ids are lowercase letters and digits (E2B splits the host label on its first `-`).
const SANDBOX_ID = /^[a-z0-9]{1,64}$/;

/**
 * The sandbox port the request names, a reason it names one wrongly, or undefined when it is an
 * API request. Runs on every request to the control plane, so it only looks at two headers and
 * the host's suffix.
 */
export function edgeRouteOf(headers: IncomingHttpHeaders, domain: string): EdgeRoute | InvalidEdgeRoute | undefined {
  const idHeader = headers[SANDBOX_ID_HEADER];
  const portHeader = headers[SANDBOX_PORT_HEADER];
  if (idHeader !== undefined || portHeader !== undefined) {
    if (typeof idHeader !== "string" || typeof portHeader !== "string" || idHeader === "") {
      return { invalid: `send both ${SANDBOX_ID_HEADER} and ${SANDBOX_PORT_HEADER}, once each` };
    }
    return routeOf(idHeader, portHeader);
  }
  const label = sandboxLabel(headers.host, domain);
  if (label === undefined) return undefined;
  const dash = label.indexOf("-");
  return routeOf(label.slice(dash + 1), label.slice(0, dash));
}

/** The first label of a Host `<label>.<domain>[:port]` when it has a `-`, else undefined. */
function sandboxLabel(host: string | undefined, domain: string): string | undefined {
  if (!host) return undefined;
  const colon = host.lastIndexOf(":");
  // A port after the name (an IPv6 literal ends with `]`, and is never a sandbox's host).
  const name = (colon > host.lastIndexOf("]") ? host.slice(0, colon) : host).toLowerCase();
  const suffix = `.${domain}`;
  if (!name.endsWith(suffix)) return undefined;
  const label = name.slice(0, -suffix.length);
  if (label.includes(".") || !label.includes("-")) return undefined;
  return label;
}

function routeOf(sandboxId: string, portText: string): EdgeRoute | InvalidEdgeRoute {
  const port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (!(port >= 1 && port <= 65535)) return { invalid: `invalid sandbox port "${portText}": expected 1-65535` };
  // An id no sandbox can have is routed all the same: it is answered as an unknown sandbox.
  return { sandboxId, port };
}

export function isValidSandboxId(sandboxId: string): boolean {
  return SANDBOX_ID.test(sandboxId);
}
