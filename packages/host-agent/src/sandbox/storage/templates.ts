// The templates of a host: `<dataDir>/templates/<name>/` holding `rootfs/` (one overlay layer),
// `template.json`, and `rootfs.ext4` once a VM booted from it. A template appears by one rename of
// a complete directory and disappears by one rename to a trash name, so no one ever sees half of
// one. Names starting with "." are never templates: the store's temp and trash dirs.
// Reads are synchronous (a template.json is a few hundred bytes on local disk) so a request can be
// checked and a template acquired with no await in between; copies and removals are not.
import { randomUUID } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readdir, rename, rm, rmdir, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { runCommand } from "../../exec/command.js";
import { logger } from "../../logging/logger.js";
import { BLOCK_IMAGE_NAME, buildBlockImage } from "./block-image.js";
import { removeUnlessMounted } from "./rootfs.js";

const log = logger.child({ component: "templates" });

/** Owner of the templates every team may use (and no team may delete). */
export const PLATFORM_TEAM_ID = "00000000-0000-0000-0000-000000000000";
/** Most layers a template may stack (itself and its ancestors): one overlayfs mount must hold them all. */
export const MAX_TEMPLATE_LAYERS = 24;
/** Copying a rootfs of several GiB takes a while; a stuck copy should not hold a request forever. */
const COPY_TIMEOUT_MS = 30 * 60_000;

const TEMPLATE_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const TEMP_PREFIX = ".tmp-";
const TRASH_PREFIX = ".trash-";

export type TemplateKind = "base" | "snapshot" | "image";

export interface TemplateInfo {
  name: string;
  teamId: string;
  /** base: built from a distribution; snapshot: a sandbox's writes over `parent`; image: a flattened sandbox. */
  kind: TemplateKind;
  /** The template this one is layered on (snapshots only). */
  parent?: string;
  /** Apparent size of this template's own layer (not its ancestors': see TemplateStore.sizeBytes). */
  sizeBytes: number;
  /** Unix seconds. */
  createdAt: number;
  metadata: Record<string, string>;
}

/** What the creator of a template says about it; the store adds the name, size and time. */
export interface NewTemplate {
  teamId: string;
  kind: TemplateKind;
  /** Required for a snapshot, forbidden otherwise. */
  parent?: string;
  metadata?: Record<string, string>;
}

export class InvalidTemplateNameError extends Error {
  constructor(readonly templateName: string) {
    super(`invalid template name ${JSON.stringify(templateName)}: use 1-63 of a-z, 0-9, '.', '_', '-', starting with a letter or digit`);
    this.name = "InvalidTemplateNameError";
  }
}

export class TemplateNotFoundError extends Error {
  constructor(readonly templateName: string) {
    super(`template ${templateName} does not exist`);
    this.name = "TemplateNotFoundError";
  }
}

export class TemplateExistsError extends Error {
  constructor(readonly templateName: string) {
    super(`template ${templateName} already exists`);
    this.name = "TemplateExistsError";
  }
}

/** The template is used by running sandboxes or is the parent of other templates. */
export class TemplateInUseError extends Error {
  constructor(readonly templateName: string, reason: string) {
    super(`template ${templateName} is in use: ${reason}`);
    this.name = "TemplateInUseError";
  }
}

/** A snapshot would stack more layers than one overlayfs mount takes; flatten instead. */
export class TooManyLayersError extends Error {
  constructor(readonly templateName: string, layers: number) {
    super(`template ${templateName} already stacks ${layers} layers, the most allowed; flatten the sandbox instead of snapshotting it`);
    this.name = "TooManyLayersError";
  }
}

/** Throws InvalidTemplateNameError unless `name` can name a template (and a directory). */
export function validateTemplateName(name: string): void {
  if (typeof name !== "string" || !TEMPLATE_NAME.test(name) || name.includes("..")) throw new InvalidTemplateNameError(String(name));
}

/** Where a VM snapshot template keeps its memory state and what it was taken with. */
export const VM_STATE_DIR = "vm-state";

/**
 * Where a plain template keeps the memory of a VM saved right after its first boot, one per runtime,
 * shape and guest (`vm-boot/<key>/`: vm.json, memory.state and the disk it was saved with).
 */
export const VM_BOOT_DIR = "vm-boot";

/** A VM template's memory snapshot: restored into each sandbox made from it. */
export interface VmTemplateState {
  stateFile: string;
  /** The driver's stateIdentity() when it was saved: restorable only under the same. */
  identity: string;
  memoryMb: number;
  vcpus: number;
  /** The size of the disk it was taken with: every copy's disk has this size. */
  diskSizeMb: number;
  /** The token the saved envd answers to, until the host's /init replaces it (secret: the file is root's). */
  envdAccessToken: string;
  sourceSandbox: string;
}

export class TemplateStore {
  /** `<dataDir>/templates`. */
  readonly dir: string;
  /** Sandboxes using each template, by sandbox id. In memory: the agent re-acquires on restart. */
  private readonly holders = new Map<string, Set<string>>();
  /** Templates being created on each parent: a parent must not vanish under them. */
  private readonly childrenInProgress = new Map<string, number>();
  private readonly deleting = new Set<string>();
  /** Block images being made, by template: one build each, however many sandboxes wait for it. */
  private readonly imagesBuilding = new Map<string, Promise<void>>();

  /** `templatesDir` is `<dataDir>/templates` (created with the first template). */
  constructor(templatesDir: string) {
    this.dir = path.resolve(templatesDir);
  }

  /** The directory that is the template's layer (a lowerdir of the sandboxes using it). */
  rootfsDir(name: string): string {
    validateTemplateName(name);
    return path.join(this.dir, name, "rootfs");
  }

  exists(name: string): boolean {
    try {
      this.get(name);
      return true;
    } catch (err) {
      if (err instanceof TemplateNotFoundError) return false;
      throw err;
    }
  }

  /** Throws InvalidTemplateNameError, TemplateNotFoundError. */
  get(name: string): TemplateInfo {
    validateTemplateName(name);
    let text: string;
    try {
      text = readFileSync(path.join(this.dir, name, "template.json"), "utf8");
    } catch (err) {
      if (isNotFound(err)) throw new TemplateNotFoundError(name);
      throw err;
    }
    return parseTemplateInfo(name, text);
  }

  /** Every template, by name. */
  list(): TemplateInfo[] {
    let entries: string[];
    try {
      entries = readdirSync(this.dir);
    } catch (err) {
      if (isNotFound(err)) return [];
      throw err;
    }
    const templates: TemplateInfo[] = [];
    for (const entry of entries.filter((e) => !e.startsWith(".")).sort()) {
      try {
        templates.push(this.get(entry));
      } catch (err) {
        if (err instanceof TemplateNotFoundError || err instanceof InvalidTemplateNameError) continue; // deleted meanwhile; not ours
        throw err;
      }
    }
    return templates;
  }

  /** The rootfs dirs of the template and its ancestors, top-most first: the overlay's lowerdirs. */
  layers(name: string): string[] {
    return this.chain(name).map((info) => this.rootfsDir(info.name));
  }

  /** The memory snapshot a VM template carries (`vm-state/`), or undefined for a filesystem-only template. */
  vmState(name: string): VmTemplateState | undefined {
    validateTemplateName(name);
    return readVmState(path.join(this.dir, name, VM_STATE_DIR));
  }

  /** Where the template's boot snapshot for `key` (runtime, shape, guest) lives, made or not. */
  bootStateDir(name: string, key: string): string {
    validateTemplateName(name);
    return path.join(this.dir, name, VM_BOOT_DIR, key);
  }

  /** The template's boot snapshot for `key` and the disk image it was saved with, or undefined. */
  bootState(name: string, key: string): (VmTemplateState & { image: string }) | undefined {
    const dir = this.bootStateDir(name, key);
    const state = readVmState(dir);
    return state && { ...state, image: path.join(dir, BLOCK_IMAGE_NAME) };
  }

  /**
   * The template as an ext4 image (block-image.ts), for the VM runtimes: made on first use, then
   * kept with the template. Callers hold the template (acquire) while they use it.
   */
  async blockImage(name: string): Promise<string> {
    const image = path.join(this.dir, name, BLOCK_IMAGE_NAME);
    if (await stat(image).then(() => true, () => false)) return image;
    let building = this.imagesBuilding.get(name);
    if (!building) {
      building = buildBlockImage(this.layers(name), this.sizeBytes(name), image).finally(() => this.imagesBuilding.delete(name));
      this.imagesBuilding.set(name, building);
    }
    await building;
    return image;
  }

  /**
   * Apparent size of all the template's layers: what a sandbox starts with on its disk (an upper
   * bound for a snapshot, whose layer may replace or delete files of the layers below).
   */
  sizeBytes(name: string): number {
    return this.chain(name).reduce((sum, info) => sum + info.sizeBytes, 0);
  }

  /** The template and its ancestors, top-most first. */
  private chain(name: string): TemplateInfo[] {
    const chain = [this.get(name)];
    for (let parent = chain[0]!.parent; parent !== undefined; parent = chain[chain.length - 1]!.parent) {
      if (chain.length >= MAX_TEMPLATE_LAYERS) throw new Error(`template ${name}: its ancestry is longer than ${MAX_TEMPLATE_LAYERS} layers`);
      chain.push(this.get(parent));
    }
    return chain;
  }

  /**
   * Records that sandbox `holderId` uses the template, which then cannot be deleted (its ancestors
   * are protected by being its ancestors). Throws TemplateNotFoundError. Acquiring twice is a no-op.
   */
  acquire(name: string, holderId: string): void {
    if (this.deleting.has(name)) throw new TemplateNotFoundError(name);
    this.get(name);
    const holders = this.holders.get(name) ?? new Set<string>();
    holders.add(holderId);
    this.holders.set(name, holders);
  }

  /** Undoes `acquire`; releasing what was not acquired is a no-op. */
  release(name: string, holderId: string): void {
    const holders = this.holders.get(name);
    holders?.delete(holderId);
    if (holders?.size === 0) this.holders.delete(name);
  }

  /** The sandboxes holding the template. */
  usersOf(name: string): string[] {
    return [...(this.holders.get(name) ?? [])];
  }

  /**
   * Deletes the template unless a sandbox holds it or another template is layered on it. It
   * disappears at once (renamed to a trash dir), then its files are removed.
   */
  async delete(name: string): Promise<void> {
    validateTemplateName(name);
    // Checks and claims without awaiting in between, so no acquire or snapshot slips past them.
    const holders = this.usersOf(name);
    if (holders.length > 0) throw new TemplateInUseError(name, `used by sandbox(es) ${holders.join(", ")}`);
    if ((this.childrenInProgress.get(name) ?? 0) > 0) throw new TemplateInUseError(name, "a template is being created on it");
    if (this.deleting.has(name)) throw new TemplateNotFoundError(name);
    this.deleting.add(name);
    let trash: string;
    try {
      this.get(name);
      const children = this.list().filter((t) => t.parent === name).map((t) => t.name);
      if (children.length > 0) throw new TemplateInUseError(name, `template(s) ${children.join(", ")} are layered on it`);
      trash = path.join(this.dir, `${TRASH_PREFIX}${name}-${randomUUID()}`);
      await rename(path.join(this.dir, name), trash);
    } finally {
      this.deleting.delete(name);
    }
    try {
      await removeUnlessMounted(trash);
    } catch (err) {
      // The template is gone all the same; removeLeftovers retries.
      log.warn({ template: name, trash, err }, "could not remove a deleted template's files");
    }
  }

  /**
   * Creates template `name`: `fill` writes its rootfs into an empty dir, then the store records its
   * size and makes it visible in one rename. If anything fails, nothing is left and nothing was seen.
   */
  async createFrom(name: string, template: NewTemplate, fill: (rootfsDir: string) => Promise<void>): Promise<TemplateInfo> {
    validateTemplateName(name);
    const { parent } = template;
    if (template.kind === "snapshot" && parent === undefined) throw new RangeError(`snapshot template ${name} needs a parent`);
    if (template.kind !== "snapshot" && parent !== undefined) throw new RangeError(`a ${template.kind} template has no parent`);
    if (parent !== undefined) {
      validateTemplateName(parent);
      if (this.deleting.has(parent)) throw new TemplateNotFoundError(parent);
      this.childrenInProgress.set(parent, (this.childrenInProgress.get(parent) ?? 0) + 1);
    }
    try {
      if (this.deleting.has(name) || this.exists(name)) throw new TemplateExistsError(name);
      if (parent !== undefined) {
        const depth = this.chain(parent).length;
        if (depth >= MAX_TEMPLATE_LAYERS) throw new TooManyLayersError(parent, depth);
      }
      await mkdir(this.dir, { recursive: true });
      const temp = await mkdtemp(path.join(this.dir, `${TEMP_PREFIX}${name}-`));
      try {
        await chmod(temp, 0o755);
        const rootfs = path.join(temp, "rootfs");
        await mkdir(rootfs);
        await chmod(rootfs, 0o755);
        await fill(rootfs);
        const info: TemplateInfo = {
          name,
          teamId: template.teamId,
          kind: template.kind,
          ...(parent !== undefined && { parent }),
          sizeBytes: await apparentSizeBytes(rootfs),
          createdAt: Math.floor(Date.now() / 1000),
          metadata: { ...template.metadata },
        };
        await writeFile(path.join(temp, "template.json"), JSON.stringify(info, null, 2) + "\n");
        await runCommand("sync", ["--file-system", temp], { timeoutMs: COPY_TIMEOUT_MS }); // on disk before it is visible
        try {
          await rename(temp, path.join(this.dir, name));
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === "ENOTEMPTY" || code === "EEXIST") throw new TemplateExistsError(name); // created meanwhile
          throw err;
        }
        return info;
      } catch (err) {
        await removeUnlessMounted(temp).catch((cleanupErr: unknown) => log.warn({ temp, err: cleanupErr }, "could not remove a failed template"));
        throw err;
      }
    } finally {
      if (parent !== undefined) {
        const count = (this.childrenInProgress.get(parent) ?? 1) - 1;
        if (count > 0) this.childrenInProgress.set(parent, count);
        else this.childrenInProgress.delete(parent);
      }
    }
  }

  /**
   * Creates template `name` from a rootfs built elsewhere: copied (ownership, modes, xattrs, hard
   * links, device nodes kept), or with `move` renamed in when on the same filesystem (the source is
   * then consumed, even if creating the template fails).
   */
  async importDirectory(name: string, sourceDir: string, template: NewTemplate, options: { move?: boolean } = {}): Promise<TemplateInfo> {
    return this.createFrom(name, template, async (rootfs) => {
      if (options.move) {
        try {
          await rmdir(rootfs);
          await rename(sourceDir, rootfs);
          return;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "EXDEV") throw err;
          await mkdir(rootfs, { mode: 0o755 });
        }
      }
      await copyTree(sourceDir, rootfs);
      if (options.move) await removeUnlessMounted(sourceDir);
    });
  }

  /** Removes the temp and trash dirs an agent that died mid-create or mid-delete left behind. */
  async removeLeftovers(): Promise<void> {
    let entries: string[];
    try {
      entries = await readdir(this.dir);
    } catch (err) {
      if (isNotFound(err)) return;
      throw err;
    }
    for (const entry of entries) {
      if (entry.startsWith(TEMP_PREFIX) || entry.startsWith(TRASH_PREFIX)) await removeUnlessMounted(path.join(this.dir, entry));
      // A boot snapshot whose saving an agent stop cut short.
      const boots = path.join(this.dir, entry, VM_BOOT_DIR);
      for (const boot of await readdir(boots).catch(() => [] as string[])) {
        if (boot.includes(".saving-")) await rm(path.join(boots, boot), { recursive: true, force: true });
      }
    }
  }
}

function readVmState(dir: string): VmTemplateState | undefined {
  let text: string;
  try {
    text = readFileSync(path.join(dir, "vm.json"), "utf8");
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
  return { ...(JSON.parse(text) as Omit<VmTemplateState, "stateFile">), stateFile: path.join(dir, "memory.state") };
}

/**
 * Copies the contents of `sourceDir` into the existing dir `targetDir`, keeping everything overlayfs
 * relies on: ownership, modes, timestamps, hard links, device nodes (whiteouts) and every xattr
 * (trusted.overlay.* included: failing to copy one is an error, not a warning). `oneFileSystem`
 * skips whatever is mounted below the source.
 */
export async function copyTree(sourceDir: string, targetDir: string, options: { oneFileSystem?: boolean } = {}): Promise<void> {
  const args = ["--archive", "--preserve=xattr", "--reflink=auto", ...(options.oneFileSystem ? ["--one-file-system"] : [])];
  // "<dir>/." copies the dir's contents (and its own attributes) into the target, not the dir itself.
  await runCommand("cp", [...args, "--", `${path.resolve(sourceDir)}/.`, targetDir], { timeoutMs: COPY_TIMEOUT_MS });
}

/** Sum of the apparent sizes of the files below `dir` (hard links counted once). */
async function apparentSizeBytes(dir: string): Promise<number> {
  const output = await runCommand("du", ["--summarize", "--apparent-size", "--block-size=1", dir], { timeoutMs: COPY_TIMEOUT_MS });
  const bytes = Number(output.split("\t")[0]);
  if (!Number.isSafeInteger(bytes)) throw new Error(`du printed ${JSON.stringify(output)} for ${dir}`);
  return bytes;
}


function parseTemplateInfo(name: string, text: string): TemplateInfo {
  const raw = JSON.parse(text) as Partial<TemplateInfo>;
  const kinds: TemplateKind[] = ["base", "snapshot", "image"];
  if (
    raw.name !== name ||
    typeof raw.teamId !== "string" ||
    !kinds.includes(raw.kind as TemplateKind) ||
    (raw.parent !== undefined && typeof raw.parent !== "string") ||
    typeof raw.sizeBytes !== "number" ||
    typeof raw.createdAt !== "number"
  ) {
    throw new Error(`template ${name}: template.json is malformed`);
  }
  return {
    name,
    teamId: raw.teamId,
    kind: raw.kind as TemplateKind,
    ...(raw.parent !== undefined && { parent: raw.parent }),
    sizeBytes: raw.sizeBytes,
    createdAt: raw.createdAt,
    metadata: { ...raw.metadata },
  };
}

const isNotFound = (err: unknown): boolean => (err as NodeJS.ErrnoException).code === "ENOENT";
