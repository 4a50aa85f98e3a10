import { createWriteStream } from "node:fs";
import { lstat, open, realpath, rename, rm, stat, chmod, type FileHandle } from "node:fs/promises";
import path from "node:path";
import { randomBytes } from "node:crypto";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip, createGzip } from "node:zlib";
import type busboyType from "busboy";
import { Code } from "@connectrpc/connect";
import { envdError, fromSystemError } from "../errors.js";
import { resolveUserPath } from "../identity/paths.js";
import { resolveUser, type SandboxUser } from "../identity/users.js";
import { giveToUser, makeDirsOwnedBy } from "../identity/ownership.js";
import { checkFileSignature, type FileOperation } from "../server/auth.js";
import type { EnvdContext } from "../server/context.js";
import { sendError, sendJson, type HttpRequest, type HttpResponse } from "./respond.js";

/** What POST /files answers for each file written (E2B envd's shape). */
interface WrittenFile {
  name: string;
  type: "file";
  path: string;
}

async function fileRequestUser(ctx: EnvdContext, url: URL, operation: FileOperation): Promise<SandboxUser> {
  const username = url.searchParams.get("username") ?? undefined;
  const signature = url.searchParams.get("signature");
  if (signature !== null) {
    const problem = checkFileSignature(ctx.defaults, {
      path: url.searchParams.get("path") ?? "",
      operation,
      username: username ?? "",
      signature,
      expiration: url.searchParams.get("signature_expiration") ?? undefined,
    });
    if (problem) throw envdError(problem, Code.Unauthenticated);
  }
  return resolveUser(username || undefined, ctx.defaults.defaultUser);
}

/**
 * True when the client asked for gzip alone (what the e2b SDK's `gzip: true` sends). A user
 * agent's default list ("gzip, deflate, br") does not count: compressing every download inside
 * the sandbox would cost CPU nobody asked for.
 */
function asksForGzipOnly(header: string | string[] | undefined): boolean {
  const codings = String(header ?? "")
    .split(",")
    .map((c) => c.split(";")[0]!.trim().toLowerCase())
    .filter(Boolean);
  return codings.length === 1 && codings[0] === "gzip";
}

const DOWNLOAD_CHUNK = 1 << 20;

/**
 * Writes one chunk and settles when it has been handed to the connection, or when the connection
 * closes: Node does not always call a response write's callback when the socket dies mid-write.
 */
function writeChunk(res: HttpResponse, chunk: Buffer): Promise<void> {
  const response = res as NodeJS.WritableStream & { destroyed?: boolean };
  return new Promise((resolve, reject) => {
    const gone = (): void => reject(Object.assign(new Error("the client closed the connection"), { code: "ECONNRESET" }));
    if (response.destroyed) return gone();
    response.once("close", gone);
    response.write(chunk, (err?: Error | null) => {
      response.off("close", gone);
      if (err) reject(err);
      else resolve();
    });
  });
}

/**
 * Sends `size` bytes of `file` through two reused 1 MiB buffers: one is read into while the other
 * is being written, and a buffer is reused only once its write has completed. No chunk is
 * allocated per read, so a download leaves no garbage for V8 to collect late (RSS stays flat).
 */
async function sendFileBody(file: FileHandle, size: number, res: HttpResponse): Promise<void> {
  const buffers = [Buffer.allocUnsafe(DOWNLOAD_CHUNK), Buffer.allocUnsafe(DOWNLOAD_CHUNK)] as const;
  // A write fails when the client leaves; it must be caught at once, not when next awaited, or it
  // is an unhandled rejection while the next read is in flight.
  let failure: unknown;
  let writing: Promise<void> = Promise.resolve();
  let sent = 0;
  for (let i = 0; sent < size && failure === undefined; i++) {
    const buffer = buffers[i % 2]!;
    const { bytesRead } = await file.read(buffer, 0, Math.min(DOWNLOAD_CHUNK, size - sent), null);
    if (bytesRead === 0) break; // the file shrank: the client sees a body shorter than Content-Length
    await writing;
    if (failure !== undefined) break;
    writing = writeChunk(res, buffer.subarray(0, bytesRead)).catch((err: unknown) => void (failure ??= err));
    sent += bytesRead;
  }
  await writing;
  if (failure !== undefined) throw failure;
  res.end(); // not awaited: 'finish' never comes if the client leaves now, and nothing is left to do
}

/** GET /files?path=&username=: streams a file's bytes (gzip when the client accepts it). */
export async function handleDownload(ctx: EnvdContext, url: URL, req: HttpRequest, res: HttpResponse): Promise<void> {
  try {
    const user = await fileRequestUser(ctx, url, "read");
    const requested = url.searchParams.get("path");
    if (!requested) throw envdError("query parameter path is required", Code.InvalidArgument);
    const target = resolveUserPath(requested, user);
    const info = await stat(target).catch((err: unknown) => {
      throw fromSystemError(err, "cannot read", target);
    });
    if (info.isDirectory()) throw envdError(`${target} is a directory, not a file`, Code.InvalidArgument);
    if (!info.isFile()) throw envdError(`${target} is not a regular file`, Code.InvalidArgument);
    const file = await open(target, "r").catch((err: unknown) => {
      throw fromSystemError(err, "cannot read", target);
    });
    try {
      const gzip = asksForGzipOnly(req.headers["accept-encoding"]);
      res.writeHead(200, {
        "content-type": "application/octet-stream",
        "content-disposition": `attachment; filename*=UTF-8''${encodeURIComponent(path.basename(target))}`,
        ...(gzip ? { "content-encoding": "gzip" } : { "content-length": info.size }),
      });
      if (gzip) await pipeline(file.createReadStream({ highWaterMark: DOWNLOAD_CHUNK, autoClose: false }), createGzip(), res);
      else await sendFileBody(file, info.size, res);
    } finally {
      await file.close();
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ERR_STREAM_PREMATURE_CLOSE" || code === "ERR_STREAM_DESTROYED" || code === "EPIPE" || code === "ECONNRESET") return; // client went away
    sendError(res, err);
  }
}

/**
 * Writes one upload to `target` without ever exposing a half-written file: the bytes go to a
 * temporary file beside it, which replaces the target only once complete.
 */
async function writeUpload(body: Readable, target: string, user: SandboxUser, gunzip: boolean): Promise<WrittenFile> {
  let destination = target;
  const existing = await lstat(target).catch(() => undefined);
  if (existing?.isSymbolicLink()) destination = await realpath(target).catch(() => target);
  const current = destination === target ? existing : await stat(destination).catch(() => undefined);
  if (current?.isDirectory()) throw envdError(`${target} is a directory; give the path of a file`, Code.InvalidArgument);

  const dir = path.dirname(destination);
  try {
    await makeDirsOwnedBy(dir, user);
  } catch (err) {
    throw fromSystemError(err, "cannot create the directory", dir);
  }
  const temporary = path.join(dir, `.${path.basename(destination)}.wrenn-upload-${randomBytes(6).toString("hex")}`);
  try {
    // A 4 MiB buffer lets the socket's 64 KiB chunks queue while a write is in flight and go to disk
    // as one writev: less CPU per GB than one write per chunk (measured A/B), bounded per upload.
    const sink = createWriteStream(temporary, { mode: current ? current.mode & 0o7777 : 0o644, highWaterMark: 4 << 20 });
    await (gunzip ? pipeline(body, createGunzip(), sink) : pipeline(body, sink));
    if (current) await chmod(temporary, current.mode & 0o7777);
    if (current) await giveToUser(temporary, { ...user, uid: current.uid, gid: current.gid });
    else await giveToUser(temporary, user);
    await rename(temporary, destination);
  } catch (err) {
    await rm(temporary, { force: true }).catch(() => undefined); // may never have been created
    if ((err as { code?: string }).code === "Z_DATA_ERROR") throw envdError(`the upload for ${target} is not valid gzip`, Code.InvalidArgument);
    throw fromSystemError(err, "cannot write", target);
  }
  return { name: path.basename(target), type: "file", path: target };
}

/**
 * POST /files?path=&username=: multipart uploads (one part per file, the part's filename or the
 * `path` parameter naming its destination) or one application/octet-stream body for `path`.
 */
export async function handleUpload(ctx: EnvdContext, url: URL, req: HttpRequest, res: HttpResponse): Promise<void> {
  try {
    const user = await fileRequestUser(ctx, url, "write");
    const pathParam = url.searchParams.get("path") || undefined;
    const contentType = String(req.headers["content-type"] ?? "");
    const gunzip = /\bgzip\b/i.test(String(req.headers["content-encoding"] ?? ""));
    let written: WrittenFile[];
    if (contentType.startsWith("multipart/form-data")) {
      written = await receiveMultipart(req, user, pathParam, gunzip);
    } else {
      if (!pathParam) throw envdError("query parameter path is required for a non-multipart upload", Code.InvalidArgument);
      written = [await writeUpload(req as Readable, resolveUserPath(pathParam, user), user, gunzip)];
    }
    ctx.log.info({ files: written.length, user: user.name }, "files uploaded");
    sendJson(res, 200, written);
  } catch (err) {
    // The body was not read to its end: this HTTP/1.1 connection cannot carry another request.
    if (!req.complete && req.httpVersionMajor === 1 && !res.headersSent) res.setHeader("connection", "close");
    sendError(res, err);
  }
}

let busboyModule: Promise<typeof busboyType> | undefined;
/** busboy is loaded on the first multipart upload, keeping it out of an idle envd's memory. */
const loadBusboy = (): Promise<typeof busboyType> => (busboyModule ??= import("busboy").then((m) => m.default));

async function receiveMultipart(req: HttpRequest, user: SandboxUser, pathParam: string | undefined, gunzip: boolean): Promise<WrittenFile[]> {
  const busboy = await loadBusboy();
  return new Promise((resolve, reject) => {
    let parser: busboyType.Busboy;
    try {
      // A part's filename is the destination path, sent as raw UTF-8 (undici's FormData, Go's multipart), not latin1.
      parser = busboy({ headers: req.headers as Record<string, string>, preservePath: true, defParamCharset: "utf8", limits: { fieldSize: 1 << 20 } });
    } catch (err) {
      reject(envdError(`malformed multipart request: ${(err as Error).message}`, Code.InvalidArgument));
      return;
    }
    const writes: Promise<WrittenFile>[] = [];
    let failed = false;
    const fail = (err: unknown): void => {
      if (failed) return;
      failed = true;
      req.unpipe?.(parser);
      reject(err);
    };
    parser.on("file", (_field, stream, info) => {
      if (failed) return void stream.resume();
      const destination = pathParam ?? info.filename;
      if (!destination) {
        stream.resume();
        return fail(envdError("each file part needs a filename (its destination path), or give ?path=", Code.InvalidArgument));
      }
      let target: string;
      try {
        target = resolveUserPath(destination, user);
      } catch (err) {
        stream.resume();
        return fail(err);
      }
      const write = writeUpload(stream, target, user, gunzip);
      write.catch((err: unknown) => {
        stream.resume();
        fail(err);
      });
      writes.push(write);
    });
    parser.on("error", (err: Error) => fail(envdError(`malformed multipart request: ${err.message}`, Code.InvalidArgument)));
    parser.on("close", () => {
      Promise.all(writes).then((files) => {
        if (failed) return;
        if (files.length === 0) return fail(envdError("the multipart request holds no file part", Code.InvalidArgument));
        resolve(files);
      }, fail);
    });
    req.on("error", fail);
    req.pipe(parser);
  });
}
