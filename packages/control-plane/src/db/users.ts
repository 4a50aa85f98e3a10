// Dashboard users (API clients authenticate with API keys instead).
import { eq, sql } from "drizzle-orm";
import type { Db } from "./database.js";
import { users, type User } from "./schema.js";

export class UserRepository {
  constructor(private readonly db: Db) {}

  /** `passwordHash` is the caller's work (scrypt/argon2); this layer only stores it. Emails are kept lower-case. */
  async create(user: { email: string; passwordHash: string }): Promise<User> {
    const [row] = await this.db
      .insert(users)
      .values({ email: user.email.toLowerCase(), passwordHash: user.passwordHash })
      .returning();
    return row!;
  }

  async get(id: string): Promise<User | undefined> {
    const [row] = await this.db.select().from(users).where(eq(users.id, id));
    return row;
  }

  async findByEmail(email: string): Promise<User | undefined> {
    const [row] = await this.db.select().from(users).where(eq(users.email, email.toLowerCase()));
    return row;
  }

  async setPasswordHash(id: string, passwordHash: string): Promise<boolean> {
    const rows = await this.db.update(users).set({ passwordHash }).where(eq(users.id, id)).returning({ id: users.id });
    return rows.length > 0;
  }

  async count(): Promise<number> {
    const [row] = await this.db.select({ count: sql<number>`count(*)::int` }).from(users);
    return row?.count ?? 0;
  }
}
