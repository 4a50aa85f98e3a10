// Applies the drizzle-kit migrations in packages/control-plane/migrations/ (each once, in order).
import { fileURLToPath } from "node:url";
import { drizzle } from "drizzle-orm/node-postgres";
import { migrate as migrateNodePostgres } from "drizzle-orm/node-postgres/migrator";
import type { PgliteDatabase } from "drizzle-orm/pglite";
import { migrate as migratePgliteDatabase } from "drizzle-orm/pglite/migrator";
import type pg from "pg";

export const migrationsFolder = fileURLToPath(new URL("../../migrations", import.meta.url));

// Several control planes may start at once against one PostgreSQL: the first migrates, the others
// wait on this session lock and then find nothing left to do. (An arbitrary constant, "wrenn" in ASCII.)
const MIGRATION_LOCK = 0x7772656e6e;

export async function migratePostgres(pool: pg.Pool): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK]);
    try {
      await migrateNodePostgres(drizzle({ client }), { migrationsFolder });
    } finally {
      await client.query("SELECT pg_advisory_unlock($1)", [MIGRATION_LOCK]);
    }
  } finally {
    client.release();
  }
}

// PGlite has a single connection, so nothing can race it.
export async function migratePglite(db: PgliteDatabase<Record<string, unknown>>): Promise<void> {
  await migratePgliteDatabase(db, { migrationsFolder });
}
