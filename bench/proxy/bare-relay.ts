// The floor for the edge proxy's overhead: the least a Node process in the path can do — pass
// every request to envd at one address over a kept-alive connection and pipe the answer back,
// with no routing, no access check, no replay. Prints `relay <port>` once listening.
// Usage: node --import tsx bench/proxy/bare-relay.ts <sandbox address>
import http from "node:http";

const target = process.argv[2];
if (!target) throw new Error("usage: bare-relay.ts <sandbox address>");
const agent = new http.Agent({ keepAlive: true, noDelay: true });
const server = http.createServer((req, res) => {
  const upstream = http.request({ host: target, port: 49983, method: req.method, path: req.url, headers: req.headers, agent }, (answer) => {
    res.writeHead(answer.statusCode ?? 502, answer.headers);
    answer.pipe(res);
  });
  upstream.on("error", () => res.destroy());
  req.pipe(upstream);
});
// As the control plane's server (Fastify's default): a client's kept-alive connection is closed by
// the client, never by the relay just as the client reuses it.
server.keepAliveTimeout = 72_000;
server.listen(0, "127.0.0.1", () => {
  const address = server.address();
  console.log(`relay ${typeof address === "object" && address ? address.port : 0}`);
});
process.on("SIGTERM", () => process.exit(0));
