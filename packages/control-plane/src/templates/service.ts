// The template catalogue as a team sees it: platform templates (the all-zeros team, synced from
// hosts at heartbeats) and the team's own, made by snapshotting a sandbox or by a build (steps run
// in a build sandbox, then flattened). Team templates live on the host they were made on, under
// a host-wide unique name (`t-<template id>`), since every team's templates share a host's disk.
import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import type { Logger } from "pino";
import type { Db } from "../db/database.js";
import { isUniqueViolation } from "../db/errors.js";
import { createRepositories, type Repositories } from "../db/repositories.js";
import { PLATFORM_TEAM_ID, type Template } from "../db/schema.js";
import { WrennError } from "../errors.js";
import { callAgent } from "../hosts/agent-client.js";
import type { HostRegistry } from "../hosts/registry.js";
import type { SandboxService } from "../sandboxes/service.js";

/** The names a host's disk accepts, which the catalogue's names also keep to. */
const TEMPLATE_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const DEFAULT_STEP_TIMEOUT_SEC = 600;
/** Finished builds kept (with their logs) for late readers. */
const FINISHED_BUILDS_KEPT = 100;

export type BuildStatus = "building" | "ready" | "failed";

/** One line of a build's log, in order. */
export type BuildEvent =
  | { type: "step"; step: number; command: string }
  | { type: "stdout" | "stderr"; step: number; data: string }
  | { type: "exit"; step: number; exitCode: number }
  | { type: "done"; template: Template }
  | { type: "failed"; message: string };

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
  /** Settles with the build: the new template, or the build's error. */
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

interface BuildState {
  build: TemplateBuild;
  events: BuildEvent[];
  emitter: EventEmitter;
}

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
  async build(teamId: string, input: BuildInput): Promise<TemplateBuild> {
    if (input.steps.length === 0) throw new WrennError("invalid_argument", "a build needs at least one step");
    await this.options.sandboxes.visibleTemplate(teamId, input.baseTemplate);
    const template = await this.reserve(teamId, input.name, "build", { metadata: { baseTemplate: input.baseTemplate } });
    const state: BuildState = {
      build: {
        id: `bld_${randomUUID().replaceAll("-", "")}`,
        teamId,
        name: input.name,
        baseTemplate: input.baseTemplate,
        steps: [...input.steps],
        status: "building",
        startedAt: new Date(),
        done: undefined as unknown as Promise<Template>,
      },
      events: [],
      emitter: new EventEmitter(),
    };
    state.build.done = this.runBuild(state, template, input);
    state.build.done.catch(() => undefined); // read through buildLogs or done; never unhandled
    this.builds.set(state.build.id, state);
    this.forgetOldBuilds();
    return state.build;
  }

  /** A build of the team's, or not_found. */
  getBuild(teamId: string, buildId: string): TemplateBuild {
    const state = this.builds.get(buildId);
    if (!state || state.build.teamId !== teamId) throw new WrennError("not_found", `build ${buildId} not found`);
    return state.build;
  }

  /** The build's log from its first line, then live until it ends (or `signal` aborts). */
  async *buildLogs(teamId: string, buildId: string, options: { signal?: AbortSignal } = {}): AsyncGenerator<BuildEvent> {
    this.getBuild(teamId, buildId);
    const state = this.builds.get(buildId)!;
    for (let next = 0; ; ) {
      while (next < state.events.length) yield state.events[next++]!;
      if (state.build.status !== "building" || options.signal?.aborted) return;
      await new Promise<void>((resolve) => {
        const wake = () => {
          state.emitter.off("event", wake);
          options.signal?.removeEventListener("abort", wake);
          resolve();
        };
        state.emitter.on("event", wake);
        options.signal?.addEventListener("abort", wake);
      });
    }
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
    if (!TEMPLATE_NAME.test(name) || name.includes("..")) {
      throw new WrennError("invalid_argument", `invalid template name ${JSON.stringify(name)}: use 1-63 of a-z, 0-9, '.', '_', '-', starting with a letter or digit`);
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
    const emit = (event: BuildEvent) => {
      state.events.push(event);
      state.emitter.emit("event");
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
      // The template will live where it is built.
      await this.repos.templates.setHost(template.id, sandbox.hostId);
      for (const [index, command] of input.steps.entries()) {
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
      log.warn({ err: message }, "template build failed");
      throw err;
    }
  }

  private forgetOldBuilds(): void {
    const finished = [...this.builds.values()].filter((state) => state.build.status !== "building");
    for (const state of finished.slice(0, Math.max(0, finished.length - FINISHED_BUILDS_KEPT))) this.builds.delete(state.build.id);
  }
}
