// The floor for the control plane's create → exec overhead: the least an HTTP API in front of a
// host agent can do — Fastify (the control plane's server) taking the same two JSON POSTs and
// passing each to the agent with the control plane's own agent client (Connect over h2c), with no
// auth, no database, no placement, no audit. It answers with the same Server-Timing header
// (`agent`, `total`), so its overhead is measured exactly as the control plane's.
// Prints `forwarder <port>` once listening.
// Usage: node --import tsx bench/control-plane/bare-forwarder.ts <agent host:port> <agent token>
import { randomBytes } from "node:crypto";
import Fastify from "fastify";
import { openAgentClient } from "../../packages/control-plane/src/hosts/agent-client.js";

const [address, token] = process.argv.slice(2);
if (!address || !token) throw new Error("usage: bare-forwarder.ts <agent host:port> <agent token>");
const { client } = openAgentClient({ address, token });
const app = Fastify({ logger: false });

const timing = (started: number, agentMs: number) => `agent;dur=${agentMs.toFixed(2)}, total;dur=${(performance.now() - started).toFixed(2)}`;

app.post<{ Body: { template: string; timeoutSec?: number } }>("/v1/sandboxes", async (request, reply) => {
  const started = performance.now();
  const sandboxId = `fwd${randomBytes(6).toString("hex")}`;
  const calling = performance.now();
  await client.createSandbox({ sandboxId, template: request.body.template, timeoutSec: request.body.timeoutSec ?? 0, envdAccessToken: randomBytes(24).toString("hex") }, { timeoutMs: 120_000 });
  const agentMs = performance.now() - calling;
  return reply.code(201).header("server-timing", timing(started, agentMs)).send({ id: sandboxId });
});

app.post<{ Params: { id: string }; Body: { cmd: string; args?: string[] } }>("/v1/sandboxes/:id/exec", async (request, reply) => {
  const started = performance.now();
  const calling = performance.now();
  const result = await client.exec({ sandboxId: request.params.id, cmd: request.body.cmd, args: request.body.args ?? [], timeoutSec: 60 });
  const agentMs = performance.now() - calling;
  return reply
    .header("server-timing", timing(started, agentMs))
    .send({ stdout: Buffer.from(result.stdout).toString(), stderr: Buffer.from(result.stderr).toString(), exitCode: result.exitCode });
});

app.delete<{ Params: { id: string } }>("/v1/sandboxes/:id", async (request) => {
  await client.destroySandbox({ sandboxId: request.params.id });
  return {};
});

await app.listen({ host: "127.0.0.1", port: 0 });
const listening = app.server.address();
console.log(`forwarder ${typeof listening === "object" && listening ? listening.port : 0}`);
process.on("SIGTERM", () => void app.close().then(() => process.exit(0)));
