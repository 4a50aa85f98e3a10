// API keys: the secret is shown once at creation; only its sha256 is kept.
import { and, desc, eq, isNull } from "drizzle-orm";
import type { Db } from "./database.js";
import { apiKeys, type ApiKey } from "./schema.js";
import { hashSecret, newSecret } from "./tokens.js";

export const API_KEY_PREFIX = "wrn_";
/** How much of the secret lists show: "wrn_" and 8 characters. */
const SHOWN_PREFIX_LENGTH = API_KEY_PREFIX.length + 8;
/** last_used_at is refreshed at most this often, so every request is not also a write. */
const LAST_USED_RESOLUTION_MS = 60_000;

export class ApiKeyRepository {
  constructor(private readonly db: Db) {}

  /** Returns the new key and its secret; the secret cannot be read again. */
  async create(key: { teamId: string; name: string; createdByUserId?: string }): Promise<{ apiKey: ApiKey; secret: string }> {
    const secret = newSecret(API_KEY_PREFIX);
    const [apiKey] = await this.db
      .insert(apiKeys)
      .values({
        teamId: key.teamId,
        name: key.name,
        createdByUserId: key.createdByUserId,
        prefix: secret.slice(0, SHOWN_PREFIX_LENGTH),
        secretHash: hashSecret(secret),
      })
      .returning();
    return { apiKey: apiKey!, secret };
  }

  /** The unrevoked key with this secret, noting that it was used; undefined for anything else. */
  async findBySecret(secret: string, now = new Date()): Promise<ApiKey | undefined> {
    if (!secret.startsWith(API_KEY_PREFIX)) return undefined;
    const [apiKey] = await this.db
      .select()
      .from(apiKeys)
      .where(and(eq(apiKeys.secretHash, hashSecret(secret)), isNull(apiKeys.revokedAt)));
    if (!apiKey) return undefined;
    if (apiKey.lastUsedAt === null || now.getTime() - apiKey.lastUsedAt.getTime() >= LAST_USED_RESOLUTION_MS) {
      await this.db.update(apiKeys).set({ lastUsedAt: now }).where(eq(apiKeys.id, apiKey.id));
      apiKey.lastUsedAt = now;
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
