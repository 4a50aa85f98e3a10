// A private PostgreSQL cluster the control plane runs itself, in its data directory, from Debian's
// postgresql package: the embedded default when that package is installed (`make up` installs it).
// PGlite runs PostgreSQL as WASM inside the control plane's own thread, one query at a time, at
// ~1–2.5 ms a query; this cluster answers in a fraction of that, in its own processes.
//
// It listens on a unix socket only, in a directory only the server's user can enter (root passes
// anyway), with trust authentication: no TCP port, nothing another local user can reach. The server
// is the control plane's child with a parent-death signal, so it never outlives the control plane.
// As root it runs as the `postgres` user, since PostgreSQL refuses to run as root.
import { spawn, execFile, execFileSync, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, openSync, readdirSync, readFileSync, statSync } from "node:fs";
import { chown, mkdir, mkdtemp, rm } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import pg from "pg";

const run = promisify(execFile);
const POSTGRES_ROOT = "/usr/lib/postgresql";
/** The socket's name within its directory (the port number names it; nothing listens on TCP). */
const SOCKET_PORT = 5432;
/** A unix socket path must fit in sockaddr_un's 108 bytes. */
const MAX_SOCKET_PATH = 100;
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 30_000;

const isRoot = process.getuid?.() === 0;

/** bin/ of the newest PostgreSQL under /usr/lib/postgresql, or undefined. */
export function postgresBinDir(): string | undefined {
  if (!existsSync(POSTGRES_ROOT)) return undefined;
  const versions = readdirSync(POSTGRES_ROOT)
    .filter((version) => existsSync(path.join(POSTGRES_ROOT, version, "bin", "postgres")) && existsSync(path.join(POSTGRES_ROOT, version, "bin", "initdb")))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] === undefined ? undefined : path.join(POSTGRES_ROOT, versions[0], "bin");
}

/** Why a private cluster cannot run on this machine (in `dir`, when given), or false when it can. */
export function embeddedPostgresUnavailable(dir?: string): string | false {
  if (!postgresBinDir()) return "PostgreSQL is not installed under /usr/lib/postgresql (apt-get install postgresql-15; `make up` and `make test` do)";
  const user = isRoot ? serverUser() : undefined;
  if (isRoot && !user) return "there is no `postgres` user to run PostgreSQL as (PostgreSQL refuses to run as root)";
  return dir === undefined ? false : unreachableParent(path.resolve(dir), user);
}

export interface EmbeddedPostgresOptions {
  /** The cluster's home: `data/` (the cluster), `server.log`, and the socket when its path is short enough. */
  dir: string;
  /**
   * false for throwaway clusters (tests, benchmarks): no fsync, no synchronous commit. The default
   * keeps PostgreSQL's own durability: a committed write survives a crash of the machine.
   */
  durable?: boolean;
}

export interface EmbeddedPostgres {
  /** postgresql:// URL to the `postgres` database over the unix socket, as the `postgres` superuser. */
  url: string;
  /** The directory holding the socket. */
  socketDir: string;
  /** Stops the server (fast shutdown) and waits for it; safe to call twice. */
  stop(): Promise<void>;
}

/** Initialises the cluster on first use, starts the server and waits until it accepts queries. */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<EmbeddedPostgres> {
  const unavailable = embeddedPostgresUnavailable(options.dir);
  if (unavailable) throw new Error(unavailable);
  const bin = postgresBinDir()!;
  const user = isRoot ? serverUser()! : undefined;
  const dir = path.resolve(options.dir);
  const dataDir = path.join(dir, "data");
  const durable = options.durable ?? true;

  await mkdir(dir, { recursive: true, mode: 0o700 });
  if (user) await chown(dir, user.uid, user.gid);

  const asServer = (program: string, args: string[]): [string, string[]] => {
    const privileges = user ? ["--reuid", String(user.uid), "--regid", String(user.gid), "--init-groups"] : [];
    // The parent-death signal makes the server a true child: it shuts down (fast) if we die.
    return ["setpriv", ["--pdeathsig", "SIGINT", ...privileges, path.join(bin, program), ...args]];
  };

  if (!existsSync(path.join(dataDir, "PG_VERSION"))) {
    // A half-made data dir from an interrupted first start holds nothing: start it over.
    await rm(dataDir, { recursive: true, force: true });
    const [file, argv] = asServer("initdb", ["-D", dataDir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", ...(durable ? [] : ["--no-sync"])]);
    try {
      await run(file, argv, { cwd: dir, timeout: START_TIMEOUT_MS, env: { ...process.env, LC_ALL: "C" } });
    } catch (error) {
      await rm(dataDir, { recursive: true, force: true });
      throw new Error(`initdb in ${dataDir} failed: ${((error as { stderr?: string }).stderr ?? String(error)).trim()}`, { cause: error });
    }
  }

  let socketDir = dir;
  let ownSocketDir = false;
  if (path.join(dir, `.s.PGSQL.${SOCKET_PORT}`).length > MAX_SOCKET_PATH) {
    socketDir = await mkdtemp("/tmp/wrenn-pgsock-");
    ownSocketDir = true;
    if (user) await chown(socketDir, user.uid, user.gid);
  }

  const logFile = path.join(dir, "server.log");
  const logFd = openSync(logFile, "a", 0o600);
  const settings = [
    "listen_addresses=",
    `port=${SOCKET_PORT}`,
    `unix_socket_directories=${socketDir}`,
    "unix_socket_permissions=0700",
    ...(durable ? [] : ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]),
  ];
  const [file, argv] = asServer("postgres", ["-D", dataDir, ...settings.flatMap((setting) => ["-c", setting])]);
  let server: ChildProcess;
  try {
    // Its own process group: a terminal's Ctrl-C reaches the control plane, which closes its
    // connections and then stops the server, instead of the server vanishing under them.
    server = spawn(file, argv, { cwd: dir, stdio: ["ignore", logFd, logFd], env: { ...process.env, LC_ALL: "C" }, detached: true });
  } finally {
    closeSync(logFd);
  }
  const exited = new Promise<void>((resolve) => server.once("exit", () => resolve()));
  let running = true;
  void exited.then(() => (running = false));

  // `localhost` only makes it a valid URL: the host parameter (the socket directory) wins.
  const url = `postgresql://postgres@localhost/postgres?host=${encodeURIComponent(socketDir)}`;
  const stop = async () => {
    if (running) {
      server.kill("SIGINT");
      const stopped = await Promise.race([exited.then(() => true), sleep(STOP_TIMEOUT_MS).then(() => false)]);
      if (!stopped) {
        server.kill("SIGQUIT");
        await exited;
      }
    }
    if (ownSocketDir) await rm(socketDir, { recursive: true, force: true });
  };

  try {
    await waitUntilReady(url, () => running, logFile);
  } catch (error) {
    await stop();
    throw error;
  }
  return { url, socketDir, stop };
}

/** Polls until the server answers a query; fails with the end of its log if it exits first. */
async function waitUntilReady(url: string, running: () => boolean, logFile: string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    const client = new pg.Client({ connectionString: url });
    try {
      await client.connect();
      await client.query("select 1");
      return;
    } catch (error) {
      if (!running() || Date.now() > deadline) {
        const log = existsSync(logFile) ? readFileSync(logFile, "utf8").slice(-3000) : "";
        const why = running() ? `did not accept connections within ${START_TIMEOUT_MS / 1000} s` : "exited";
        throw new Error(`the embedded PostgreSQL server ${why}: ${(error as Error).message}\n${log}`, { cause: error });
      }
      await sleep(50);
    } finally {
      await client.end().catch(() => {});
    }
  }
}

/** Why the server's user could not enter `dir` (a parent closed to it), or false. Existing parents only. */
function unreachableParent(dir: string, user: { uid: number; gid: number } | undefined): string | false {
  if (!user) return false;
  for (let parent = path.dirname(dir); ; parent = path.dirname(parent)) {
    const info = existsSync(parent) ? statSync(parent) : undefined;
    const passes = !info || (info.uid === user.uid ? info.mode & 0o100 : info.gid === user.gid ? info.mode & 0o010 : info.mode & 0o001);
    if (!passes) {
      return `PostgreSQL runs as the postgres user, which cannot enter ${parent} (mode ${(info!.mode & 0o777).toString(8)}); choose a data directory whose parents others may pass through`;
    }
    if (parent === path.dirname(parent)) return false;
  }
}

/** The `postgres` user's ids, looked up once (choosing, checking and starting all ask). */
let postgresUser: { uid: number; gid: number } | null | undefined;

function serverUser(): { uid: number; gid: number } | undefined {
  if (postgresUser === undefined) {
    try {
      // name:password:uid:gid:…
      const [, , uid, gid] = execFileSync("getent", ["passwd", "postgres"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).split(":");
      postgresUser = { uid: Number(uid), gid: Number(gid) };
    } catch {
      postgresUser = null;
    }
  }
  return postgresUser ?? undefined;
}
