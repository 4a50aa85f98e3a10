// The control plane's settings, read once from the environment at start, and the secret key.
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import { DEFAULT_CONTROL_PLANE_NICE } from "./priority.js";
import type { EmbeddedChoice } from "./db/database.js";

export interface RateLimit {
  /** Requests one API key may make per window (the burst it may send at once). */
  max: number;
  windowMs: number;
}

export interface ControlPlaneConfig {
  /** Address the API listens on. 127.0.0.1 by default, so a fresh install is not open to the network. */
  host: string;
  port: number;
  /** postgres:// URL of a PostgreSQL server; when absent an embedded database in `dataDir` is used. */
  databaseUrl: string | undefined;
  /** Which embedded database to run; when absent, chosen by chooseEmbedded() (PostgreSQL when installed). */
  embeddedDatabase: EmbeddedChoice | undefined;
  /** Where the control plane keeps its files: the embedded database, the secret key and the bootstrap admin key. */
  dataDir: string;
  /** The URL users reach the API at (behind a proxy, say); printed and put in the OpenAPI servers. */
  publicUrl: string | undefined;
  /** Trust X-Forwarded-For for the client IP in the audit log; only behind a proxy you run. */
  trustProxy: boolean;
  logLevel: string;
  /** Largest JSON request body accepted; file uploads set their own limit per route. */
  bodyLimitBytes: number;
  /** Sandbox creates per API key: on average 20/s, up to 40 at once. */
  sandboxCreateRateLimit: RateLimit;
  /** 64 hex digits sealing the agents' tokens in the database; when absent, `<dataDir>/secret-key`. */
  secretKeyHex: string | undefined;
  /** Sandbox ports are reached at `<port>-<sandboxId>.<domain>` on the API's own port (the edge proxy). */
  domain: string;
  /**
   * The edge proxy reaches envd at the sandbox's own address when the sandbox's host is this
   * machine (its agent on loopback), one proxy hop fewer (docs/control-plane.md "Edge proxy").
   * WRENN_EDGE_DIRECT=false sends everything through the host's port proxy. Default true.
   */
  edgeDirect?: boolean;
  /** The control plane's niceness (-20..19; priority.ts): by default -10, ahead of the sandboxes; 0 keeps the default. */
  nice: number;
  /** How long the edge proxy trusts a running sandbox's location without a read (default 3 s; no variable: for tests). */
  edgeLocationTtlMs?: number;
  /** An agent on this machine to add as a host at start, without a registration token (`make up`). */
  localAgent: { address: string; tokenFile: string } | undefined;
}

const count = (fallback: number) => z.coerce.number().int().positive().default(fallback);

const environment = z.object({
  WRENN_HOST: z.string().min(1).default("127.0.0.1"),
  WRENN_PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\//, "must start with postgres:// or postgresql://").optional(),
  WRENN_DATA_DIR: z.string().min(1).default(".data/control-plane"),
  WRENN_EMBEDDED_DB: z.enum(["postgres", "pglite"]).optional(),
  WRENN_PUBLIC_URL: z.url().optional(),
  WRENN_TRUST_PROXY: z.enum(["true", "false", "1", "0"]).default("false"),
  WRENN_LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  WRENN_SANDBOX_CREATE_RATE_MAX: count(40),
  WRENN_SANDBOX_CREATE_RATE_WINDOW_MS: count(2000),
  WRENN_SECRET_KEY: z.string().regex(/^[0-9a-fA-F]{64}$/, "must be 64 hex digits (32 bytes)").optional(),
  WRENN_LOCAL_AGENT: z.string().regex(/^[A-Za-z0-9.\-[\]:]+:\d{1,5}$/, "must be host:port").optional(),
  WRENN_LOCAL_AGENT_TOKEN_FILE: z.string().min(1).optional(),
  WRENN_DOMAIN: z.string().regex(/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/i, "must be a domain name, e.g. wrenn.example.com").default("localhost"),
  WRENN_EDGE_DIRECT: z.enum(["true", "false", "1", "0"]).default("true"),
  WRENN_NICE: z.coerce.number().int().min(-20).max(19).default(DEFAULT_CONTROL_PLANE_NICE),
});

/** Reads the configuration; throws naming the variable when one is malformed. Empty values count as unset. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): ControlPlaneConfig {
  const set = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== undefined && value !== ""));
  const parsed = environment.safeParse(set);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.join(".")}: ${issue.message}`);
    throw new Error(`invalid control plane configuration: ${problems.join("; ")}`);
  }
  const values = parsed.data;
  if ((values.WRENN_LOCAL_AGENT === undefined) !== (values.WRENN_LOCAL_AGENT_TOKEN_FILE === undefined)) {
    throw new Error("invalid control plane configuration: set WRENN_LOCAL_AGENT and WRENN_LOCAL_AGENT_TOKEN_FILE together");
  }
  return {
    host: values.WRENN_HOST,
    port: values.WRENN_PORT,
    databaseUrl: values.DATABASE_URL,
    embeddedDatabase: values.WRENN_EMBEDDED_DB,
    dataDir: path.resolve(cwd, values.WRENN_DATA_DIR),
    publicUrl: values.WRENN_PUBLIC_URL?.replace(/\/+$/, ""),
    trustProxy: values.WRENN_TRUST_PROXY === "true" || values.WRENN_TRUST_PROXY === "1",
    logLevel: values.WRENN_LOG_LEVEL,
    bodyLimitBytes: 1024 * 1024,
    sandboxCreateRateLimit: { max: values.WRENN_SANDBOX_CREATE_RATE_MAX, windowMs: values.WRENN_SANDBOX_CREATE_RATE_WINDOW_MS },
    secretKeyHex: values.WRENN_SECRET_KEY,
    domain: values.WRENN_DOMAIN.toLowerCase(),
    edgeDirect: values.WRENN_EDGE_DIRECT === "true" || values.WRENN_EDGE_DIRECT === "1",
    nice: values.WRENN_NICE,
    localAgent:
      values.WRENN_LOCAL_AGENT && values.WRENN_LOCAL_AGENT_TOKEN_FILE
        ? { address: values.WRENN_LOCAL_AGENT, tokenFile: path.resolve(cwd, values.WRENN_LOCAL_AGENT_TOKEN_FILE) }
        : undefined,
  };
}

export const SECRET_KEY_FILE = "secret-key";

/**
 * The 32-byte key that seals agent tokens: WRENN_SECRET_KEY, else `<dataDir>/secret-key`, made
 * (0600) on first start. Losing it means re-adding every host, so it is never regenerated.
 */
export async function loadSecretKey(config: Pick<ControlPlaneConfig, "secretKeyHex" | "dataDir">): Promise<Buffer> {
  if (config.secretKeyHex) return Buffer.from(config.secretKeyHex, "hex");
  const file = path.join(config.dataDir, SECRET_KEY_FILE);
  if (existsSync(file)) {
    const hex = (await readFile(file, "utf8")).trim();
    if (!/^[0-9a-fA-F]{64}$/.test(hex)) throw new Error(`${file} does not hold 64 hex digits; restore it from a backup or set WRENN_SECRET_KEY`);
    return Buffer.from(hex, "hex");
  }
  const key = randomBytes(32);
  await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  const partial = `${file}.${process.pid}.tmp`;
  await writeFile(partial, `${key.toString("hex")}\n`, { mode: 0o600 });
  await rename(partial, file);
  return key;
}
