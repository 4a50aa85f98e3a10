// /v1/sandboxes/:id/files…: upload (multipart or a raw body) and download, streamed through the
// host agent without holding a whole file; list, stat, mkdir, move and remove through envd's
// filesystem service on the host's port proxy. envd resolves every path inside the sandbox.
import path from "node:path";
import { Readable } from "node:stream";
import multipart from "@fastify/multipart";
import { z } from "zod";
import { WrennError } from "../../errors.js";
import { EnvdFiles } from "../../sandboxes/envd-files.js";
import { requireService, type ApiDeps, type RouteModule } from "../deps.js";
import { disconnectSignal, SandboxParams, sandboxErrorResponses } from "./sandboxes.js";

/** Uploads may be as large as a sandbox's disk. */
const UPLOAD_LIMIT_BYTES = 10 * 1024 ** 3;
const MAX_FILES_PER_UPLOAD = 1000;

const FilePath = z
  .string()
  .min(1, "a path must not be empty")
  .max(4096)
  .refine((p) => !p.includes("\0"), "a path must not contain NUL bytes")
  .meta({ description: "Inside the sandbox; relative paths start at the user's home" });
const User = z.string().min(1).max(64).optional().meta({ description: "The account the operation runs as (default: the sandbox's default user)" });

const FileEntryView = z
  .object({
    name: z.string(),
    path: z.string(),
    type: z.enum(["file", "dir", "symlink", "unknown"]),
    size: z.number(),
    mode: z.int(),
    permissions: z.string(),
    owner: z.string(),
    group: z.string(),
    modifiedAt: z.iso.datetime().nullable(),
    symlinkTarget: z.string().optional(),
  })
  .meta({ id: "FileEntry" });

// Upload bodies are streams the handlers read themselves: these schemas accept anything and only
// describe the body in the OpenAPI document.
const MultipartUpload = z.unknown().meta({
  description: "One `file` part per file; its file name is used as described above",
  type: "object",
  properties: { file: { type: "array", items: { type: "string", format: "binary" } } },
});
const RawUpload = z.unknown().meta({ description: "The file's bytes", type: "string", format: "binary" });

const WrittenFile = z.object({ path: z.string(), size: z.number() }).meta({ id: "WrittenFile" });

/** The envd client, made on first use from the services (tests of other routes build the API without them). */
function envdFilesOf(deps: ApiDeps): () => EnvdFiles {
  let files: EnvdFiles | undefined;
  return () => (files ??= new EnvdFiles({ sandboxes: requireService(deps, "sandboxes"), registry: requireService(deps, "hosts") }));
}

export const fileRoutes: RouteModule = async (app, { deps }) => {
  const sandboxes = () => requireService(deps, "sandboxes");
  const envdFiles = envdFilesOf(deps);
  const tags = ["files"];

  await app.register(multipart, { limits: { fileSize: UPLOAD_LIMIT_BYTES, files: MAX_FILES_PER_UPLOAD, fields: 100, parts: MAX_FILES_PER_UPLOAD + 100 } });
  // A raw upload's body is handed over as the stream it is, never buffered.
  app.addContentTypeParser("application/octet-stream", (_request, payload, done) => done(null, payload));

  app.post(
    "/sandboxes/:id/files",
    {
      bodyLimit: UPLOAD_LIMIT_BYTES,
      config: { auditAction: "file.write" },
      schema: {
        tags,
        summary: "Upload files (multipart/form-data, one part per file, streamed)",
        description:
          "With `path` naming a directory (an existing one, or ending in /) each part lands there under its file name; with `path` naming a file, " +
          "the one part is written there; without `path` each part's file name is its path. Parent directories are created.",
        operationId: "uploadFiles",
        consumes: ["multipart/form-data"],
        body: MultipartUpload,
        params: SandboxParams,
        querystring: z.strictObject({ path: FilePath.optional(), user: User }),
        response: { 200: z.array(WrittenFile), ...sandboxErrorResponses },
      },
    },
    async (request) => {
      if (!request.isMultipart()) throw new WrennError("invalid_argument", "send multipart/form-data, or PUT a raw application/octet-stream body");
      const { teamId } = request.auth;
      const { id } = request.params;
      const { path: target, user } = request.query;
      request.auditResource = { type: "sandbox", id };
      await sandboxes().get(teamId, id); // not_found before reading anything of another team's upload
      const intoDirectory = target === undefined ? false : target.endsWith("/") || (await isDirectory(envdFiles(), teamId, id, target, user));
      const written: Array<z.infer<typeof WrittenFile>> = [];
      for await (const part of request.files()) {
        const name = part.filename;
        if (!name || name.includes("\0")) {
          part.file.resume();
          throw new WrennError("invalid_argument", "every file part needs a file name without NUL bytes");
        }
        if (target !== undefined && !intoDirectory && written.length > 0) {
          part.file.resume();
          throw new WrennError("invalid_argument", `path ${target} names a file, so the upload may carry one file only; name a directory to send several`);
        }
        const destination = target === undefined ? name : intoDirectory ? path.posix.join(target, path.posix.basename(name)) : target;
        const size = await sandboxes().writeFile(teamId, id, destination, part.file, { user });
        if (part.file.truncated) throw new WrennError("payload_too_large", `${name} is larger than ${UPLOAD_LIMIT_BYTES} bytes`);
        written.push({ path: destination, size });
      }
      if (written.length === 0) throw new WrennError("invalid_argument", "the upload carried no file part");
      return written;
    },
  );

  app.put(
    "/sandboxes/:id/files",
    {
      bodyLimit: UPLOAD_LIMIT_BYTES,
      config: { auditAction: "file.write" },
      schema: {
        tags,
        summary: "Write one file from the raw request body (application/octet-stream, streamed)",
        operationId: "writeFile",
        consumes: ["application/octet-stream"],
        body: RawUpload,
        params: SandboxParams,
        querystring: z.strictObject({ path: FilePath, user: User }),
        response: { 200: WrittenFile, ...sandboxErrorResponses },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      request.auditResource = { type: "sandbox", id };
      const body = request.body as unknown;
      if (!(body instanceof Readable)) throw new WrennError("invalid_argument", "send the file as an application/octet-stream body");
      const signal = disconnectSignal(request, reply);
      const size = await sandboxes().writeFile(request.auth.teamId, id, request.query.path, body, { user: request.query.user, signal });
      return { path: request.query.path, size };
    },
  );

  app.get(
    "/sandboxes/:id/files",
    {
      schema: {
        tags,
        summary: "Download a file (streamed, application/octet-stream)",
        operationId: "readFile",
        params: SandboxParams,
        querystring: z.strictObject({ path: FilePath, user: User }),
        produces: ["application/octet-stream"],
        response: { 200: z.any().meta({ description: "The file's bytes" }), ...sandboxErrorResponses },
      },
    },
    async (request, reply) => {
      const { teamId } = request.auth;
      const { id } = request.params;
      const { path: filePath, user } = request.query;
      const entry = await envdFiles().stat(teamId, id, filePath, { user });
      if (entry.type === "dir") throw new WrennError("invalid_argument", `${filePath} is a directory; list it with GET /v1/sandboxes/${id}/files/list`);
      const signal = disconnectSignal(request, reply);
      const chunks = sandboxes().readFile(teamId, id, filePath, { user, signal });
      // The first chunk before answering, so a failure is still a plain HTTP error.
      const first = await chunks.next();
      async function* body(): AsyncGenerator<Uint8Array> {
        if (first.done) return;
        yield first.value;
        yield* chunks;
      }
      reply.header("content-type", "application/octet-stream");
      reply.header("content-disposition", `attachment; filename*=UTF-8''${encodeURIComponent(path.posix.basename(entry.path || filePath))}`);
      if (entry.type === "file") reply.header("content-length", String(entry.size));
      return reply.send(Readable.from(body(), { objectMode: false }));
    },
  );

  app.get(
    "/sandboxes/:id/files/list",
    {
      schema: {
        tags,
        summary: "List a directory, `depth` levels down",
        operationId: "listFiles",
        params: SandboxParams,
        querystring: z.strictObject({ path: FilePath, depth: z.coerce.number().int().min(1).max(32).default(1), user: User }),
        response: { 200: z.object({ entries: z.array(FileEntryView) }), ...sandboxErrorResponses },
      },
    },
    async (request) => {
      const { path: dir, depth, user } = request.query;
      return { entries: await envdFiles().list(request.auth.teamId, request.params.id, dir, { depth, user }) };
    },
  );

  app.get(
    "/sandboxes/:id/files/stat",
    {
      schema: {
        tags,
        summary: "Describe a file or directory",
        operationId: "statFile",
        params: SandboxParams,
        querystring: z.strictObject({ path: FilePath, user: User }),
        response: { 200: FileEntryView, ...sandboxErrorResponses },
      },
    },
    async (request) => envdFiles().stat(request.auth.teamId, request.params.id, request.query.path, { user: request.query.user }),
  );

  app.post(
    "/sandboxes/:id/files/mkdir",
    {
      config: { auditAction: "file.mkdir" },
      schema: {
        tags,
        summary: "Create a directory and its parents (409 when it exists)",
        operationId: "makeDirectory",
        params: SandboxParams,
        body: z.strictObject({ path: FilePath, user: User }),
        response: { 201: FileEntryView, ...sandboxErrorResponses },
      },
    },
    async (request, reply) => {
      request.auditResource = { type: "sandbox", id: request.params.id };
      const entry = await envdFiles().makeDir(request.auth.teamId, request.params.id, request.body.path, { user: request.body.user });
      reply.code(201);
      return entry;
    },
  );

  app.post(
    "/sandboxes/:id/files/move",
    {
      config: { auditAction: "file.move" },
      schema: {
        tags,
        summary: "Move (rename) a file or directory",
        operationId: "moveFile",
        params: SandboxParams,
        body: z.strictObject({ from: FilePath, to: FilePath, user: User }),
        response: { 200: FileEntryView, ...sandboxErrorResponses },
      },
    },
    async (request) => {
      request.auditResource = { type: "sandbox", id: request.params.id };
      const { from, to, user } = request.body;
      return envdFiles().move(request.auth.teamId, request.params.id, from, to, { user });
    },
  );

  app.delete(
    "/sandboxes/:id/files",
    {
      config: { auditAction: "file.remove" },
      schema: {
        tags,
        summary: "Remove a file, or a directory with everything in it; a path already gone is no error (as E2B)",
        operationId: "removeFile",
        params: SandboxParams,
        querystring: z.strictObject({ path: FilePath, user: User }),
        response: { 204: z.null().meta({ description: "Removed" }), ...sandboxErrorResponses },
      },
    },
    async (request, reply) => {
      request.auditResource = { type: "sandbox", id: request.params.id };
      await envdFiles().remove(request.auth.teamId, request.params.id, request.query.path, { user: request.query.user });
      return reply.code(204).send(null);
    },
  );
};

/** Whether `target` is an existing directory in the sandbox (a missing path is not). */
async function isDirectory(files: EnvdFiles, teamId: string, sandboxId: string, target: string, user: string | undefined): Promise<boolean> {
  try {
    return (await files.stat(teamId, sandboxId, target, { user })).type === "dir";
  } catch (err) {
    if (err instanceof WrennError && err.code === "not_found") return false;
    throw err;
  }
}
