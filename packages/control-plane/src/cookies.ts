// One cookie out of a request's Cookie header (RFC 6265 §5.4: `name=value` pairs joined by "; "),
// for the dashboard's session and the edge proxy's port-link cookie alike.

/** The first non-empty value of cookie `name` in a Cookie header, or undefined. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? "").split(";")) {
    const at = part.indexOf("=");
    if (at <= 0 || part.slice(0, at).trim() !== name) continue;
    const value = part.slice(at + 1).trim();
    if (value) return value;
  }
  return undefined;
}

/** The Cookie header without cookie `name` (the others pass); undefined when nothing is left. */
export function withoutCookie(header: string | undefined, name: string): string | undefined {
  const kept = (header ?? "")
    .split(";")
    .map((part) => part.trim())
    .filter((part) => part !== "" && part.slice(0, part.indexOf("=")).trim() !== name);
  return kept.length > 0 ? kept.join("; ") : undefined;
}
