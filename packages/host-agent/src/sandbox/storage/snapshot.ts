// Turning a sandbox's filesystem into a template. The caller pauses the sandbox first, so nothing
// changes during the copy; the sandbox keeps running on its own layers afterwards.
import { copyTree, type TemplateInfo, type TemplateStore } from "./templates.js";

export interface SnapshotLayerRequest {
  /** The new template's name. */
  name: string;
  /** The template the sandbox runs on: the snapshot is layered on it. */
  parent: string;
  /** The sandbox's overlay upper dir (SandboxRootfs.upperDir). */
  upperDir: string;
  teamId: string;
  metadata?: Record<string, string>;
}

/**
 * Makes the sandbox's writable layer a new template of kind "snapshot" on `parent`: a copy of the
 * upper dir as overlayfs wrote it, whiteouts, opaque dirs and redirects included, so a sandbox on
 * [snapshot, ...parent's layers] sees exactly what this one sees. Costs only what the sandbox wrote.
 */
export async function snapshotLayer(store: TemplateStore, request: SnapshotLayerRequest): Promise<TemplateInfo> {
  return store.createFrom(
    request.name,
    { teamId: request.teamId, kind: "snapshot", parent: request.parent, metadata: request.metadata ?? {} },
    (rootfsDir) => copyTree(request.upperDir, rootfsDir),
  );
}

export interface FlattenRootfsRequest {
  name: string;
  /** The sandbox's merged view (SandboxRootfs.dir). */
  mergedDir: string;
  teamId: string;
  metadata?: Record<string, string>;
}

/**
 * Copies the sandbox's whole merged view into a standalone template of kind "image" (no parent):
 * costs the full rootfs, but needs none of the templates it came from.
 */
export async function flattenRootfs(store: TemplateStore, request: FlattenRootfsRequest): Promise<TemplateInfo> {
  return store.createFrom(
    request.name,
    { teamId: request.teamId, kind: "image", metadata: request.metadata ?? {} },
    (rootfsDir) => copyTree(request.mergedDir, rootfsDir, { oneFileSystem: true }),
  );
}
