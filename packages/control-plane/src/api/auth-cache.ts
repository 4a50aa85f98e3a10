// Recently resolved API keys, so a busy key costs no database round trip per request. An entry
// lives a few seconds: a key revoked through this control plane is dropped at once (clear()),
// one revoked through another control plane stops working here within the TTL. A key in use is
// looked up again in the background once its entry is half that old, so it never waits on the
// database while the answer it is served is never older than the TTL.
import { createHash } from "node:crypto";
import { LRUCache } from "lru-cache";
import type { RequestAuth } from "./auth.js";

export const AUTH_CACHE_TTL_MS = 5_000;

interface Entry {
  auth: RequestAuth;
  /** performance.now() when it was looked up. */
  at: number;
}

export class AuthCache {
  private readonly entries: LRUCache<string, Entry>;
  /** Lookups in flight by key hash: a burst of requests with one key costs one lookup. */
  private readonly pending = new Map<string, Promise<RequestAuth | undefined>>();
  /** Bumped by clear(): a lookup that began before it must not bring an entry back. */
  private generation = 0;

  constructor(private readonly ttlMs = AUTH_CACHE_TTL_MS) {
    this.entries = new LRUCache<string, Entry>({ max: 10_000, ttl: ttlMs });
  }

  /** Keyed by a hash: the cache never holds secrets. */
  private static keyOf(secret: string): string {
    return createHash("sha256").update(secret).digest("base64url");
  }

  /**
   * Who `secret` authenticates, from the cache when it can; `lookup` asks the database (undefined:
   * no such key, or revoked). An entry past half its life is served and refreshed in the background.
   */
  async resolve(secret: string, lookup: () => Promise<RequestAuth | undefined>): Promise<RequestAuth | undefined> {
    const key = AuthCache.keyOf(secret);
    const entry = this.entries.get(key);
    if (entry) {
      // A failed refresh leaves the entry to expire. Sent once this request's own work is under
      // way: building and sending the query costs CPU.
      if (performance.now() - entry.at > this.ttlMs / 2 && !this.pending.has(key)) setImmediate(() => this.refresh(key, lookup).catch(() => undefined));
      return entry.auth;
    }
    return this.refresh(key, lookup);
  }

  private refresh(key: string, lookup: () => Promise<RequestAuth | undefined>): Promise<RequestAuth | undefined> {
    let pending = this.pending.get(key);
    if (!pending) {
      const at = performance.now();
      const generation = this.generation;
      pending = lookup()
        .then((auth) => {
          if (generation !== this.generation) return auth;
          if (auth) this.entries.set(key, { auth, at });
          else this.entries.delete(key);
          return auth;
        })
        .finally(() => this.pending.delete(key));
      this.pending.set(key, pending);
    }
    return pending;
  }

  /** After a revocation (or any change to a key or team): every key is looked up afresh. */
  clear(): void {
    this.generation++;
    this.entries.clear();
    this.pending.clear();
  }
}
