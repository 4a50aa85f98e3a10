// The control plane's serving of the built dashboard (packages/control-plane/src/api/dashboard-static.ts)
// on a Fastify instance of its own: the SPA's paths, the assets' caching and compression, the 503
// without a build, and that nothing of the API's is shadowed.
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { gunzipSync } from "node:zlib";
import { after, before, describe, test } from "node:test";
import Fastify, { type FastifyInstance } from "fastify";
import { dashboardStatic } from "../../control-plane/src/api/dashboard-static.js";

describe("the dashboard's static files", () => {
  let dir: string;
  let app: FastifyInstance;
  let missing: FastifyInstance;
  const script = `console.log(${JSON.stringify("x".repeat(5000))});`;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "wrenn-dash-static-"));
    await mkdir(path.join(dir, "assets"));
    await writeFile(path.join(dir, "index.html"), "<!doctype html><title>Wrenn</title>");
    await writeFile(path.join(dir, "assets", "index-abc123.js"), script);
    await writeFile(path.join(dir, "secret.txt"), "not an asset");
    app = Fastify();
    await dashboardStatic(app, { dir });
    app.get("/v1/sandboxes", async () => ({ api: true }));
    app.get("/sandboxes", async () => ({ e2b: true }));
    missing = Fastify();
    await dashboardStatic(missing, { dir: path.join(dir, "nope") });
  });
  after(async () => {
    await app?.close();
    await missing?.close();
    await rm(dir, { recursive: true, force: true });
  });

  test("/ and /ui/* answer index.html, not cached, with the page's security headers", async () => {
    for (const url of ["/", "/ui", "/ui/sandboxes", "/ui/sandboxes/abc123", "/ui/templates?x=1"]) {
      const response = await app.inject({ url });
      assert.equal(response.statusCode, 200, url);
      assert.match(String(response.headers["content-type"]), /^text\/html/);
      assert.equal(response.headers["cache-control"], "no-cache");
      assert.match(String(response.headers["content-security-policy"]), /script-src 'self'/);
      assert.equal(response.headers["x-frame-options"], "DENY");
      assert.equal(response.body, "<!doctype html><title>Wrenn</title>");
    }
  });

  test("hashed assets are immutable, gzipped for clients that accept it", async () => {
    const plain = await app.inject({ url: "/assets/index-abc123.js" });
    assert.equal(plain.statusCode, 200);
    assert.equal(plain.headers["cache-control"], "public, max-age=31536000, immutable");
    assert.match(String(plain.headers["content-type"]), /^text\/javascript/);
    assert.equal(plain.body, script);
    const gzipped = await app.inject({ url: "/assets/index-abc123.js", headers: { "accept-encoding": "gzip, br" } });
    assert.equal(gzipped.headers["content-encoding"], "gzip");
    assert.equal(gunzipSync(gzipped.rawPayload).toString(), script);
    assert.ok(gzipped.rawPayload.length < script.length / 10);
  });

  test("nothing outside assets/ is served, and unknown assets are 404", async () => {
    for (const url of ["/assets/nope.js", "/assets/..%2Fsecret.txt", "/assets/%2e%2e%2fsecret.txt", "/secret.txt", "/assets/../secret.txt"]) {
      const response = await app.inject({ url });
      assert.equal(response.statusCode, 404, url);
      assert.doesNotMatch(response.body, /not an asset/);
    }
  });

  test("API paths are never shadowed: /v1 and the e2b paths reach their routes", async () => {
    assert.deepEqual((await app.inject({ url: "/v1/sandboxes" })).json(), { api: true });
    assert.deepEqual((await app.inject({ url: "/sandboxes" })).json(), { e2b: true });
  });

  test("without a build, / answers 503 saying to run make dashboard", async () => {
    for (const url of ["/", "/ui/sandboxes"]) {
      const response = await missing.inject({ url });
      assert.equal(response.statusCode, 503);
      assert.match(response.body, /make dashboard/);
    }
  });
});
