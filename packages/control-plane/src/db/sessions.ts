// Dashboard sessions: a signed-in user (or API key) in one team, behind an opaque cookie. Only the
// sha256 of the cookie's value is stored, so a copy of the database signs nobody in.
import { createHash, randomBytes } from "node:crypto";
import { and, eq, gt, isNull, lte, ne, or } from "drizzle-orm";
import type { Db } from "./database.js";
import { apiKeys, sessions, teamMembers, teams, type Session, type Team } from "./schema.js";

/** A session lives this long after its last refresh. */
export const SESSION_TTL_MS = 7 * 24 * 60 * 60 * 1000;
/** Its expiry moves forward at most this often (one write per session per hour, not per request). */
export const SESSION_REFRESH_MS = 60 * 60 * 1000;

export const hashSessionToken = (token: string): string => createHash("sha256").update(token).digest("hex");

export interface ActiveSession {
  session: Session;
  team: Team;
}

export class SessionRepository {
  constructor(private readonly db: Db) {}

  /** A new session; `token` is the cookie's value, returned only here. */
  async create(values: {
    userId?: string | null;
    apiKeyId?: string | null;
    teamId: string;
    ip?: string | null;
    userAgent?: string | null;
    now?: Date;
  }): Promise<{ session: Session; token: string }> {
    const token = randomBytes(32).toString("base64url");
    const now = values.now ?? new Date();
    const [row] = await this.db
      .insert(sessions)
      .values({
        id: hashSessionToken(token),
        userId: values.userId ?? null,
        apiKeyId: values.apiKeyId ?? null,
        teamId: values.teamId,
        csrfToken: randomBytes(32).toString("base64url"),
        createdAt: now,
        lastSeenAt: now,
        expiresAt: new Date(now.getTime() + SESSION_TTL_MS),
        ip: values.ip ?? null,
        userAgent: values.userAgent?.slice(0, 500) ?? null,
      })
      .returning();
    return { session: row!, token };
  }

  /**
   * The unexpired session behind `token` with its team, while its user still belongs to that team
   * (user sessions) or its key is unrevoked (API-key sessions); undefined otherwise.
   */
  async findActive(token: string, now = new Date()): Promise<ActiveSession | undefined> {
    const [row] = await this.db
      .select({ session: sessions, team: teams })
      .from(sessions)
      .innerJoin(teams, eq(teams.id, sessions.teamId))
      .leftJoin(teamMembers, and(eq(teamMembers.teamId, sessions.teamId), eq(teamMembers.userId, sessions.userId)))
      .leftJoin(apiKeys, and(eq(apiKeys.id, sessions.apiKeyId), eq(apiKeys.teamId, sessions.teamId), isNull(apiKeys.revokedAt)))
      .where(
        and(
          eq(sessions.id, hashSessionToken(token)),
          gt(sessions.expiresAt, now),
          or(isNull(sessions.userId), eq(teamMembers.userId, sessions.userId)),
          or(isNull(sessions.apiKeyId), eq(apiKeys.id, sessions.apiKeyId)),
        ),
      );
    return row;
  }

  /** Slides the session's expiry to `now` + TTL; the new expiry. */
  async refresh(id: string, now = new Date()): Promise<Date> {
    const expiresAt = new Date(now.getTime() + SESSION_TTL_MS);
    await this.db.update(sessions).set({ lastSeenAt: now, expiresAt }).where(eq(sessions.id, id));
    return expiresAt;
  }

  /** Ends the session behind `token`; false when there was none. */
  async deleteByToken(token: string): Promise<boolean> {
    const rows = await this.db.delete(sessions).where(eq(sessions.id, hashSessionToken(token))).returning({ id: sessions.id });
    return rows.length > 0;
  }

  /** Ends every session of a user (a password change, a removed account), but `keep` if given. */
  async deleteForUser(userId: string, keep?: string): Promise<number> {
    const mine = eq(sessions.userId, userId);
    const rows = await this.db
      .delete(sessions)
      .where(keep ? and(mine, ne(sessions.id, keep)) : mine)
      .returning({ id: sessions.id });
    return rows.length;
  }

  /** Drops expired sessions; how many. */
  async deleteExpired(now = new Date()): Promise<number> {
    const rows = await this.db.delete(sessions).where(lte(sessions.expiresAt, now)).returning({ id: sessions.id });
    return rows.length;
  }
}
