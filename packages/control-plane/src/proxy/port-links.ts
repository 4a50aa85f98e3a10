// A browser cannot send headers when it follows a link, so a sandbox's port is opened to one by a
// link the API hands out (`POST /v1/sandboxes/:id/ports/:port/link`, for the dashboard):
// `<port>-<id>.<domain>/?wrenn_port_ticket=<ticket>`. The ticket is good for a minute; the edge
// proxy answers it with a redirect to the same URL without it and a cookie that stands for the
// sandbox's traffic access token on that host only (host-only, HttpOnly, SameSite=Lax: top-level
// navigation only), so the ticket never reaches the sandbox and does not stay in the address bar.
// Both are HMACs keyed by the sandbox's traffic access token: any control plane can check them, a
// new token (none yet) would void them, and they open the sandbox's own ports, never envd's.
import { createHmac, timingSafeEqual } from "node:crypto";

export const PORT_TICKET_PARAM = "wrenn_port_ticket";
export const PORT_COOKIE = "wrenn_port_access";
/** How long a link works once handed out. */
export const PORT_TICKET_TTL_SEC = 60;
/** How long the browser keeps the cookie. */
export const PORT_COOKIE_MAX_AGE_SEC = 12 * 60 * 60;

const mac = (key: string, message: string) => createHmac("sha256", key).update(message).digest("base64url");

function sameText(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** A ticket for `port` of the sandbox, good until `nowSec` + PORT_TICKET_TTL_SEC. */
export function portTicket(trafficToken: string, sandboxId: string, port: number, nowSec = Math.floor(Date.now() / 1000)): { ticket: string; expiresAtSec: number } {
  const expiresAtSec = nowSec + PORT_TICKET_TTL_SEC;
  return { ticket: `${expiresAtSec}.${mac(trafficToken, `ticket:${sandboxId}:${port}:${expiresAtSec}`)}`, expiresAtSec };
}

/** "ok", "expired", or "invalid" (made for another sandbox or port, or not a ticket). */
export function checkPortTicket(ticket: string, trafficToken: string, sandboxId: string, port: number, nowSec = Math.floor(Date.now() / 1000)): "ok" | "expired" | "invalid" {
  const match = /^(\d{1,12})\.([A-Za-z0-9_-]{43})$/.exec(ticket);
  if (!match) return "invalid";
  const expiresAtSec = Number(match[1]);
  if (!sameText(match[2]!, mac(trafficToken, `ticket:${sandboxId}:${port}:${expiresAtSec}`))) return "invalid";
  return expiresAtSec < nowSec ? "expired" : "ok";
}

/** The cookie's value for `port` of the sandbox. */
export function portCookieValue(trafficToken: string, sandboxId: string, port: number): string {
  return mac(trafficToken, `cookie:${sandboxId}:${port}`);
}

export function matchesPortCookie(given: string, trafficToken: string, sandboxId: string, port: number): boolean {
  return sameText(given, portCookieValue(trafficToken, sandboxId, port));
}
