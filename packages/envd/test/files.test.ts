import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, readdir, readlink, rm, stat, writeFile, chmod, mkdir, symlink } from "node:fs/promises";
import { createReadStream } from "node:fs";
import http from "node:http";
import net from "node:net";
import { once } from "node:events";
import { gzipSync } from "node:zlib";
import os from "node:os";
import path from "node:path";
import { startEnvdProcess, type EnvdUnderTest } from "./harness.js";
import { cleanUp, eventually, rssKiB } from "./helpers.js";


function multipart(files: { filename: string; data: Uint8Array | string }[]): FormData {
  const form = new FormData();
  for (const f of files) form.append("file", new Blob([typeof f.data === "string" ? f.data : Buffer.from(f.data)]), f.filename);
  return form;
}

describe("HTTP file transfer", () => {
  let envd: EnvdUnderTest;
  let dir: string;
  const files = (query: Record<string, string>) => `${envd.url}/files?${new URLSearchParams(query)}`;

  before(async () => {
    envd = await startEnvdProcess();
    dir = await mkdtemp(path.join(os.tmpdir(), "wrenn-files-"));
  });
  after(() => cleanUp(() => envd.stop(), () => rm(dir, { recursive: true, force: true })));

  test("a multipart upload writes the file, creating its parent directories, and answers what it wrote", async () => {
    const target = path.join(dir, "a/b/c.txt");
    const res = await fetch(files({ path: target, username: "root" }), { method: "POST", body: multipart([{ filename: target, data: "hello" }]) });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), [{ name: "c.txt", type: "file", path: target }]);
    assert.equal(await readFile(target, "utf8"), "hello");
    const back = await fetch(files({ path: target }));
    assert.equal(back.status, 200);
    assert.equal(back.headers.get("content-length"), "5");
    assert.equal(await back.text(), "hello");
  });

  test("several files go up in one multipart request, each to the path its part names", async () => {
    // Part filenames travel as raw UTF-8 (undici's FormData): non-ASCII names must survive.
    const names = ["m/one.txt", "m/two.txt", "m/sub/three.bin", "m/ünï cödé 😀.txt"].map((n) => path.join(dir, n));
    const res = await fetch(files({ username: "root" }), { method: "POST", body: multipart(names.map((n, i) => ({ filename: n, data: `file ${i}` }))) });
    assert.equal(res.status, 200);
    const written = (await res.json()) as { path: string }[];
    assert.deepEqual(written.map((w) => w.path), names);
    for (const [i, n] of names.entries()) assert.equal(await readFile(n, "utf8"), `file ${i}`);
  });

  test("an octet-stream upload, plain or gzip-encoded, writes its body to path", async () => {
    const target = path.join(dir, "octet.bin");
    const data = randomBytes(300_000);
    let res = await fetch(files({ path: target }), { method: "POST", headers: { "content-type": "application/octet-stream" }, body: data });
    assert.equal(res.status, 200);
    assert.ok((await readFile(target)).equals(data));
    res = await fetch(files({ path: target }), { method: "POST", headers: { "content-type": "application/octet-stream", "content-encoding": "gzip" }, body: gzipSync(Buffer.from("zipped")) });
    assert.equal(res.status, 200);
    assert.equal(await readFile(target, "utf8"), "zipped");
    res = await fetch(files({ path: target }), { method: "POST", headers: { "content-type": "application/octet-stream", "content-encoding": "gzip" }, body: "not gzip" });
    assert.equal(res.status, 400);
    assert.equal(await readFile(target, "utf8"), "zipped", "a failed upload leaves the old file intact");
  });

  test("a download is gzip-encoded when the client asks for gzip, not for a user agent's default list", async () => {
    const target = path.join(dir, "plain.txt");
    await writeFile(target, "x".repeat(10_000));
    const res = await fetch(files({ path: target }), { headers: { "accept-encoding": "gzip" } });
    assert.equal(res.headers.get("content-encoding"), "gzip");
    assert.equal((await res.text()).length, 10_000); // fetch decodes it
    const plain = await fetch(files({ path: target }), { headers: { "accept-encoding": "gzip, deflate, br" } });
    assert.equal(plain.headers.get("content-encoding"), null);
    assert.equal(plain.headers.get("content-length"), "10000");
    await plain.arrayBuffer();
  });

  test("relative paths resolve against the user's home, and files are owned by that user", async () => {
    const res = await fetch(files({ path: "wrenn-upload-test/owned.txt", username: "nobody" }), { method: "POST", headers: { "content-type": "application/octet-stream" }, body: "mine" });
    assert.equal(res.status, 200);
    const home = execFileSync("getent", ["passwd", "nobody"]).toString().split(":")[5]!;
    const [written] = (await res.json()) as { path: string }[];
    assert.equal(written!.path, path.resolve(home, "wrenn-upload-test/owned.txt"));
    if (home !== "/nonexistent") await rm(path.join(home, "wrenn-upload-test"), { recursive: true });
    const owned = path.join(dir, "owned/deep/file.txt");
    await fetch(files({ path: owned, username: "nobody" }), { method: "POST", headers: { "content-type": "application/octet-stream" }, body: "x" });
    for (const p of [owned, path.join(dir, "owned/deep"), path.join(dir, "owned")]) assert.equal((await stat(p)).uid, 65534, p);
    assert.equal((await stat(dir)).uid, 0, "existing parents keep their owner");
  });

  test("replacing a file keeps its mode and writes through a symlink", async () => {
    const target = path.join(dir, "script.sh");
    await writeFile(target, "old");
    await chmod(target, 0o750);
    await symlink(target, path.join(dir, "link.sh"));
    const res = await fetch(files({ path: path.join(dir, "link.sh") }), { method: "POST", headers: { "content-type": "application/octet-stream" }, body: "new" });
    assert.equal(res.status, 200);
    assert.equal(await readFile(target, "utf8"), "new");
    assert.equal((await stat(target)).mode & 0o777, 0o750);
  });

  test("bad file requests get clear errors", async () => {
    const missing = await fetch(files({ path: path.join(dir, "missing") }));
    assert.equal(missing.status, 404);
    assert.match((await missing.json()).message, /no such file/);
    assert.equal((await fetch(files({ path: dir }))).status, 400, "a directory cannot be downloaded");
    assert.equal((await fetch(files({}))).status, 400, "path is required");
    assert.equal((await fetch(files({ path: path.join(dir, "x"), username: "no-such-user" }))).status, 400);
    const toDir = await fetch(files({ path: dir }), { method: "POST", headers: { "content-type": "application/octet-stream" }, body: "x" });
    assert.equal(toDir.status, 400, "a directory cannot be overwritten by a file");
    const noPath = await fetch(files({}), { method: "POST", headers: { "content-type": "application/octet-stream" }, body: "x" });
    assert.equal(noPath.status, 400);
    const broken = await fetch(files({ path: path.join(dir, "broken") }), { method: "POST", headers: { "content-type": "multipart/form-data; boundary=zzz" }, body: "--zzz\r\nnot a part" });
    assert.equal(broken.status, 400);
    const empty = await fetch(files({ path: path.join(dir, "empty") }), { method: "POST", body: new FormData() });
    assert.equal(empty.status, 400);
    assert.equal((await fetch(`${envd.url}/files`, { method: "DELETE" })).status, 405);
    assert.equal((await fetch(`${envd.url}/health`)).status, 204);
  });

  test("a full disk answers 507 and leaves neither a partial file nor the old one damaged", async () => {
    const small = path.join(dir, "tmpfs");
    await mkdir(small);
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", small]);
    try {
      const target = path.join(small, "big.bin");
      await writeFile(target, "precious");
      const res = await fetch(files({ path: target }), { method: "POST", headers: { "content-type": "application/octet-stream" }, body: randomBytes(2 << 20) });
      assert.equal(res.status, 507);
      assert.match((await res.json()).message, /no space left/);
      assert.equal(await readFile(target, "utf8"), "precious");
      assert.deepEqual(await readdir(small), ["big.bin"], "no temporary file is left behind");
    } finally {
      execFileSync("umount", [small]);
    }
  });

  test("signed URLs work without the access token header, and bad or expired signatures are refused", async () => {
    const token = "file-token";
    assert.equal((await envd.init({ accessToken: token })).status, 204);
    try {
      const target = path.join(dir, "signed.txt");
      const sign = (p: string, op: string, user: string, exp?: number) =>
        "v1_" + createHash("sha256").update(`${p}:${op}:${user}:${token}${exp ? `:${exp}` : ""}`).digest("base64").replace(/=+$/, "");
      const up = await fetch(files({ path: target, username: "root", signature: sign(target, "write", "root") }), { method: "POST", headers: { "content-type": "application/octet-stream" }, body: "signed" });
      assert.equal(up.status, 200);
      const later = Math.floor(Date.now() / 1000) + 60;
      const down = await fetch(files({ path: target, signature: sign(target, "read", "", later), signature_expiration: String(later) }));
      assert.equal(await down.text(), "signed");
      assert.equal((await fetch(files({ path: target, signature: sign(target, "write", "") }))).status, 401, "a write signature does not allow reads");
      const past = Math.floor(Date.now() / 1000) - 1;
      assert.equal((await fetch(files({ path: target, signature: sign(target, "read", "", past), signature_expiration: String(past) }))).status, 401);
      assert.equal((await fetch(files({ path: target }))).status, 401);
    } finally {
      await envd.init({ accessToken: "" }, { "X-Access-Token": token });
    }
  });

  test("downloads the client abandons midway leave no open file behind", async () => {
    const source = path.join(dir, "abandoned.bin");
    await writeFile(source, randomBytes(32 << 20));
    const openFiles = async () => (await readdir(`/proc/${envd.pid}/fd`)).length;
    const describeFds = async () => (await Promise.all((await readdir(`/proc/${envd.pid}/fd`)).map((fd) => readlink(`/proc/${envd.pid}/fd/${fd}`).catch(() => "?")))).join(" ");
    const before = await openFiles();
    const initial = await describeFds();
    for (let i = 0; i < 5; i++) {
      // A raw connection, so "walks away" certainly means the TCP connection is gone.
      const socket = net.connect(envd.port, "127.0.0.1");
      await once(socket, "connect");
      socket.write(`GET /files?path=${encodeURIComponent(source)} HTTP/1.1\r\nHost: envd\r\n\r\n`);
      await once(socket, "data"); // some bytes arrived; now walk away
      socket.destroy();
    }
    await eventually(async () => (await openFiles()) <= before || undefined, async () => `envd to close the abandoned files (${before} open before: ${initial}; now: ${await describeFds()})`);
    assert.equal((await fetch(`${envd.url}/health`)).status, 204);
  });

  test("a 100 MB upload and download stream through without growing envd's memory", async () => {
    const source = path.join(dir, "hundred.bin");
    const chunk = randomBytes(1 << 20);
    await writeFile(source, Buffer.concat(Array.from({ length: 100 }, () => chunk)));
    const before = await rssKiB(envd.pid);
    const target = path.join(dir, "hundred-uploaded.bin");
    // A raw request piping the file as fast as the socket takes it: a client that outruns envd's
    // disk writes, so only backpressure keeps the body from piling up in envd's memory.
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(files({ path: target }), { method: "POST", headers: { "content-type": "application/octet-stream", "content-length": 100 << 20 } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on("error", reject);
      createReadStream(source, { highWaterMark: 1 << 20 }).pipe(req);
    });
    assert.equal(status, 200);
    const afterUpload = await rssKiB(envd.pid);
    const form = await fetch(files({ path: target }));
    let size = 0;
    const hash = createHash("sha256");
    for await (const part of form.body as unknown as AsyncIterable<Uint8Array>) {
      size += part.length;
      hash.update(part);
    }
    const afterDownload = await rssKiB(envd.pid);
    assert.equal(size, 100 << 20);
    assert.equal(hash.digest("hex"), createHash("sha256").update(await readFile(source)).digest("hex"));
    assert.ok(afterUpload - before < 40 * 1024, `upload grew RSS by ${afterUpload - before} KiB`);
    assert.ok(afterDownload - before < 40 * 1024, `download grew RSS by ${afterDownload - before} KiB`);
  });
});
