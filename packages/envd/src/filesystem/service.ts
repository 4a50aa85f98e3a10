import { lstat, rename, rm, rmdir, stat } from "node:fs/promises";
import path from "node:path";
import { create } from "@bufbuild/protobuf";
import { Code, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { Filesystem, WatchDirResponseSchema, type WatchDirResponse } from "@wrenn/proto/envd/filesystem";
import { envdError, fromSystemError } from "../errors.js";
import { makeDirsOwnedBy } from "../identity/ownership.js";
import { resolveUserPath } from "../identity/paths.js";
import type { SandboxUser } from "../identity/users.js";
import { callerUser, type EnvdContext } from "../server/context.js";
import { keepaliveInterval, withKeepalive } from "../server/keepalive.js";
import { entryInfo } from "./entry-info.js";
import { listDirectory } from "./list-dir.js";
import type { WatcherRegistry } from "./watchers.js";

/** The caller's account and a function resolving its paths (`~`, relative to home). */
async function caller(ctx: EnvdContext, context: HandlerContext): Promise<{ user: SandboxUser; resolve: (p: string) => string }> {
  const user = await callerUser(ctx, context.requestHeader);
  return { user, resolve: (p) => resolveUserPath(p, user) };
}

/** What WatchDir and CreateWatcher ask for, with the path resolved for the caller. */
function watchOptions(
  req: { path: string; recursive: boolean; includeEntry: boolean; allowNetworkMounts: boolean },
  resolve: (p: string) => string,
) {
  return { root: resolve(req.path), recursive: req.recursive, includeEntry: req.includeEntry, allowNetworkMounts: req.allowNetworkMounts };
}

const keepaliveMessage = (): WatchDirResponse => create(WatchDirResponseSchema, { event: { case: "keepalive", value: {} } });

/** The `filesystem.Filesystem` Connect service, with E2B envd's semantics. */
export function filesystemService(ctx: EnvdContext, watchers: WatcherRegistry): ServiceImpl<typeof Filesystem> {
  return {
    async stat(req, context) {
      const { resolve } = await caller(ctx, context);
      return { entry: await entryInfo(resolve(req.path)) };
    },

    async makeDir(req, context) {
      const { user, resolve } = await caller(ctx, context);
      const dir = resolve(req.path);
      const existing = await stat(dir).catch((err: NodeJS.ErrnoException) => {
        if (err.code === "ENOENT") return undefined;
        throw fromSystemError(err, "create directory", dir);
      });
      if (existing?.isDirectory()) throw envdError(`directory ${dir} already exists`, Code.AlreadyExists);
      if (existing) throw envdError(`cannot create directory ${dir}: a file is in the way`, Code.InvalidArgument);
      let created: string | undefined;
      try {
        created = await makeDirsOwnedBy(dir, user);
      } catch (err) {
        throw fromSystemError(err, "create directory", dir);
      }
      if (created === undefined) throw envdError(`directory ${dir} already exists`, Code.AlreadyExists); // lost a race
      return { entry: await entryInfo(dir) };
    },

    async move(req, context) {
      const { user, resolve } = await caller(ctx, context);
      const source = resolve(req.source);
      const destination = resolve(req.destination);
      await lstat(source).catch((err: unknown) => {
        throw fromSystemError(err, "move", source);
      });
      const parent = path.dirname(destination);
      let firstCreated: string | undefined;
      try {
        firstCreated = await makeDirsOwnedBy(parent, user);
        await rename(source, destination);
      } catch (err) {
        if (firstCreated) await removeCreatedDirectories(parent, firstCreated);
        throw fromSystemError(err, `move ${source} to`, destination);
      }
      return { entry: await entryInfo(destination) };
    },

    async listDir(req, context) {
      const { resolve } = await caller(ctx, context);
      return { entries: await listDirectory(resolve(req.path), Math.max(req.depth, 1)) };
    },

    async remove(req, context) {
      const { resolve } = await caller(ctx, context);
      const target = resolve(req.path);
      try {
        // Go's os.RemoveAll, as E2B's envd: a path that is not there is already removed.
        await rm(target, { recursive: true, force: true });
      } catch (err) {
        throw fromSystemError(err, "remove", target);
      }
      return {};
    },

    async *watchDir(req, context) {
      const { resolve } = await caller(ctx, context);
      const subscription = await watchers.subscribe(watchOptions(req, resolve));
      try {
        // Sent once the watches are in place: whatever the client does after it is seen.
        yield { event: { case: "start", value: {} } };
        const next = async (): Promise<IteratorResult<WatchDirResponse>> => {
          const result = await subscription.events.next();
          if (result.done) return result;
          return { done: false, value: create(WatchDirResponseSchema, { event: { case: "filesystem", value: result.value } }) };
        };
        yield* withKeepalive(next, keepaliveMessage, keepaliveInterval(context.requestHeader), context.signal);
      } finally {
        subscription.close();
      }
    },

    async createWatcher(req, context) {
      const { resolve } = await caller(ctx, context);
      const watcherId = await watchers.createPolled(watchOptions(req, resolve));
      return { watcherId };
    },

    async getWatcherEvents(req) {
      return { events: watchers.takeEvents(req.watcherId) };
    },

    async removeWatcher(req) {
      watchers.removePolled(req.watcherId);
      return {};
    },
  };
}

/** Undoes a mkdir -p: removes the directories from `deepest` up to `first` that are still empty. */
async function removeCreatedDirectories(deepest: string, first: string): Promise<void> {
  for (let dir = deepest; dir.length >= first.length; dir = path.dirname(dir)) {
    if (!(await rmdir(dir).then(() => true, () => false))) return;
    if (dir === first) return;
  }
}
