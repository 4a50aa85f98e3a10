// A quiet server-sent event stream still sends a comment line every interval, and stops with it.
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { test } from "node:test";
import { sseKeepalive } from "../src/api/routes/sse.js";

test("a quiet SSE stream carries keepalive comments until it ends", async () => {
  const server = http.createServer(async (_request, response) => {
    response.writeHead(200, { "content-type": "text/event-stream" });
    const stop = sseKeepalive(response, 50);
    await sleep(180);
    response.write("event: exit\ndata: {}\n\n");
    stop();
    await sleep(120); // nothing more after stop()
    response.end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const body = await (await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`)).text();
    const [before, after] = body.split("event: exit\ndata: {}\n\n");
    assert.ok((before!.match(/^: keepalive$/gm) ?? []).length >= 2, body);
    assert.equal(after, "");
  } finally {
    server.close();
  }
});
