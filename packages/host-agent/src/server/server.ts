// The agent's RPC listener: cleartext HTTP/2 (h2c) carrying Connect, gRPC and gRPC-web. The control
// plane is the only caller and speaks HTTP/2, which also carries the client-streaming upload.
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import type { ServiceImpl } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { HostAgentService } from "@wrenn/proto/hostagent";
import { hostTokenInterceptor } from "./auth.js";

export interface RpcServer {
  port: number;
  close(): Promise<void>;
}

export async function startRpcServer(options: { host: string; port: number; token: string; service: ServiceImpl<typeof HostAgentService> }): Promise<RpcServer> {
  const handler = connectNodeAdapter({
    routes: (router) => router.service(HostAgentService, options.service),
    interceptors: [hostTokenInterceptor(options.token)],
    // Uploads arrive as a client stream of chunks; no single message is large.
    readMaxBytes: 16 * 1024 * 1024,
  });
  const server = http2.createServer(handler);
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const session of sessions) session.close();
        server.close(() => resolve());
      }),
  };
}
