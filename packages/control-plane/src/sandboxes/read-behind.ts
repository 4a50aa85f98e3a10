// Values read from the database that may stand in for it a while, read again behind the callers
// using them: what a create looks up before it can call its host (the template it names) must
// not cost it a database round trip each time its cache entry ages out.
//
// An entry answers while `version()` is unchanged (catalog-version.ts: every write this process
// makes to what the value is made of bumps it) and for at most `maxAgeMs`. Once `refreshMs` old it
// is read again in the background (one read at a time, on the next turn: after the caller's own
// calls are out), so a key asked for steadily never waits on the database. A background read that
// fails drops the entry: the next caller reads the database itself and hears its answer (a value
// deleted meanwhile is not_found, not served from memory).
import { LRUCache } from "lru-cache";

export interface ReadBehindOptions {
  max: number;
  maxAgeMs: number;
  refreshMs: number;
  version: () => number;
  /** Told about a background read that failed (the entry is dropped either way). */
  onRefreshError?: (key: string, error: unknown) => void;
}

interface Entry<V> {
  value: V;
  version: number;
  at: number;
  refreshing: boolean;
}

export class ReadBehindCache<V extends object> {
  private readonly entries: LRUCache<string, Entry<V>>;

  constructor(private readonly options: ReadBehindOptions) {
    this.entries = new LRUCache<string, Entry<V>>({ max: options.max, ttl: options.maxAgeMs });
  }

  /** The value of `key`, from memory when it may stand in for the database, else from `read`. */
  async get(key: string, read: () => Promise<V>): Promise<V> {
    const entry = this.entries.get(key);
    if (!entry || entry.version !== this.options.version()) return this.read(key, read);
    if (Date.now() - entry.at >= this.options.refreshMs && !entry.refreshing) {
      entry.refreshing = true;
      setImmediate(() => {
        this.read(key, read).catch((error: unknown) => {
          if (this.entries.get(key) === entry) this.entries.delete(key);
          this.options.onRefreshError?.(key, error);
        });
      });
    }
    return entry.value;
  }

  private async read(key: string, read: () => Promise<V>): Promise<V> {
    // The version before the read: a write while it runs makes what it read stale at once.
    const version = this.options.version();
    const at = Date.now();
    const value = await read();
    this.entries.set(key, { value, version, at, refreshing: false });
    return value;
  }
}
