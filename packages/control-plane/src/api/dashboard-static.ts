// The dashboard (packages/dashboard, built by `make dashboard` into its dist/) served at `/`:
// `GET /` and `GET /ui/*` (the SPA's own routes) answer index.html, never cached; Vite's hashed
// files under `/assets/` are immutable, kept in memory (with a gzip copy) once read. API paths
// (/v1, /openapi.json, /docs, /health, the e2b paths) are other routes and never shadowed.
// Without a build, `/` answers 503 saying how to make one. No authentication here: the SPA signs
// in through /v1/auth/login and everything it shows comes from the API.
import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";

/** packages/dashboard/dist, from this file's place in packages/control-plane/src/api/. */
export const DEFAULT_DASHBOARD_DIR = fileURLToPath(new URL("../../../dashboard/dist/", import.meta.url));

const CONTENT_TYPES: Record<string, string> = {
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".html": "text/html; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".woff2": "font/woff2",
  ".woff": "font/woff",
  ".ttf": "font/ttf",
  ".json": "application/json",
  ".map": "application/json",
  ".txt": "text/plain; charset=utf-8",
};
const COMPRESSIBLE = new Set([".js", ".mjs", ".css", ".svg", ".json", ".map", ".txt", ".html"]);
/** Vite's output names: one flat directory of hashed files. Anything else (.., /, %) is not ours. */
const ASSET_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$/;

/** The page's own rules: scripts and styles from this origin only (styles inline too: xterm and uPlot set them), API calls and the terminal WebSocket to it, never framed. */
const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "font-src 'self' data:",
  "connect-src 'self'",
  "frame-ancestors 'none'",
  "base-uri 'self'",
  "form-action 'self'",
].join("; ");

interface Asset {
  body: Buffer;
  gzipped: Buffer | undefined;
  type: string;
}

export interface DashboardStaticOptions {
  /** The built SPA (index.html, assets/); default packages/dashboard/dist, or WRENN_DASHBOARD_DIR. */
  dir?: string;
}

export async function dashboardStatic(app: FastifyInstance, options: DashboardStaticOptions = {}): Promise<void> {
  const dir = options.dir ?? process.env.WRENN_DASHBOARD_DIR ?? DEFAULT_DASHBOARD_DIR;
  const assets = new Map<string, Asset>();

  // index.html is read on every request (it is small): a `make dashboard` while the control plane
  // runs is picked up at the next page load.
  const index = async (_request: FastifyRequest, reply: FastifyReply) => {
    let html: Buffer;
    try {
      html = await readFile(path.join(dir, "index.html"));
    } catch {
      return reply
        .code(503)
        .header("content-type", "text/plain; charset=utf-8")
        .header("cache-control", "no-store")
        .send("The dashboard is not built: run `make dashboard` (it builds packages/dashboard/dist), then reload.\n");
    }
    return reply
      .header("content-type", "text/html; charset=utf-8")
      .header("cache-control", "no-cache")
      .header("content-security-policy", CONTENT_SECURITY_POLICY)
      .header("x-content-type-options", "nosniff")
      .header("x-frame-options", "DENY")
      .header("referrer-policy", "same-origin")
      .send(html);
  };

  const asset = async (request: FastifyRequest<{ Params: { file: string } }>, reply: FastifyReply) => {
    const name = request.params.file;
    let found = assets.get(name);
    if (!found && ASSET_NAME.test(name) && !name.includes("..")) {
      const body = await readFile(path.join(dir, "assets", name)).catch(() => undefined);
      if (body) {
        const ext = path.extname(name).toLowerCase();
        found = { body, type: CONTENT_TYPES[ext] ?? "application/octet-stream", gzipped: COMPRESSIBLE.has(ext) && body.length > 1024 ? gzipSync(body) : undefined };
        assets.set(name, found);
      }
    }
    if (!found) {
      return reply.code(404).header("cache-control", "no-store").send({ code: "not_found", message: `No dashboard asset ${name}; reload the page (a newer build replaced it)` });
    }
    reply.header("content-type", found.type).header("cache-control", "public, max-age=31536000, immutable").header("x-content-type-options", "nosniff");
    if (found.gzipped) {
      reply.header("vary", "accept-encoding");
      if (/\bgzip\b/.test(String(request.headers["accept-encoding"] ?? ""))) return reply.header("content-encoding", "gzip").send(found.gzipped);
    }
    return reply.send(found.body);
  };

  const hidden = { schema: { hide: true }, config: { public: true } };
  app.get("/", hidden, index);
  app.get("/ui", hidden, index);
  app.get("/ui/*", hidden, index);
  app.get<{ Params: { file: string } }>("/assets/:file", hidden, asset);
}
