// Recently resolved API keys, so a busy key costs no database round trip per request. An entry
// lives a few seconds: a key revoked through this control plane is dropped at once (clear()),
// one revoked through another control plane stops working here within the TTL.
import { createHash } from "node:crypto";
import { LRUCache } from "lru-cache";
import type { RequestAuth } from "./auth.js";

export const AUTH_CACHE_TTL_MS = 5_000;

export class AuthCache {
  private readonly entries = new LRUCache<string, RequestAuth>({ max: 10_000, ttl: AUTH_CACHE_TTL_MS });

  /** Keyed by a hash: the cache never holds secrets. */
  private static keyOf(secret: string): string {
    return createHash("sha256").update(secret).digest("base64url");
  }

  get(secret: string): RequestAuth | undefined {
    return this.entries.get(AuthCache.keyOf(secret));
  }

  set(secret: string, auth: RequestAuth): void {
    this.entries.set(AuthCache.keyOf(secret), auth);
  }

  /** After a revocation (or any change to a key or team): every key is looked up afresh. */
  clear(): void {
    this.entries.clear();
  }
}
