// The control plane's settings, read once from the environment at start.
import path from "node:path";
import { z } from "zod";

export interface RateLimit {
  /** Requests one API key may make per window (the burst it may send at once). */
  max: number;
  windowMs: number;
}

export interface ControlPlaneConfig {
  /** Address the API listens on. 127.0.0.1 by default, so a fresh install is not open to the network. */
  host: string;
  port: number;
  /** postgres:// URL of a PostgreSQL server; when absent the embedded PGlite in `dataDir` is used. */
  databaseUrl: string | undefined;
  /** Where the control plane keeps its files: the PGlite database and the bootstrap admin key. */
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
}

const count = (fallback: number) => z.coerce.number().int().positive().default(fallback);

const environment = z.object({
  WRENN_HOST: z.string().min(1).default("127.0.0.1"),
  WRENN_PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\//, "must start with postgres:// or postgresql://").optional(),
  WRENN_DATA_DIR: z.string().min(1).default(".data/control-plane"),
  WRENN_PUBLIC_URL: z.url().optional(),
  WRENN_TRUST_PROXY: z.enum(["true", "false", "1", "0"]).default("false"),
  WRENN_LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  WRENN_SANDBOX_CREATE_RATE_MAX: count(40),
  WRENN_SANDBOX_CREATE_RATE_WINDOW_MS: count(2000),
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
  return {
    host: values.WRENN_HOST,
    port: values.WRENN_PORT,
    databaseUrl: values.DATABASE_URL,
    dataDir: path.resolve(cwd, values.WRENN_DATA_DIR),
    publicUrl: values.WRENN_PUBLIC_URL?.replace(/\/+$/, ""),
    trustProxy: values.WRENN_TRUST_PROXY === "true" || values.WRENN_TRUST_PROXY === "1",
    logLevel: values.WRENN_LOG_LEVEL,
    bodyLimitBytes: 1024 * 1024,
    sandboxCreateRateLimit: { max: values.WRENN_SANDBOX_CREATE_RATE_MAX, windowMs: values.WRENN_SANDBOX_CREATE_RATE_WINDOW_MS },
  };
}
