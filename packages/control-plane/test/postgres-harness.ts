// A private, throwaway PostgreSQL cluster for tests: its own temp dir, a unix socket in that dir,
// 127.0.0.1 on a free port. As root it runs as the `postgres` user, because initdb refuses root.
import { execFile, execFileSync } from "node:child_process";
import { chown, mkdtemp, readFile, rm, appendFile } from "node:fs/promises";
import { existsSync, readdirSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
const POSTGRES_ROOT = "/usr/lib/postgresql";

/** bin/ of the newest PostgreSQL under /usr/lib/postgresql, or undefined. */
export function postgresBinDir(): string | undefined {
  if (!existsSync(POSTGRES_ROOT)) return undefined;
  const versions = readdirSync(POSTGRES_ROOT)
    .filter((version) => existsSync(path.join(POSTGRES_ROOT, version, "bin", "initdb")))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] === undefined ? undefined : path.join(POSTGRES_ROOT, versions[0], "bin");
}

const isRoot = process.getuid?.() === 0;

/** Why the PostgreSQL tests cannot run here, or false. */
export const skipPostgres: string | false = !postgresBinDir()
  ? "needs PostgreSQL under /usr/lib/postgresql (scripts/install-system-deps.sh installs postgresql-15)"
  : isRoot && !userExists("postgres")
    ? "needs the postgres user to run PostgreSQL as (root cannot)"
    : false;

export interface PostgresCluster {
  /** postgres:// URL over TCP to the `postgres` database as the `postgres` superuser (trust auth). */
  url: string;
  /** The directory holding the data dir, the socket and the server log. */
  dir: string;
  /** Stops the server and removes its directory; safe to call twice. */
  stop(): Promise<void>;
}

export async function startPostgres(): Promise<PostgresCluster> {
  const bin = postgresBinDir();
  if (!bin) throw new Error(String(skipPostgres));
  // As root, not under os.tmpdir(): TMPDIR may point somewhere the postgres user cannot enter.
  const dir = await mkdtemp(path.join(isRoot ? "/tmp" : tmpdir(), "wrenn-pg-"));
  const dataDir = path.join(dir, "data");
  const logFile = path.join(dir, "server.log");
  const asServerUser = async (program: string, args: string[]) => {
    const [file, argv] = isRoot
      ? ["setpriv", ["--reuid=postgres", "--regid=postgres", "--init-groups", path.join(bin, program), ...args]]
      : [path.join(bin, program), args];
    try {
      return await run(file, argv, { cwd: dir, timeout: 60_000, env: { ...process.env, LC_ALL: "C" } });
    } catch (error) {
      const stderr = (error as { stderr?: string }).stderr ?? "";
      throw new Error(`${program} ${args.join(" ")} failed: ${stderr.trim() || String(error)}`, { cause: error });
    }
  };

  let started = false;
  const stopNow = () => {
    if (!started) return;
    started = false;
    const [file, argv] = isRoot
      ? ["setpriv", ["--reuid=postgres", "--regid=postgres", "--init-groups", path.join(bin, "pg_ctl"), "stop", "-D", dataDir, "-m", "immediate", "-w"]]
      : [path.join(bin, "pg_ctl"), ["stop", "-D", dataDir, "-m", "immediate", "-w"]];
    try {
      execFileSync(file, argv, { stdio: "ignore", cwd: dir, timeout: 30_000 });
    } catch {
      // already gone
    }
  };
  // Last resort if the test process exits without calling stop(): no server outlives it.
  process.once("exit", stopNow);

  try {
    if (isRoot) await chown(dir, uidOf("postgres"), gidOf("postgres"));
    await asServerUser("initdb", ["-D", dataDir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"]);
    let port = 0;
    for (let attempt = 1; ; attempt++) {
      port = await freePort();
      await appendFile(
        path.join(dataDir, "postgresql.conf"),
        [
          "",
          "listen_addresses = '127.0.0.1'",
          `port = ${port}`,
          `unix_socket_directories = '${dir}'`,
          // Throwaway data: durability only costs time here.
          "fsync = off",
          "synchronous_commit = off",
          "full_page_writes = off",
          "",
        ].join("\n"),
      );
      try {
        await asServerUser("pg_ctl", ["start", "-D", dataDir, "-l", logFile, "-w", "-t", "60"]);
        started = true;
        break;
      } catch (error) {
        // Another process may have taken the port between freePort() and the bind: try another.
        const log = await readFile(logFile, "utf8").catch(() => "");
        if (attempt >= 3 || !/could not bind|address already in use/i.test(log)) {
          throw new Error(`PostgreSQL did not start: ${String(error)}\n${log}`, { cause: error });
        }
      }
    }
    return {
      url: `postgres://postgres@127.0.0.1:${port}/postgres`,
      dir,
      async stop() {
        if (started) {
          await asServerUser("pg_ctl", ["stop", "-D", dataDir, "-m", "fast", "-w", "-t", "60"]);
          started = false;
        }
        process.removeListener("exit", stopNow);
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    stopNow();
    process.removeListener("exit", stopNow);
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

/** Creates a fresh database in the cluster and returns its URL (each suite gets a clean one). */
export async function createDatabase(cluster: PostgresCluster, name: string): Promise<string> {
  const bin = postgresBinDir()!;
  const url = new URL(cluster.url);
  await run(path.join(bin, "createdb"), ["-h", url.hostname, "-p", url.port, "-U", "postgres", name], { timeout: 30_000 });
  url.pathname = `/${name}`;
  return url.toString();
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

function userExists(user: string): boolean {
  try {
    uidOf(user);
    return true;
  } catch {
    return false;
  }
}

function uidOf(user: string): number {
  return Number(execFileSync("id", ["-u", user], { encoding: "utf8" }).trim());
}

function gidOf(user: string): number {
  return Number(execFileSync("id", ["-g", user], { encoding: "utf8" }).trim());
}
