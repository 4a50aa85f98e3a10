// A sandbox's filesystem as its envd serves it (E2B's Connect `filesystem.Filesystem`), reached
// through the port proxy of the sandbox's host: the control plane needs no route into a host's
// sandbox network, and envd resolves every path inside the sandbox, so none can escape it.
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { FileType, Filesystem, type EntryInfo } from "@wrenn/proto/envd/filesystem";
import type { Host, Sandbox } from "../db/schema.js";
import { WrennError, type ErrorCode } from "../errors.js";
import { agentError } from "../hosts/agent-client.js";
import type { HostRegistry } from "../hosts/registry.js";
import { requireStatus } from "./transitions.js";
import type { SandboxService } from "./service.js";

/** envd's port inside every sandbox (E2B's). */
export const ENVD_PORT = 49983;
/** Filesystem calls are metadata operations: anything slower means envd or the host is stuck. */
const CALL_TIMEOUT_MS = 30_000;

export type FileKind = "file" | "dir" | "symlink" | "unknown";

export interface FileEntry {
  name: string;
  /** Absolute, as envd resolved it. */
  path: string;
  type: FileKind;
  size: number;
  mode: number;
  permissions: string;
  owner: string;
  group: string;
  modifiedAt: string | null;
  symlinkTarget?: string;
}

export interface FileCallOptions {
  /** The account the call runs as (its home resolves relative paths); envd's default user when unset. */
  user?: string;
  signal?: AbortSignal;
}

type FilesystemClient = Client<typeof Filesystem>;

const KINDS: Record<FileType, FileKind> = {
  [FileType.UNSPECIFIED]: "unknown",
  [FileType.FILE]: "file",
  [FileType.DIRECTORY]: "dir",
  [FileType.SYMLINK]: "symlink",
};

// envd's codes as the API's; the rest are the host's or the proxy's problem (agentError decides).
const ENVD_ERROR_CODES: Partial<Record<Code, ErrorCode>> = {
  [Code.NotFound]: "not_found",
  [Code.InvalidArgument]: "invalid_argument",
  [Code.AlreadyExists]: "conflict",
  [Code.FailedPrecondition]: "failed_precondition",
  [Code.PermissionDenied]: "forbidden",
};

export class EnvdFiles {
  /** One Connect client per proxy endpoint (HTTP/1.1 keep-alive, binary codec). */
  private readonly clients = new Map<string, FilesystemClient>();

  constructor(private readonly options: { sandboxes: SandboxService; registry: HostRegistry }) {}

  /** The entries under a directory, `depth` levels down (1: its children). */
  async list(teamId: string, sandboxId: string, path: string, options: FileCallOptions & { depth?: number } = {}): Promise<FileEntry[]> {
    const response = await this.call(teamId, sandboxId, options, (client, callOptions) =>
      client.listDir({ path, depth: options.depth ?? 1 }, callOptions),
    );
    return response.entries.map(fileEntry);
  }

  async stat(teamId: string, sandboxId: string, path: string, options: FileCallOptions = {}): Promise<FileEntry> {
    const response = await this.call(teamId, sandboxId, options, (client, callOptions) => client.stat({ path }, callOptions));
    return entryOf(response.entry, path);
  }

  /** Creates a directory and its parents; conflict when it exists already. */
  async makeDir(teamId: string, sandboxId: string, path: string, options: FileCallOptions = {}): Promise<FileEntry> {
    const response = await this.call(teamId, sandboxId, options, (client, callOptions) => client.makeDir({ path }, callOptions));
    return entryOf(response.entry, path);
  }

  /** Renames (moves) a file or directory. */
  async move(teamId: string, sandboxId: string, from: string, to: string, options: FileCallOptions = {}): Promise<FileEntry> {
    const response = await this.call(teamId, sandboxId, options, (client, callOptions) =>
      client.move({ source: from, destination: to }, callOptions),
    );
    return entryOf(response.entry, to);
  }

  /** Removes a file or a directory with everything in it. */
  async remove(teamId: string, sandboxId: string, path: string, options: FileCallOptions = {}): Promise<void> {
    await this.call(teamId, sandboxId, options, (client, callOptions) => client.remove({ path }, callOptions));
  }

  /** Finds the caller's running sandbox and its host's proxy, then makes one envd call through it. */
  private async call<T>(
    teamId: string,
    sandboxId: string,
    options: FileCallOptions,
    rpc: (client: FilesystemClient, callOptions: { headers: Record<string, string>; signal?: AbortSignal; timeoutMs: number }) => Promise<T>,
  ): Promise<T> {
    const sandbox = await this.options.sandboxes.get(teamId, sandboxId);
    requireStatus(sandbox, ["running"]);
    if (!sandbox.hostId) throw new WrennError("unavailable", `sandbox ${sandbox.id} has no host`);
    const { host } = await this.options.registry.connect(sandbox.hostId);
    const { client, token } = this.client(host);
    const headers: Record<string, string> = {
      "x-wrenn-sandbox-id": sandbox.id,
      "x-wrenn-sandbox-port": String(ENVD_PORT),
      "x-wrenn-host-token": token,
    };
    if (sandbox.envdAccessToken) headers["x-access-token"] = sandbox.envdAccessToken;
    if (options.user) headers.authorization = "Basic " + Buffer.from(`${options.user}:`).toString("base64");
    try {
      return await rpc(client, { headers, signal: options.signal, timeoutMs: CALL_TIMEOUT_MS });
    } catch (err) {
      throw envdError(err, sandbox, host);
    }
  }

  private client(host: Host): { client: FilesystemClient; token: string } {
    const { baseUrl, token } = this.options.registry.proxyEndpoint(host);
    let client = this.clients.get(baseUrl);
    if (!client) {
      client = createClient(Filesystem, createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true }));
      this.clients.set(baseUrl, client);
    }
    return { client, token };
  }
}

function envdError(err: unknown, sandbox: Sandbox, host: Host): WrennError {
  const connectError = ConnectError.from(err);
  const code = ENVD_ERROR_CODES[connectError.code];
  if (code) return new WrennError(code, connectError.rawMessage, { cause: connectError });
  // The proxy answers 404 (read by Connect as Unimplemented) when the host no longer runs the sandbox.
  if (connectError.code === Code.Unimplemented) {
    return new WrennError("not_found", `sandbox ${sandbox.id} is no longer running on its host`, { cause: connectError });
  }
  return agentError(err, host.id);
}

function entryOf(entry: EntryInfo | undefined, path: string): FileEntry {
  if (!entry) throw new WrennError("internal", `envd answered without an entry for ${path}`);
  return fileEntry(entry);
}

function fileEntry(entry: EntryInfo): FileEntry {
  return {
    name: entry.name,
    path: entry.path,
    type: KINDS[entry.type] ?? "unknown",
    size: Number(entry.size),
    mode: entry.mode,
    permissions: entry.permissions,
    owner: entry.owner,
    group: entry.group,
    modifiedAt: entry.modifiedTime ? new Date(timestampMs(entry.modifiedTime)).toISOString() : null,
    ...(entry.symlinkTarget === undefined ? {} : { symlinkTarget: entry.symlinkTarget }),
  };
}
