// API keys: the secret is shown once at creation; only its sha256 is kept. Each key also answers
// to an E2B-shaped alias (`e2b_` + 40 hex) derived from its secret, for e2b SDKs that check the shape.
import { createHmac } from "node:crypto";
import { and, desc, eq, isNull } from "drizzle-orm";
import type { Db } from "./database.js";
import { apiKeys, type ApiKey } from "./schema.js";
import { hashSecret, newSecret } from "./tokens.js";

export const API_KEY_PREFIX = "wrn_";
/** The form old e2b SDKs accept on the client (`e2b_` and hex); Wrenn's aliases have 40 hex digits. */
export const E2B_KEY_PATTERN = /^e2b_[0-9a-f]{40}$/;
/** How much of the secret lists show: "wrn_" and 8 characters. */
const SHOWN_PREFIX_LENGTH = API_KEY_PREFIX.length + 8;
/** last_used_at is refreshed at most this often, so every request is not also a write. */
const LAST_USED_RESOLUTION_MS = 60_000;

export class ApiKeyRepository {
  constructor(private readonly db: Db) {}

  /** Returns the new key, its secret and the secret's e2b alias; neither can be read again. */
  async create(key: { teamId: string; name: string; createdByUserId?: string }): Promise<{ apiKey: ApiKey; secret: string; e2bKey: string }> {
    const secret = newSecret(API_KEY_PREFIX);
    const e2bKey = e2bKeyFor(secret);
    const [apiKey] = await this.db
      .insert(apiKeys)
      .values({
        teamId: key.teamId,
        name: key.name,
        createdByUserId: key.createdByUserId,
        prefix: secret.slice(0, SHOWN_PREFIX_LENGTH),
        secretHash: hashSecret(secret),
        e2bAliasHash: hashSecret(e2bKey),
      })
      .returning();
    return { apiKey: apiKey!, secret, e2bKey };
  }

  /**
   * The unrevoked key with this secret (wrn_…) or e2b alias (e2b_…), noting that it was used;
   * undefined for anything else. A key made before aliases existed learns its alias here, the
   * first time its secret is presented.
   */
  async findBySecret(secret: string, now = new Date()): Promise<ApiKey | undefined> {
    const column = secret.startsWith(API_KEY_PREFIX) ? apiKeys.secretHash : E2B_KEY_PATTERN.test(secret) ? apiKeys.e2bAliasHash : undefined;
    if (!column) return undefined;
    const [apiKey] = await this.db
      .select()
      .from(apiKeys)
      .where(and(eq(column, hashSecret(secret)), isNull(apiKeys.revokedAt)));
    if (!apiKey) return undefined;
    const changes: Partial<Pick<ApiKey, "lastUsedAt" | "e2bAliasHash">> = {};
    if (apiKey.lastUsedAt === null || now.getTime() - apiKey.lastUsedAt.getTime() >= LAST_USED_RESOLUTION_MS) changes.lastUsedAt = now;
    if (apiKey.e2bAliasHash === null && column === apiKeys.secretHash) changes.e2bAliasHash = hashSecret(e2bKeyFor(secret));
    if (Object.keys(changes).length > 0) {
      await this.db.update(apiKeys).set(changes).where(eq(apiKeys.id, apiKey.id));
      Object.assign(apiKey, changes);
    }
    return apiKey;
  }

  /** The team's keys, newest first, revoked ones included (they show as revoked). */
  async listForTeam(teamId: string): Promise<ApiKey[]> {
    return this.db.select().from(apiKeys).where(eq(apiKeys.teamId, teamId)).orderBy(desc(apiKeys.createdAt), desc(apiKeys.id));
  }

  /** Revokes the team's key; false when there is no such unrevoked key in that team. */
  async revoke(teamId: string, id: string): Promise<boolean> {
    const rows = await this.db
      .update(apiKeys)
      .set({ revokedAt: new Date() })
      .where(and(eq(apiKeys.id, id), eq(apiKeys.teamId, teamId), isNull(apiKeys.revokedAt)))
      .returning({ id: apiKeys.id });
    return rows.length > 0;
  }
}

/**
 * The e2b alias of a Wrenn secret: `e2b_` and the first 40 hex digits of HMAC-SHA256(secret,
 * "wrenn e2b alias"). Whoever holds the secret can work it out (the CLI, `make up`); the database
 * keeps only its hash, so a copy of the database does not yield it.
 */
export function e2bKeyFor(secret: string): string {
  return `e2b_${createHmac("sha256", secret).update("wrenn e2b alias").digest("hex").slice(0, 40)}`;
}
