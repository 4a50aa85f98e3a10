// One handle on the control plane's database: PostgreSQL when given a URL, embedded PGlite otherwise.
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { PGlite } from "@electric-sql/pglite";
import type { PgDatabase, PgQueryResultHKT } from "drizzle-orm/pg-core";
import { drizzle as drizzlePglite } from "drizzle-orm/pglite";
import { drizzle as drizzlePostgres } from "drizzle-orm/node-postgres";
import pg from "pg";
import { migratePglite, migratePostgres } from "./migrate.js";
import * as schema from "./schema.js";

/** The query interface both drivers share; repositories take this (a transaction is one too). */
export type Db = PgDatabase<PgQueryResultHKT, typeof schema>;

export type Driver = "pglite" | "postgres";

export interface Database {
  db: Db;
  driver: Driver;
  close(): Promise<void>;
}

export interface DatabaseOptions {
  /** postgres:// or postgresql:// URL of a PostgreSQL server; when absent, PGlite is used. */
  url?: string;
  /** PGlite keeps its files in `<dataDir>/pglite`; without one it lives in memory (tests). */
  dataDir?: string;
  /**
   * Told when an idle PostgreSQL connection breaks (server restart, network): the pool drops it and
   * reconnects on the next query. Without a listener node-postgres would crash the process.
   */
  onConnectionError?: (error: Error) => void;
}

/** Opens the database and applies pending migrations before returning. */
export async function openDatabase(options: DatabaseOptions = {}): Promise<Database> {
  if (options.url !== undefined && /^postgres(ql)?:\/\//.test(options.url)) {
    return openPostgres(options.url, options.onConnectionError ?? (() => {}));
  }
  if (options.url !== undefined) throw new Error(`database URL must start with postgres:// or postgresql://`);
  return openPglite(options.dataDir);
}

async function openPostgres(url: string, onConnectionError: (error: Error) => void): Promise<Database> {
  const pool = new pg.Pool({ connectionString: url });
  pool.on("error", onConnectionError);
  try {
    await migratePostgres(pool);
  } catch (error) {
    await pool.end();
    throw error;
  }
  const db = drizzlePostgres({ client: pool, schema });
  return { db, driver: "postgres", close: () => pool.end() };
}

async function openPglite(dataDir: string | undefined): Promise<Database> {
  let directory: string | undefined;
  if (dataDir !== undefined) {
    directory = path.join(dataDir, "pglite");
    await mkdir(directory, { recursive: true });
  }
  const client = await PGlite.create(directory);
  const db = drizzlePglite({ client, schema });
  try {
    await migratePglite(db);
  } catch (error) {
    await client.close();
    throw error;
  }
  return { db, driver: "pglite", close: () => client.close() };
}
