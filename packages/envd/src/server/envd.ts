import type http from "node:http";
import type http2 from "node:http2";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { ConnectRouter } from "@connectrpc/connect";
import { pino, type Logger } from "pino";
import { Process } from "@wrenn/proto/envd/process";
import { Filesystem } from "@wrenn/proto/envd/filesystem";
import { initialDefaults } from "../state.js";
import { ENVD_VERSION } from "../version.js";
import { processService } from "../process/service.js";
import { ProcessRegistry } from "../process/registry.js";
import { filesystemService } from "../filesystem/service.js";
import { WatcherRegistry } from "../filesystem/watchers.js";
import { handleHttpRoute } from "../http/routes.js";
import { sendJson } from "../http/respond.js";
import { hasValidAccessToken, ACCESS_TOKEN_HEADER } from "./auth.js";
import { listenHttp1AndH2c } from "./listen.js";
import type { EnvdContext } from "./context.js";

export interface EnvdOptions {
  port: number;
  host?: string;
  log?: Logger;
  /** Required in X-Access-Token from the first request on, until /init replaces it. */
  accessToken?: string;
}

export interface RunningEnvd {
  port: number;
  context: EnvdContext;
  close(): Promise<void>;
}

/** Starts envd: Connect RPC (process, filesystem) and the HTTP endpoints on one port. */
export async function startEnvd(options: EnvdOptions): Promise<RunningEnvd> {
  const log = options.log ?? pino({ name: "envd" });
  const context: EnvdContext = { defaults: { ...initialDefaults(), accessToken: options.accessToken || undefined }, log };
  const processes = new ProcessRegistry(context);
  const watchers = new WatcherRegistry(context);

  const rpc = connectNodeAdapter({
    routes(router: ConnectRouter) {
      router.service(Process, processService(context, processes));
      router.service(Filesystem, filesystemService(context, watchers));
    },
    // Bound what one unary message may hold; streams are not affected.
    readMaxBytes: 64 * 1024 * 1024,
  });

  const handler = (
    req: http.IncomingMessage | http2.Http2ServerRequest,
    res: http.ServerResponse | http2.Http2ServerResponse,
  ): void => {
    const url = new URL(req.url ?? "/", "http://envd");
    if (url.pathname === "/health") {
      // The host agent reads the version here once, to report it to the control plane (E2B's envdVersion).
      res.writeHead(204, { "x-envd-version": ENVD_VERSION }).end();
      return;
    }
    const signedFileRequest = url.pathname === "/files" && url.searchParams.has("signature");
    if (!signedFileRequest && !hasValidAccessToken(context.defaults, req.headers[ACCESS_TOKEN_HEADER])) {
      sendJson(res, 401, { code: 401, message: "missing or invalid X-Access-Token" });
      return;
    }
    if (handleHttpRoute(context, url, req, res)) return;
    // connect-node waits for 'drain' or 'error' when a stream write must wait, but a response whose
    // client vanished emits only 'close': wake such a writer so its handler ends and cleans up.
    res.once("close", () => {
      if (!res.writableFinished) res.emit("drain");
    });
    rpc(req, res);
  };

  const server = await listenHttp1AndH2c(handler, options.port, options.host ?? "0.0.0.0");
  log.info({ port: server.port }, "envd listening");
  return {
    port: server.port,
    context,
    async close() {
      watchers.closeAll();
      await server.close();
    },
  };
}
