// The orchestration layer assembled: host registry (with its heartbeats), placement, the
// reconciler, and the sandbox and template services the API calls. One per control plane process.
import type { Logger } from "pino";
import type { Db } from "../db/database.js";
import { HostRegistry } from "../hosts/registry.js";
import { SandboxService, type SandboxServiceHooks } from "../sandboxes/service.js";
import { TemplateService } from "../templates/service.js";
import { Placement } from "./placement.js";
import { Reconciler } from "./reconciler.js";

export interface OrchestrationOptions {
  db: Db;
  /** 32 bytes; seals the host agents' tokens in the database. Keep it: without it no agent can be called. */
  secretKey: Buffer;
  logger: Logger;
  /** Default 5000. */
  heartbeatIntervalMs?: number;
  /** Default 3. */
  unhealthyAfterMisses?: number;
  /** How long a silent host's sandboxes stay `unknown` before they count as stopped. Default 15 min. */
  lostAfterMs?: number;
  /** Default 3000. */
  reconcileIntervalMs?: number;
  /** Default 2. */
  memoryOvercommit?: number;
  hooks?: SandboxServiceHooks;
}

export interface Orchestration {
  hosts: HostRegistry;
  placement: Placement;
  reconciler: Reconciler;
  sandboxes: SandboxService;
  templates: TemplateService;
  /** Starts the heartbeat and reconcile loops. */
  start(): void;
  /** Lets pending `running` marks land, stops the loops and closes the agents' connections (sandboxes keep running). */
  stop(): Promise<void>;
}

export function createOrchestration(options: OrchestrationOptions): Orchestration {
  const { db, logger } = options;
  const hosts = new HostRegistry({
    db,
    logger,
    secretKey: options.secretKey,
    heartbeatIntervalMs: options.heartbeatIntervalMs,
    unhealthyAfterMisses: options.unhealthyAfterMisses,
    lostAfterMs: options.lostAfterMs,
  });
  const placement = new Placement({ db, logger, memoryOvercommit: options.memoryOvercommit });
  const reconciler = new Reconciler({ db, logger, registry: hosts, intervalMs: options.reconcileIntervalMs });
  const sandboxes = new SandboxService({ db, logger, registry: hosts, placement, hooks: options.hooks });
  const templates = new TemplateService({ db, logger, registry: hosts, sandboxes });
  // What the reconciler finds (a sandbox gone, auto-paused) reaches the service's caches and its
  // listeners (the edge proxy) at once, not after their TTLs.
  reconciler.onTransition((sandboxId, status) => sandboxes.changedElsewhere(sandboxId, status));
  reconciler.pendingWrites = () => sandboxes.allSettled();
  // A host back from silence: restore its `unknown` sandboxes now rather than at the next pass.
  hosts.onHostReady(async (host) => {
    await reconciler.reconcileHost(host.id);
  });
  return {
    hosts,
    placement,
    reconciler,
    sandboxes,
    templates,
    start() {
      hosts.start();
      reconciler.start();
    },
    async stop() {
      await sandboxes.allSettled(); // `running` marks on their way land first (they may roll a sandbox back)
      await reconciler.stop();
      await hosts.stop();
    },
  };
}
