// A private, throwaway PostgreSQL cluster for tests and benchmarks: the control plane's own
// embedded cluster (src/db/embedded-postgres.ts) in a temp dir, without durability, plus a fresh
// database per suite.
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import pg from "pg";
import { embeddedPostgresUnavailable, startEmbeddedPostgres } from "../src/db/embedded-postgres.js";

export { postgresBinDir } from "../src/db/embedded-postgres.js";

const isRoot = process.getuid?.() === 0;

/** Why the PostgreSQL tests cannot run here, or false. */
export const skipPostgres: string | false = embeddedPostgresUnavailable();

export interface PostgresCluster {
  /** postgresql:// URL (unix socket) to the `postgres` database as the `postgres` superuser. */
  url: string;
  /** The directory holding the cluster, its socket and the server log. */
  dir: string;
  /** Stops the server and removes its directory; safe to call twice. */
  stop(): Promise<void>;
}

export async function startPostgres(): Promise<PostgresCluster> {
  // As root, not under os.tmpdir(): TMPDIR may point somewhere the postgres user cannot enter.
  const dir = await mkdtemp(path.join(isRoot ? "/tmp" : tmpdir(), "wrenn-pg-"));
  try {
    // The server (the postgres user) passes through to its own directory inside.
    await chmod(dir, 0o711);
    const server = await startEmbeddedPostgres({ dir: path.join(dir, "cluster"), durable: false });
    let stopped = false;
    return {
      url: server.url,
      dir,
      async stop() {
        if (stopped) return;
        stopped = true;
        await server.stop();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

/** Creates a fresh database in the cluster and returns its URL (each suite gets a clean one). */
export async function createDatabase(cluster: PostgresCluster, name: string): Promise<string> {
  const client = new pg.Client({ connectionString: cluster.url });
  await client.connect();
  try {
    await client.query(`create database "${name.replace(/"/g, '""')}"`);
  } finally {
    await client.end();
  }
  const url = new URL(cluster.url);
  url.pathname = `/${name}`;
  return url.toString();
}
