// hostagent.v1.HostAgentService: each handler validates what only the edge can (shapes, paths),
// then asks the sandbox manager, template store or metrics; errors become Connect codes in
// errors.ts. Handlers are plain functions over typed messages.
import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  HostAgentService,
  MetricPointSchema,
  OnTimeout,
  RuntimeInfoSchema,
  SandboxExitSchema,
  SandboxInfoSchema,
  TemplateInfoSchema,
  WarmPoolInfoSchema,
  type MetricPoint,
  type WriteFileStreamRequest,
} from "@wrenn/proto/hostagent";
import { availableParallelism } from "node:os";
import { statfs } from "node:fs/promises";
import { hostMemoryBytes } from "../host/memory.js";
import { InvalidRequestError } from "../sandbox/errors.js";
import { readConsoleLog } from "../sandbox/logs/console-log.js";
import type { SandboxManager, Sandbox } from "../sandbox/manager.js";
import type { MetricsSampler } from "../sandbox/metrics/sampler.js";
import type { RuntimeName, RuntimeProbe } from "../sandbox/runtime/driver.js";
import { flattenRootfs, snapshotLayer } from "../sandbox/storage/snapshot.js";
import { validateTemplateName, type TemplateStore } from "../sandbox/storage/templates.js";
import { toConnectError } from "./errors.js";

export const AGENT_VERSION = "0.1.0";
export const PLATFORM_TEAM_ID = "00000000-0000-0000-0000-000000000000";
const DEFAULT_EXEC_TIMEOUT_SEC = 30;
const FILESYSTEM_SNAPSHOT_NOTE =
  "filesystem only: this runtime (gVisor, hostinet) cannot checkpoint memory; sandboxes created from this snapshot boot afresh from its files";

const VM_SNAPSHOT_NOTE =
  "memory and disk: qemu sandboxes created from this snapshot restore its memory (its processes run on) instead of booting; gVisor ones boot from its files";

export interface ServiceContext {
  manager: SandboxManager;
  templates: TemplateStore;
  metrics: MetricsSampler;
  probes: RuntimeProbe[];
  defaultRuntime: RuntimeName;
  dataDir: string;
  /** The port proxy's port, reported by GetHostInfo (known once the proxy listens). */
  proxyPort: () => number;
  /** Called after Terminate has answered: destroy everything and exit. */
  terminate: () => void;
}

export function hostAgentService(context: ServiceContext): ServiceImpl<typeof HostAgentService> {
  const { manager, templates, metrics } = context;
  return {
    createSandbox: unary(async (req) => {
      const sandbox = await manager.create({
        sandboxId: req.sandboxId,
        template: req.template,
        runtime: req.runtime,
        vcpus: req.vcpus,
        memoryMb: req.memoryMb,
        diskSizeMb: req.diskSizeMb,
        timeoutSec: req.timeoutSec,
        onTimeout: req.onTimeout === OnTimeout.KILL ? "kill" : "pause",
        envVars: req.envVars,
        allowOut: req.allowOut,
        denyOut: req.denyOut,
        metadata: req.metadata,
        envdAccessToken: req.envdAccessToken,
      });
      return {
        sandboxId: sandbox.record.id,
        status: sandbox.record.status,
        hostIp: sandbox.network.sandboxAddress,
        runtime: sandbox.record.runtime,
        envdVersion: (await sandbox.envd.version().catch(() => undefined)) ?? "",
        fromWarmPool: sandbox.fromWarmPool ?? false,
      };
    }),

    destroySandbox: unary(async (req) => {
      await manager.destroy(req.sandboxId);
      return {};
    }),

    pauseSandbox: unary(async (req) => {
      await manager.pause(req.sandboxId, { hibernate: req.hibernate });
      return {};
    }),

    resumeSandbox: unary(async (req) => {
      const sandbox = await manager.resume(req.sandboxId, req.timeoutSec);
      return { sandboxId: sandbox.record.id, status: sandbox.record.status, hostIp: sandbox.network.sandboxAddress };
    }),

    exec: unary(async (req) => {
      const sandbox = manager.running(req.sandboxId);
      const result = await sandbox.envd.exec({
        cmd: requireText(req.cmd, "cmd"),
        args: req.args,
        envs: req.envs,
        cwd: req.cwd || undefined,
        user: req.user || undefined,
        stdin: req.stdin.length > 0 ? req.stdin : undefined,
        timeoutMs: execTimeoutMs(req.timeoutSec),
      });
      manager.touch(sandbox);
      return { stdout: result.stdout, stderr: result.stderr, exitCode: result.exitCode, error: result.error ?? "" };
    }),

    execStream: stream(async function* (req, handlerContext) {
      const sandbox = manager.running(req.sandboxId);
      const events = sandbox.envd.execStream(
        { cmd: requireText(req.cmd, "cmd"), args: req.args, envs: req.envs, cwd: req.cwd || undefined, user: req.user || undefined, timeoutMs: execTimeoutMs(req.timeoutSec) },
        handlerContext.signal,
      );
      for await (const event of events) {
        manager.touch(sandbox);
        if (event.type === "start") yield { event: { case: "start", value: { pid: event.pid } } };
        else if (event.type === "end") yield { event: { case: "end", value: { exitCode: event.exitCode, error: event.error ?? "" } } };
        else yield { event: { case: "data", value: { output: { case: event.type, value: event.data } } } };
      }
    }),

    listSandboxes: unary(async () => ({
      sandboxes: manager.list().map(sandboxInfo),
      autoPausedSandboxIds: manager.drainAutoPaused(),
      exited: manager.drainExited().map((exit) => create(SandboxExitSchema, exit)),
    })),

    writeFile: unary(async (req) => {
      const sandbox = manager.running(req.sandboxId);
      await sandbox.envd.writeFile(requirePath(req.path), req.content, { user: req.user || undefined });
      return {};
    }),

    readFile: unary(async (req) => {
      const sandbox = manager.running(req.sandboxId);
      return { content: await sandbox.envd.readFile(requirePath(req.path), { user: req.user || undefined }) };
    }),

    writeFileStream: unary(async (requests: AsyncIterable<WriteFileStreamRequest>) => {
      const iterator = requests[Symbol.asyncIterator]();
      const first = await iterator.next();
      if (first.done || first.value.content.case !== "meta") {
        throw new InvalidRequestError("the first WriteFileStream message must carry meta (sandbox_id, path)");
      }
      const meta = first.value.content.value;
      const sandbox = manager.running(meta.sandboxId);
      async function* chunks(): AsyncIterable<Uint8Array> {
        for (let next = await iterator.next(); !next.done; next = await iterator.next()) {
          if (next.value.content.case !== "chunk") throw new InvalidRequestError("only the first WriteFileStream message may carry meta");
          manager.touch(sandbox);
          yield next.value.content.value;
        }
      }
      const written = await sandbox.envd.writeFile(requirePath(meta.path), chunks(), { user: meta.user || undefined });
      return { sizeBytes: BigInt(written) };
    }),

    readFileStream: stream(async function* (req) {
      const sandbox = manager.running(req.sandboxId);
      for await (const chunk of sandbox.envd.readFileStream(requirePath(req.path), { user: req.user || undefined })) {
        manager.touch(sandbox);
        yield { chunk };
      }
    }),

    createSnapshot: unary(async (req) => {
      const name = requireText(req.name, "name");
      validateTemplateName(name);
      const source = manager.get(req.sandboxId);
      if (source.driver.rootfsKind === "block") {
        // A VM: its memory too, so sandboxes made from the template start where it stood.
        const info = await manager.snapshotVm(req.sandboxId, name, req.keepRunning, req.teamId || PLATFORM_TEAM_ID);
        return { name: info.name, sizeBytes: BigInt(info.sizeBytes), includesMemory: true, note: VM_SNAPSHOT_NOTE };
      }
      const info = await manager.whileFrozen(req.sandboxId, req.keepRunning, (sandbox) =>
        snapshotLayer(templates, {
          name,
          parent: sandbox.record.template,
          upperDir: sandbox.disk.upperDir,
          teamId: req.teamId || PLATFORM_TEAM_ID,
          metadata: { sourceSandbox: sandbox.record.id },
        }),
      );
      // Snapshots copy files only, on every runtime today (memory snapshots come with the VM drivers).
      return { name: info.name, sizeBytes: BigInt(info.sizeBytes), includesMemory: false, note: FILESYSTEM_SNAPSHOT_NOTE };
    }),

    deleteSnapshot: unary(async (req) => {
      await manager.deleteTemplate(requireText(req.name, "name"));
      return {};
    }),

    flattenRootfs: unary(async (req) => {
      const name = requireText(req.name, "name");
      validateTemplateName(name);
      const info = await manager.whileFrozen(req.sandboxId, false, (sandbox) =>
        flattenRootfs(templates, { name, mergedDir: sandbox.rootfsDir, teamId: req.teamId || PLATFORM_TEAM_ID, metadata: { sourceSandbox: sandbox.record.id } }),
      );
      return { sizeBytes: BigInt(info.sizeBytes) };
    }),

    pingSandbox: unary(async (req) => {
      const sandbox = manager.get(req.sandboxId);
      manager.touch(sandbox);
      return { status: sandbox.record.status, sandboxAddress: sandbox.network.sandboxAddress };
    }),

    setSandboxTimeout: unary(async (req) => {
      await manager.setTimeout(req.sandboxId, req.timeoutSec);
      return {};
    }),

    terminate: unary(async () => {
      setImmediate(context.terminate);
      return {};
    }),

    getSandboxMetrics: unary(async (req) => {
      manager.get(req.sandboxId);
      const tiers = metrics.metrics(req.sandboxId);
      return { points: tiers ? tiers.points(req.range || "10m").map(metricPoint) : [] };
    }),

    // Not activity: reading a sandbox's logs must not keep it from being auto-paused.
    getSandboxLogs: unary(async (req) => {
      const sandbox = manager.get(req.sandboxId);
      const entries = await readConsoleLog(sandbox.dir, { startMs: Number(req.startUnixMs), limit: req.limit });
      return { entries: entries.map(({ timestampMs, ...entry }) => ({ ...entry, timestampUnixMs: BigInt(timestampMs) })) };
    }),

    flushSandboxMetrics: unary(async (req) => {
      manager.get(req.sandboxId);
      const flushed = metrics.metrics(req.sandboxId)?.flush();
      return {
        points10m: (flushed?.["10m"] ?? []).map(metricPoint),
        points2h: (flushed?.["2h"] ?? []).map(metricPoint),
        points24h: (flushed?.["24h"] ?? []).map(metricPoint),
      };
    }),

    getHostInfo: unary(async () => {
      const memory = await hostMemoryBytes();
      const disk = await statfs(context.dataDir);
      const all = manager.list();
      return {
        agentVersion: AGENT_VERSION,
        runtimes: context.probes.map((probe) => create(RuntimeInfoSchema, probe)),
        defaultRuntime: context.defaultRuntime,
        cpuCount: availableParallelism(),
        memoryTotalBytes: BigInt(memory.totalBytes),
        memoryAvailableBytes: BigInt(memory.availableBytes),
        diskTotalBytes: BigInt(disk.blocks * disk.bsize),
        diskAvailableBytes: BigInt(disk.bavail * disk.bsize),
        sandboxesRunning: all.filter((s) => s.record.status === "running").length,
        sandboxesPaused: all.filter((s) => s.record.status === "paused").length,
        slotsTotal: manager.slots.total,
        slotsUsed: manager.slots.used,
        warmPools: manager.warmPool.status().map((pool) => create(WarmPoolInfoSchema, pool)),
        proxyPort: context.proxyPort(),
      };
    }),

    listTemplates: unary(async () => ({
      templates: templates.list().map((template) =>
        create(TemplateInfoSchema, {
          name: template.name,
          teamId: template.teamId,
          kind: template.kind,
          parent: template.parent ?? "",
          sizeBytes: BigInt(template.sizeBytes),
          createdAtUnix: BigInt(template.createdAt),
          metadata: template.metadata,
          inUse: templates.usersOf(template.name).length,
        }),
      ),
    })),
  };
}

function sandboxInfo(sandbox: Sandbox) {
  const { record } = sandbox;
  return create(SandboxInfoSchema, {
    sandboxId: record.id,
    status: record.status,
    template: record.template,
    vcpus: record.vcpus,
    memoryMb: record.memoryMb,
    hostIp: sandbox.network.sandboxAddress,
    createdAtUnix: BigInt(Math.floor(record.createdAt / 1000)),
    lastActiveAtUnix: BigInt(Math.floor(record.lastActiveAt / 1000)),
    timeoutSec: record.timeoutSec,
    onTimeout: record.onTimeout === "kill" ? OnTimeout.KILL : OnTimeout.PAUSE,
    diskSizeMb: record.diskSizeMb,
    runtime: record.runtime,
    metadata: record.metadata,
  });
}

function metricPoint(point: { timestampUnix: number; cpuPct: number; memBytes: number; diskBytes: number }): MetricPoint {
  return create(MetricPointSchema, {
    timestampUnix: BigInt(Math.floor(point.timestampUnix)),
    cpuPct: point.cpuPct,
    memBytes: BigInt(Math.round(point.memBytes)),
    diskBytes: BigInt(Math.round(point.diskBytes)),
  });
}

function requireText(value: string, field: string): string {
  if (!value) throw new InvalidRequestError(`${field} is required`);
  return value;
}

/** A path inside the sandbox: resolved by envd in the sandbox's own root, so it cannot leave it. */
function requirePath(value: string): string {
  requireText(value, "path");
  if (value.includes("\0")) throw new InvalidRequestError("path must not contain NUL bytes");
  return value;
}

function execTimeoutMs(timeoutSec: number): number {
  if (timeoutSec < 0) throw new InvalidRequestError(`timeout_sec must not be negative, got ${timeoutSec}`);
  return (timeoutSec || DEFAULT_EXEC_TIMEOUT_SEC) * 1000;
}

/** Wraps a unary (or client-streaming) handler so every error leaves as a Connect error. */
function unary<A extends unknown[], R>(handler: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
  return async (...args: A) => {
    try {
      return await handler(...args);
    } catch (err) {
      throw toConnectError(err);
    }
  };
}

/** The same for server-streaming handlers. */
function stream<A extends unknown[], R>(handler: (...args: A) => AsyncGenerator<R>): (...args: A) => AsyncGenerator<R> {
  return async function* (...args: A) {
    try {
      yield* handler(...args);
    } catch (err) {
      throw toConnectError(err);
    }
  };
}
