// One handle on the control plane's database: a PostgreSQL server when given a URL; otherwise an
// embedded one in the data directory: a private PostgreSQL cluster (embedded-postgres.ts) or PGlite.
import { existsSync } from "node:fs";
import { chmod, mkdir, stat } from "node:fs/promises";
import path from "node:path";
import { PGlite } from "@electric-sql/pglite";
import type { PgDatabase, PgQueryResultHKT } from "drizzle-orm/pg-core";
import { drizzle as drizzlePglite } from "drizzle-orm/pglite";
import { drizzle as drizzlePostgres } from "drizzle-orm/node-postgres";
import pg from "pg";
import { embeddedPostgresUnavailable, startEmbeddedPostgres } from "./embedded-postgres.js";
import { migratePglite, migratePostgres } from "./migrate.js";
import * as schema from "./schema.js";

/** The query interface both drivers share; repositories take this (a transaction is one too). */
export type Db = PgDatabase<PgQueryResultHKT, typeof schema>;

export type Driver = "pglite" | "postgres";

/** Which embedded database a control plane without DATABASE_URL runs. */
export type EmbeddedChoice = "postgres" | "pglite";

export interface Database {
  db: Db;
  driver: Driver;
  close(): Promise<void>;
}

export interface DatabaseOptions {
  /** postgres:// or postgresql:// URL of a PostgreSQL server; when absent, an embedded database is used. */
  url?: string;
  /** The embedded database keeps its files in `<dataDir>/postgres` or `<dataDir>/pglite`; without one, PGlite lives in memory (tests). */
  dataDir?: string;
  /** The embedded database to run (with a dataDir); PGlite when absent. See chooseEmbedded(). */
  embedded?: EmbeddedChoice;
  /**
   * Told when an idle PostgreSQL connection breaks (server restart, network): the pool drops it and
   * reconnects on the next query. Without a listener node-postgres would crash the process.
   */
  onConnectionError?: (error: Error) => void;
}

/** A statement written as text with `$1…` parameters, and the name it is prepared by on PostgreSQL. */
export interface RawStatement {
  name: string;
  text: string;
  values: unknown[];
}

/**
 * Runs `statement` on the database's own client (the pg pool, or PGlite), not through drizzle:
 * for the hottest reads, where building the statement through drizzle was a large share of the
 * control plane's CPU. On PostgreSQL it is prepared by name once per connection. Not for a
 * transaction's handle (which has no client of its own).
 */
export async function rawRows<Row>(db: Db, statement: RawStatement): Promise<Row[]> {
  const client = (db as { $client?: unknown }).$client;
  if (client instanceof pg.Pool) return (await client.query<Row & pg.QueryResultRow>({ name: statement.name, text: statement.text, values: statement.values })).rows;
  if (client instanceof PGlite) return (await client.query<Row>(statement.text, statement.values)).rows;
  throw new Error("rawRows runs on a database's own handle, not a transaction's");
}

/** Opens the database and applies pending migrations before returning. */
export async function openDatabase(options: DatabaseOptions = {}): Promise<Database> {
  if (options.url !== undefined && /^postgres(ql)?:\/\//.test(options.url)) {
    return openPostgres(options.url, options.onConnectionError ?? (() => {}));
  }
  if (options.url !== undefined) throw new Error(`database URL must start with postgres:// or postgresql://`);
  if (options.embedded === "postgres") {
    if (options.dataDir === undefined) throw new Error("the embedded PostgreSQL needs a data directory");
    return openEmbeddedPostgres(options.dataDir, options.onConnectionError ?? (() => {}));
  }
  return openPglite(options.dataDir);
}

/**
 * The embedded database for `dataDir`: the one already there (a PGlite database is kept, not
 * moved), else a private PostgreSQL cluster when this machine can run one, else PGlite. `reason`
 * says why when it is not PostgreSQL.
 */
export function chooseEmbedded(dataDir: string, requested?: EmbeddedChoice): { choice: EmbeddedChoice; reason?: string } {
  if (requested) return { choice: requested };
  if (existsSync(path.join(dataDir, "pglite")) && !existsSync(path.join(dataDir, "postgres"))) {
    return { choice: "pglite", reason: `${path.join(dataDir, "pglite")} holds this control plane's data` };
  }
  // The data dir itself is opened to the server's user when the cluster starts; its parents must be.
  const unavailable = embeddedPostgresUnavailable(dataDir);
  return unavailable ? { choice: "pglite", reason: unavailable } : { choice: "postgres" };
}

async function openEmbeddedPostgres(dataDir: string, onConnectionError: (error: Error) => void): Promise<Database> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  // The server runs as the postgres user and must pass through the data dir to its own directory
  // in it; pass (x) without list (r) keeps the secret key and admin key files (0600) as private.
  const mode = (await stat(dataDir)).mode & 0o777;
  if ((mode & 0o001) === 0) await chmod(dataDir, mode | 0o011);
  const cluster = await startEmbeddedPostgres({ dir: path.join(dataDir, "postgres") });
  try {
    const database = await openPostgres(cluster.url, onConnectionError);
    return {
      ...database,
      close: async () => {
        await database.close();
        await cluster.stop();
      },
    };
  } catch (error) {
    await cluster.stop();
    throw error;
  }
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
