// Files in a sandbox through /v1/sandboxes/{id}/files…: reads and writes stream both ways, so a
// file never has to fit in memory; paths are the sandbox's (relative ones start at the user's home).
import { Readable } from "node:stream";
import type { FileEntry, WrittenFile } from "../api/types.js";
import type { CallOptions } from "../connection/config.js";
import { dataOf, type Transport } from "../connection/transport.js";
import { ConflictError, ServerError } from "../errors.js";

export interface FileOptions extends CallOptions {
  /** The account the operation runs as; default the sandbox's default user. */
  user?: string;
}

/** What `write` accepts: text (UTF-8), bytes, or a stream of bytes (sent as it comes). */
export type FileData = string | Uint8Array | ArrayBuffer | Blob | ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>;


export class Files {
  constructor(
    private readonly api: Transport,
    private readonly sandboxId: string,
  ) {}

  /** The whole file as text (UTF-8), as bytes, or as a stream that is read as it arrives. */
  read(path: string, options?: FileOptions & { format?: "text" }): Promise<string>;
  read(path: string, options: FileOptions & { format: "bytes" }): Promise<Uint8Array>;
  read(path: string, options: FileOptions & { format: "stream" }): Promise<ReadableStream<Uint8Array>>;
  async read(path: string, options: FileOptions & { format?: "text" | "bytes" | "stream" } = {}): Promise<string | Uint8Array | ReadableStream<Uint8Array>> {
    const format = options.format ?? "text";
    const response = await this.api.send(
      { method: "GET", path: this.filesPath("", { path, user: options.user }) },
      // A stream's time limit covers the answer's start only; text and bytes are read within it.
      { retry: "idempotent", stream: format === "stream", signal: options.signal, timeoutMs: options.timeoutMs },
    );
    if (format === "text") return response.text();
    if (format === "bytes") return new Uint8Array(await response.arrayBuffer());
    if (!response.body) throw new ServerError(`reading ${path}: the answer had no body`, { code: "stream_ended" });
    return response.body as ReadableStream<Uint8Array>;
  }

  /** Writes a file (parents created), replacing it if it exists; a stream is sent as it comes, never held whole. */
  async write(path: string, data: FileData, options: FileOptions = {}): Promise<WrittenFile> {
    const body = toBody(data);
    const response = await this.api.send(
      {
        method: "PUT",
        path: this.filesPath("", { path, user: options.user }),
        headers: { "content-type": "application/octet-stream" },
        body,
      },
      // The same bytes written twice leave the same file; a stream cannot be sent again (transport.ts).
      { retry: "idempotent", signal: options.signal, timeoutMs: options.timeoutMs },
    );
    return (await response.json()) as WrittenFile;
  }

  /** A directory's entries, `depth` levels down (default 1). */
  async list(path: string, options: FileOptions & { depth?: number } = {}): Promise<FileEntry[]> {
    const query = { path, ...(options.depth === undefined ? {} : { depth: options.depth }), ...(options.user === undefined ? {} : { user: options.user }) };
    const result = await this.api.client.GET("/v1/sandboxes/{id}/files/list", { params: { path: this.params, query }, fetch: this.fetch("idempotent", options) });
    return dataOf(result).entries;
  }

  /** Describes a file or directory (NotFoundError when there is none). */
  async stat(path: string, options: FileOptions = {}): Promise<FileEntry> {
    const query = { path, ...(options.user === undefined ? {} : { user: options.user }) };
    return dataOf(await this.api.client.GET("/v1/sandboxes/{id}/files/stat", { params: { path: this.params, query }, fetch: this.fetch("idempotent", options) }));
  }

  /** Whether the path exists. */
  async exists(path: string, options: FileOptions = {}): Promise<boolean> {
    try {
      await this.stat(path, options);
      return true;
    } catch (err) {
      if ((err as { status?: number }).status === 404) return false;
      throw err;
    }
  }

  /** Creates a directory and its parents; false when it exists already. */
  async makeDir(path: string, options: FileOptions = {}): Promise<boolean> {
    try {
      await this.api.client.POST("/v1/sandboxes/{id}/files/mkdir", {
        params: { path: this.params },
        body: { path, ...(options.user === undefined ? {} : { user: options.user }) },
        fetch: this.fetch("unsent", options),
      });
      return true;
    } catch (err) {
      if (err instanceof ConflictError && err.code === "conflict") return false;
      throw err;
    }
  }

  /** Moves (renames) a file or directory; answers the entry at its new place. */
  async move(from: string, to: string, options: FileOptions = {}): Promise<FileEntry> {
    return dataOf(
      await this.api.client.POST("/v1/sandboxes/{id}/files/move", {
        params: { path: this.params },
        body: { from, to, ...(options.user === undefined ? {} : { user: options.user }) },
        fetch: this.fetch("unsent", options),
      }),
    );
  }

  /** Removes a file, or a directory with everything in it. */
  async remove(path: string, options: FileOptions = {}): Promise<void> {
    const query = { path, ...(options.user === undefined ? {} : { user: options.user }) };
    await this.api.client.DELETE("/v1/sandboxes/{id}/files", { params: { path: this.params, query }, fetch: this.fetch("unsent", options) });
  }

  private get params(): { id: string } {
    return { id: this.sandboxId };
  }

  private filesPath(suffix: string, query: { path: string; user: string | undefined }): string {
    const search = new URLSearchParams({ path: query.path, ...(query.user === undefined ? {} : { user: query.user }) });
    return `/v1/sandboxes/${encodeURIComponent(this.sandboxId)}/files${suffix}?${search}`;
  }

  private fetch(retry: "idempotent" | "unsent", options: CallOptions) {
    return this.api.fetchFor({ retry, signal: options.signal, timeoutMs: options.timeoutMs });
  }
}

function toBody(data: FileData): BodyInit {
  if (typeof data === "string" || data instanceof ArrayBuffer || data instanceof Blob) return data;
  if (data instanceof Uint8Array) return data as Uint8Array<ArrayBuffer>;
  if (data instanceof ReadableStream) return data;
  return Readable.toWeb(Readable.from(data, { objectMode: false })) as ReadableStream<Uint8Array>;
}
