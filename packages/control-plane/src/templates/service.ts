// The template catalogue as a team sees it: platform templates (the all-zeros team, synced from
// hosts at heartbeats) and the team's own, made by snapshotting a sandbox or by a build (steps run
// in a build sandbox, then flattened). Team templates live on the host they were made on, under
// a host-wide unique name (`t-<template id>`), since every team's templates share a host's disk.
// Builds are written to the database as they run (build-log.ts holds their logs), so their status
// and logs outlive the process; a build the previous process left running is failed at start.
import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import type { Db } from "../db/database.js";
import { isUniqueViolation } from "../db/errors.js";
import { createRepositories, type Repositories } from "../db/repositories.js";
import { PLATFORM_TEAM_ID, type Template, type TemplateBuildRow } from "../db/schema.js";
import { WrennError } from "../errors.js";
import { callAgent } from "../hosts/agent-client.js";
import type { HostRegistry } from "../hosts/registry.js";
import type { SandboxService } from "../sandboxes/service.js";
import { NOT_ENDED_STATUSES } from "../sandboxes/transitions.js";
import { BuildLog, storedBuildEvent, type BuildEvent } from "./build-log.js";

export type { BuildEvent } from "./build-log.js";

/** The names a host's disk accepts, which the catalogue's names also keep to. */
const TEMPLATE_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
/** Names the API's own paths take (`/v1/templates/builds`), so no template may have them. */
const RESERVED_TEMPLATE_NAMES = new Set(["builds"]);
const DEFAULT_STEP_TIMEOUT_SEC = 600;
/** Finished builds kept per team (with their logs, each capped at BUILD_OUTPUT_BYTES_KEPT); older ones are deleted. */
export const FINISHED_BUILDS_KEPT_PER_TEAM = 100;
export const INTERRUPTED_BUILD_ERROR = "interrupted: the control plane restarted during the build";

export type BuildStatus = "building" | "ready" | "failed";

export interface TemplateBuild {
  id: string;
  teamId: string;
  name: string;
  baseTemplate: string;
  steps: string[];
  status: BuildStatus;
  error?: string;
  sandboxId?: string;
  startedAt: Date;
  finishedAt?: Date;
}

/** A build this process runs. */
export interface RunningBuild extends TemplateBuild {
  /** Settles with the build (once its log and status are written): the new template, or the build's error. */
  done: Promise<Template>;
}

export interface BuildInput {
  baseTemplate: string;
  name: string;
  /** Shell commands (`/bin/sh -c`), run in order as root; the first that fails fails the build. */
  steps: string[];
  vcpus?: number;
  memoryMb?: number;
  diskSizeMb?: number;
  stepTimeoutSec?: number;
}

export interface TemplateServiceOptions {
  db: Db;
  registry: HostRegistry;
  sandboxes: SandboxService;
  logger: Logger;
}

/** A build this process runs, until it ends; afterwards it is read from the database. */
interface BuildState {
  build: RunningBuild;
  log: BuildLog;
}

const buildFromRow = (row: TemplateBuildRow): TemplateBuild => ({
  id: row.id,
  teamId: row.teamId,
  name: row.name,
  baseTemplate: row.baseTemplate,
  steps: row.steps,
  status: row.status,
  error: row.error ?? undefined,
  sandboxId: row.sandboxId ?? undefined,
  startedAt: row.startedAt,
  finishedAt: row.finishedAt ?? undefined,
});

export class TemplateService {
  private readonly repos: Repositories;
  private readonly log: Logger;
  private readonly builds = new Map<string, BuildState>();

  constructor(private readonly options: TemplateServiceOptions) {
    this.repos = createRepositories(options.db);
    this.log = options.logger.child({ component: "templates" });
  }

  /** Platform templates and the team's own. */
  async list(teamId: string): Promise<Template[]> {
    return this.repos.templates.listVisible(teamId);
  }

  /** The template `name` as the team sees it (its own first), or not_found. */
  async get(teamId: string, name: string): Promise<Template> {
    const template = await this.repos.templates.findVisible(teamId, name);
    if (!template) throw new WrennError("not_found", `template ${name} not found`);
    return template;
  }

  /**
   * Saves a sandbox's files as the team's template `name`, on the sandbox's host. The sandbox is
   * marked paused during the copy (seed 003), and, unless keepRunning, consumed by it.
   */
  async snapshot(teamId: string, sandboxId: string, name: string, options: { keepRunning?: boolean } = {}): Promise<Template> {
    const sandbox = await this.options.sandboxes.get(teamId, sandboxId);
    const template = await this.reserve(teamId, name, "snapshot", { hostId: sandbox.hostId, metadata: { sourceSandbox: sandboxId } });
    const hostTemplateName = template.hostTemplateName!;
    try {
      const result = await this.options.sandboxes.snapshot(teamId, sandboxId, {
        hostTemplateName,
        keepRunning: options.keepRunning ?? false,
        ownerTeamId: teamId,
      });
      await this.repos.hostTemplates.add(result.host.id, { name: hostTemplateName, teamId, kind: "snapshot", sizeBytes: result.sizeBytes });
      const saved = (await this.repos.templates.setSize(template.id, result.sizeBytes)) ?? template;
      this.log.info({ teamId, sandboxId, template: name, hostId: result.host.id, includesMemory: result.includesMemory }, "snapshot template created");
      return saved;
    } catch (err) {
      await this.repos.templates.delete(teamId, name);
      throw err;
    }
  }

  /**
   * Starts a build: a sandbox of `baseTemplate` runs each step, its filesystem is flattened into
   * the team's new template `name`, and the sandbox is gone. Returns at once; follow it with
   * `buildLogs` and `build.done`.
   */
  async build(teamId: string, input: BuildInput): Promise<RunningBuild> {
    if (input.steps.length === 0) throw new WrennError("invalid_argument", "a build needs at least one step");
    await this.options.sandboxes.visibleTemplate(teamId, input.baseTemplate);
    const template = await this.reserve(teamId, input.name, "build", { metadata: { baseTemplate: input.baseTemplate } });
    const id = `bld_${randomUUID().replaceAll("-", "")}`;
    let row: TemplateBuildRow;
    try {
      row = await this.repos.templateBuilds.create({ id, teamId, name: input.name, baseTemplate: input.baseTemplate, steps: [...input.steps], templateId: template.id });
    } catch (err) {
      await this.repos.templates.delete(teamId, input.name).catch(() => undefined);
      throw err;
    }
    const state: BuildState = {
      build: { ...buildFromRow(row), done: undefined as unknown as Promise<Template> },
      log: new BuildLog(id, this.repos.templateBuilds, this.log.child({ buildId: id, teamId })),
    };
    this.builds.set(id, state);
    state.build.done = this.runBuild(state, template, input).finally(() => this.builds.delete(id));
    state.build.done.catch(() => undefined); // read through buildLogs or done; never unhandled
    return state.build;
  }

  /** A build of the team's (running here, or from the database), or not_found. */
  async getBuild(teamId: string, buildId: string): Promise<TemplateBuild> {
    const state = this.builds.get(buildId);
    if (state) {
      if (state.build.teamId !== teamId) throw new WrennError("not_found", `build ${buildId} not found`);
      return state.build;
    }
    const row = await this.repos.templateBuilds.get(teamId, buildId);
    if (!row) throw new WrennError("not_found", `build ${buildId} not found`);
    return buildFromRow(row);
  }

  /** The team's builds, newest first: the running ones and the last FINISHED_BUILDS_KEPT_PER_TEAM finished. */
  async listBuilds(teamId: string, options: { limit?: number } = {}): Promise<TemplateBuild[]> {
    const rows = await this.repos.templateBuilds.listForTeam(teamId, options.limit);
    return rows.map((row) => this.builds.get(row.id)?.build ?? buildFromRow(row));
  }

  /**
   * The build's log from its first line, then, while this process runs the build, live until it
   * ends (or `signal` aborts). A build that has ended is read from the database.
   */
  async *buildLogs(teamId: string, buildId: string, options: { signal?: AbortSignal } = {}): AsyncGenerator<BuildEvent> {
    await this.getBuild(teamId, buildId); // not_found for none, or another team's
    // Gone from memory (here before, or meanwhile): it has ended, its whole log is in the database.
    const state = this.builds.get(buildId);
    if (!state) {
      for (const event of await this.repos.templateBuilds.events(buildId)) yield storedBuildEvent(event);
      return;
    }
    const { events } = state.log;
    for (let next = 0; ; ) {
      while (next < events.length) yield events[next++]!;
      if (state.build.status !== "building" || options.signal?.aborted) return;
      await state.log.next(options.signal);
    }
  }

  /**
   * Fails the builds a previous control plane process left `building` (it stopped or crashed
   * mid-build; nobody runs them now): each is marked failed with INTERRUPTED_BUILD_ERROR, its build
   * sandbox destroyed and its half-made template removed. Call once at start, before serving.
   * Assumes one control plane per database: another one's running builds would be failed too.
   */
  async recoverInterruptedBuilds(): Promise<number> {
    let recovered = 0;
    for (const row of await this.repos.templateBuilds.listBuilding()) {
      if (this.builds.has(row.id)) continue; // ours, still running
      const log = this.log.child({ buildId: row.id, teamId: row.teamId, template: row.name });
      try {
        const failed = await this.repos.templateBuilds.finish(row.id, {
          status: "failed",
          error: INTERRUPTED_BUILD_ERROR,
          lastEvent: { type: "failed", message: INTERRUPTED_BUILD_ERROR },
        });
        if (!failed) continue;
        recovered++;
        // The sandbox's id reaches the build's row only after its create returns; its metadata names the build from the start.
        const leftovers = await this.repos.sandboxes.listAll({ teamId: row.teamId, metadata: { "wrenn.build": row.id }, statuses: [...NOT_ENDED_STATUSES] });
        const sandboxIds = new Set([...(row.sandboxId ? [row.sandboxId] : []), ...leftovers.map((sandbox) => sandbox.id)]);
        for (const sandboxId of sandboxIds) {
          await this.options.sandboxes.destroy(row.teamId, sandboxId).catch((err: unknown) => {
            if (!(err instanceof WrennError && err.code === "not_found")) log.warn({ sandboxId, err: (err as Error).message }, "removing an interrupted build's sandbox failed; the reconciler removes it from its host");
          });
        }
        const template = row.templateId ? await this.repos.templates.getById(row.templateId) : undefined;
        if (template) {
          await this.delete(row.teamId, template.name).catch((err: unknown) =>
            log.warn({ err: (err as Error).message }, "removing an interrupted build's template failed; delete it by hand"),
          );
        }
        log.warn({ sandboxIds: [...sandboxIds] }, "build interrupted by a control plane restart: marked failed");
      } catch (err) {
        log.error({ err: (err as Error).message }, "recovering an interrupted build failed");
      }
    }
    return recovered;
  }

  /**
   * Deletes the team's template `name` from its host, then from the catalogue. Platform templates
   * are forbidden to teams before anything is touched (seed 003); another team's are not_found.
   * The platform team itself (an admin) may delete a platform template from every host.
   */
  async delete(teamId: string, name: string): Promise<void> {
    const template = await this.repos.templates.get(teamId, name);
    if (!template) {
      if (teamId !== PLATFORM_TEAM_ID && (await this.repos.templates.get(PLATFORM_TEAM_ID, name))) {
        throw new WrennError("forbidden", `template ${name} is a platform template; teams cannot delete it`);
      }
      throw new WrennError("not_found", `template ${name} not found`);
    }
    const hostTemplateName = template.hostTemplateName ?? template.name;
    const hostIds = template.hostId ? [template.hostId] : await this.repos.hostTemplates.hostsHolding(hostTemplateName);
    for (const hostId of hostIds) {
      const host = await this.repos.hosts.get(hostId);
      if (!host) continue;
      await callAgent(this.options.registry.client(host).deleteSnapshot({ name: hostTemplateName }), hostId).catch((err: WrennError) => {
        if (err.code !== "not_found") throw err;
      });
      await this.repos.hostTemplates.remove(hostId, hostTemplateName);
    }
    await this.repos.templates.delete(teamId, name);
    this.log.info({ teamId, template: name, hosts: hostIds }, "template deleted");
  }

  /** The catalogue row that reserves `name` for the team before anything is written to a host. */
  private async reserve(
    teamId: string,
    name: string,
    kind: "snapshot" | "build",
    fields: { hostId?: string | null; metadata?: Record<string, unknown> },
  ): Promise<Template> {
    if (!TEMPLATE_NAME.test(name) || name.includes("..") || RESERVED_TEMPLATE_NAMES.has(name)) {
      throw new WrennError("invalid_argument", `invalid template name ${JSON.stringify(name)}: use 1-63 of a-z, 0-9, '.', '_', '-', starting with a letter or digit, and not ${[...RESERVED_TEMPLATE_NAMES].join(", ")}`);
    }
    if (teamId !== PLATFORM_TEAM_ID && (await this.repos.templates.get(PLATFORM_TEAM_ID, name))) {
      throw new WrennError("conflict", `${name} is the name of a platform template; choose another`);
    }
    const id = randomUUID();
    try {
      return await this.repos.templates.create({ id, teamId, name, kind, hostId: fields.hostId ?? null, hostTemplateName: `t-${id}`, metadata: fields.metadata ?? {} });
    } catch (err) {
      if (isUniqueViolation(err)) throw new WrennError("conflict", `the team already has a template named ${name}`);
      throw err;
    }
  }

  private async runBuild(state: BuildState, template: Template, input: BuildInput): Promise<Template> {
    const { build } = state;
    const log = this.log.child({ buildId: build.id, teamId: build.teamId, template: build.name });
    const emit = (event: BuildEvent) => state.log.append(event);
    /** Writes the log and the outcome; a database failure is logged, not the build's. */
    const record = async (status: "ready" | "failed", error?: string) => {
      await state.log.flush();
      try {
        await this.repos.templateBuilds.finish(build.id, { status, error, finishedAt: build.finishedAt });
        await this.repos.templateBuilds.pruneFinished(build.teamId, FINISHED_BUILDS_KEPT_PER_TEAM);
      } catch (err) {
        log.warn({ err: (err as Error).message }, "recording the build's outcome failed");
      }
    };
    const decoder = () => new TextDecoder();
    let sandboxId: string | undefined;
    try {
      const sandbox = await this.options.sandboxes.create(build.teamId, {
        template: input.baseTemplate,
        vcpus: input.vcpus,
        memoryMb: input.memoryMb,
        diskSizeMb: input.diskSizeMb,
        timeoutSec: 0,
        metadata: { "wrenn.build": build.id },
      });
      sandboxId = build.sandboxId = sandbox.id;
      await this.repos.templateBuilds.setSandbox(build.id, sandbox.id);
      // The template will live where it is built.
      await this.repos.templates.setHost(template.id, sandbox.hostId);
      for (const [index, command] of input.steps.entries()) {
        // The log up to here is in the database before the next step starts (a crash keeps it).
        await state.log.flush();
        emit({ type: "step", step: index, command });
        const stdout = decoder();
        const stderr = decoder();
        let exitCode: number | undefined;
        const events = this.options.sandboxes.execStream(build.teamId, sandbox.id, {
          cmd: "/bin/sh",
          args: ["-c", command],
          user: "root",
          timeoutSec: input.stepTimeoutSec ?? DEFAULT_STEP_TIMEOUT_SEC,
        });
        for await (const event of events) {
          if (event.type === "stdout") emit({ type: "stdout", step: index, data: stdout.decode(event.data, { stream: true }) });
          else if (event.type === "stderr") emit({ type: "stderr", step: index, data: stderr.decode(event.data, { stream: true }) });
          else if (event.type === "exit") exitCode = event.exitCode;
        }
        emit({ type: "exit", step: index, exitCode: exitCode ?? -1 });
        if (exitCode !== 0) throw new WrennError("failed_precondition", `build step ${index + 1} (${command}) exited with ${exitCode ?? "no exit code"}`);
      }
      const hostTemplateName = template.hostTemplateName!;
      const flattened = await this.options.sandboxes.flatten(build.teamId, sandbox.id, { hostTemplateName, ownerTeamId: build.teamId });
      sandboxId = undefined;
      await this.repos.hostTemplates.add(flattened.host.id, { name: hostTemplateName, teamId: build.teamId, kind: "image", sizeBytes: flattened.sizeBytes });
      const saved = (await this.repos.templates.setSize(template.id, flattened.sizeBytes)) ?? template;
      build.status = "ready";
      build.finishedAt = new Date();
      emit({ type: "done", template: saved });
      await record("ready");
      log.info({ hostId: flattened.host.id, sizeBytes: flattened.sizeBytes }, "template built");
      return saved;
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      if (sandboxId) await this.options.sandboxes.destroy(build.teamId, sandboxId).catch((cause: unknown) => log.warn({ err: cause }, "removing the build sandbox failed"));
      await this.repos.templates.delete(build.teamId, build.name).catch(() => undefined);
      build.status = "failed";
      build.error = message;
      build.finishedAt = new Date();
      emit({ type: "failed", message });
      await record("failed", message);
      log.warn({ err: message }, "template build failed");
      throw err;
    }
  }
}
