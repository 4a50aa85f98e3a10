// wrenn cp: files and directories between this machine and a sandbox, streamed both ways.
// `<id>:/path` names a sandbox path; anything else is local. Directories are walked and recreated.
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readdir, stat } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Sandbox } from "@wrenn/sdk";
import { parse, usageError } from "../command-line/args.js";
import { connectSandbox } from "../connection/sandbox-handle.js";
import { CliError } from "../output/cli-error.js";
import { progressStream } from "../output/progress.js";

const USAGE = "wrenn cp <local> <id>:<path>  |  wrenn cp <id>:<path> <local>   (directories are copied whole)";

interface RemotePath {
  sandboxId: string;
  path: string;
}

function remoteOf(arg: string): RemotePath | undefined {
  const match = /^([a-z0-9]+):(.+)$/.exec(arg);
  return match ? { sandboxId: match[1]!, path: match[2]! } : undefined;
}

export async function cp(argv: string[]): Promise<void> {
  const { positionals } = parse(argv, {}, USAGE, { min: 2, max: 2 });
  const [from, to] = positionals as [string, string];
  const [remoteFrom, remoteTo] = [remoteOf(from), remoteOf(to)];
  if (remoteFrom && remoteTo) throw usageError("copying between two sandboxes is not supported: copy through this machine", USAGE);
  if (!remoteFrom && !remoteTo) throw usageError("one side must be a sandbox path, <id>:<path>", USAGE);
  if (remoteTo) await upload(from, await connectSandbox(remoteTo.sandboxId), remoteTo.path);
  else await download(await connectSandbox(remoteFrom!.sandboxId), remoteFrom!.path, to);
}

/** Into an existing directory (or a path ending in /) the source keeps its name, as with cp(1). */
async function upload(local: string, sandbox: Sandbox, remote: string): Promise<void> {
  const source = await stat(local).catch(() => {
    throw new CliError(`${local}: no such file or directory`);
  });
  let target = remote;
  const existing = await sandbox.files.stat(remote).catch(() => undefined);
  if (remote.endsWith("/") || existing?.type === "dir") target = path.posix.join(remote, path.basename(path.resolve(local)));
  if (!source.isDirectory()) return uploadFile(local, source.size, sandbox, target);
  let files = 0;
  const walk = async (dir: string, into: string): Promise<void> => {
    await sandbox.files.makeDir(into);
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const [localPath, remotePath] = [path.join(dir, entry.name), path.posix.join(into, entry.name)];
      if (entry.isDirectory()) await walk(localPath, remotePath);
      else if (entry.isFile()) {
        await uploadFile(localPath, (await stat(localPath)).size, sandbox, remotePath);
        files++;
      } else process.stderr.write(`wrenn: skipped ${localPath} (not a regular file)\n`);
    }
  };
  await walk(local, target);
  process.stderr.write(`copied ${files} file${files === 1 ? "" : "s"} to ${sandbox.sandboxId}:${target}\n`);
}

async function uploadFile(local: string, size: number, sandbox: Sandbox, remote: string): Promise<void> {
  const counted = createReadStream(local).pipe(progressStream(path.basename(local), size));
  await sandbox.files.write(remote, counted, { timeoutMs: 0 });
}

async function download(sandbox: Sandbox, remote: string, local: string): Promise<void> {
  const source = await sandbox.files.stat(remote);
  let target = local;
  const existing = await stat(local).catch(() => undefined);
  if (local.endsWith("/") || local.endsWith(path.sep) || existing?.isDirectory()) target = path.join(local, path.posix.basename(source.path));
  if (source.type !== "dir") return downloadFile(sandbox, source.path, source.size, target);
  let files = 0;
  // A level at a time, so no depth limit applies.
  const walk = async (dir: string, into: string): Promise<void> => {
    await mkdir(into, { recursive: true });
    for (const entry of await sandbox.files.list(dir)) {
      const localPath = path.join(into, entry.name);
      if (entry.type === "dir") await walk(entry.path, localPath);
      else if (entry.type === "file") {
        await downloadFile(sandbox, entry.path, entry.size, localPath);
        files++;
      } else process.stderr.write(`wrenn: skipped ${entry.path} (${entry.type})\n`);
    }
  };
  await walk(source.path, target);
  process.stderr.write(`copied ${files} file${files === 1 ? "" : "s"} to ${target}\n`);
}

async function downloadFile(sandbox: Sandbox, remote: string, size: number, local: string): Promise<void> {
  const body = await sandbox.files.read(remote, { format: "stream" });
  await pipeline(Readable.fromWeb(body as import("node:stream/web").ReadableStream<Uint8Array>), progressStream(path.posix.basename(remote), size), createWriteStream(local));
}
