// Where the API is and how to call it: options first, then WRENN_* environment variables.
import { AuthenticationError, InvalidArgumentError } from "../errors.js";

export interface ConnectionOptions {
  /** The control plane's URL; default `WRENN_API_URL`, else `http://127.0.0.1:8080` (`make up`). */
  apiUrl?: string;
  /** An API key (`wrn_…`); default `WRENN_API_KEY`. */
  apiKey?: string;
  /** The domain sandbox ports are served under (`<port>-<id>.<domain>`); default `WRENN_DOMAIN`, else `localhost`. */
  domain?: string;
  /** Default time limit of one call, retries included (streams: until the answer starts); default 60 s. */
  requestTimeoutMs?: number;
  /** Retries of a transient failure (refused or reset connection, 502/503/504, 429); default 3. */
  maxRetries?: number;
}

/** Options every call takes. */
export interface CallOptions {
  /** Cancels the call (and, for a command, ends it in the sandbox). */
  signal?: AbortSignal;
  /** This call's time limit, instead of `requestTimeoutMs`. */
  timeoutMs?: number;
}

export interface ConnectionConfig {
  apiUrl: string;
  apiKey: string;
  domain: string;
  requestTimeoutMs: number;
  maxRetries: number;
}

export const DEFAULT_API_URL = "http://127.0.0.1:8080";
export const DEFAULT_REQUEST_TIMEOUT_MS = 60_000;
export const DEFAULT_MAX_RETRIES = 3;

export function resolveConnection(options: ConnectionOptions = {}, env: NodeJS.ProcessEnv = process.env): ConnectionConfig {
  const apiKey = options.apiKey ?? (env.WRENN_API_KEY || undefined);
  if (!apiKey) throw new AuthenticationError("no API key: pass apiKey or set WRENN_API_KEY", { code: "no_api_key" });
  const apiUrl = (options.apiUrl ?? (env.WRENN_API_URL || DEFAULT_API_URL)).replace(/\/+$/, "");
  try {
    const url = new URL(apiUrl);
    if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error(url.protocol);
  } catch {
    throw new InvalidArgumentError(`apiUrl "${apiUrl}" is not an http(s) URL: pass apiUrl or set WRENN_API_URL, e.g. http://127.0.0.1:8080`, {
      code: "invalid_api_url",
    });
  }
  return {
    apiUrl,
    apiKey,
    domain: options.domain ?? (env.WRENN_DOMAIN || "localhost"),
    requestTimeoutMs: options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
    maxRetries: options.maxRetries ?? DEFAULT_MAX_RETRIES,
  };
}
