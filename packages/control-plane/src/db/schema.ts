// The control plane's tables. drizzle-kit reads this file to generate migrations/, so it imports
// nothing from the project (the kit's loader does not map NodeNext `.js` imports to `.ts`).
import { sql } from "drizzle-orm";
import {
  bigint,
  bigserial,
  boolean,
  check,
  date,
  doublePrecision,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  text,
  timestamp,
  unique,
  uuid,
} from "drizzle-orm/pg-core";

/** Owner of the platform templates every team may use; seeded by a migration. */
export const PLATFORM_TEAM_ID = "00000000-0000-0000-0000-000000000000";

export const SANDBOX_STATUSES = ["starting", "running", "paused", "stopped", "error", "unknown"] as const;
export type SandboxStatus = (typeof SANDBOX_STATUSES)[number];

/** What the host does when a sandbox's timeout runs out: pause it (Wrenn's default) or kill it (E2B's). */
export const ON_TIMEOUT_ACTIONS = ["pause", "kill"] as const;
export type OnTimeout = (typeof ON_TIMEOUT_ACTIONS)[number];

/**
 * The runtimes a sandbox can boot on (a host agent's drivers): gVisor, a QEMU microVM, a
 * Firecracker microVM. Which of them a host offers, its agent reports (hosts.runtimes).
 */
export const SANDBOX_RUNTIMES = ["gvisor", "qemu", "firecracker"] as const;
export type SandboxRuntime = (typeof SANDBOX_RUNTIMES)[number];
export const isSandboxRuntime = (name: string): name is SandboxRuntime => (SANDBOX_RUNTIMES as readonly string[]).includes(name);
/** The runtimes whose pause hibernates: memory to the host's disk, the VM process gone (its host agent can). */
export const HIBERNATING_RUNTIMES: ReadonlySet<SandboxRuntime> = new Set(["qemu", "firecracker"]);

export const HOST_STATUSES = ["pending", "ready", "unhealthy", "draining"] as const;
export type HostStatus = (typeof HOST_STATUSES)[number];

export const TEMPLATE_KINDS = ["platform", "snapshot", "build"] as const;
export type TemplateKind = (typeof TEMPLATE_KINDS)[number];

export const TEAM_ROLES = ["owner", "admin", "member"] as const;
export type TeamRole = (typeof TEAM_ROLES)[number];

export const ACTOR_TYPES = ["api_key", "user", "system"] as const;
export type ActorType = (typeof ACTOR_TYPES)[number];

export const METRIC_TIERS = ["10m", "2h", "24h"] as const;
export type MetricTier = (typeof METRIC_TIERS)[number];

// Millisecond precision, like a JS Date, so a timestamp read back compares equal to the stored one
// (cursor pagination depends on it).
const timestampMs = (name: string) => timestamp(name, { withTimezone: true, precision: 3, mode: "date" });
const createdAt = () => timestampMs("created_at").notNull().defaultNow();

const oneOf = (column: string, values: readonly string[]) =>
  sql.raw(`${column} IN (${values.map((value) => `'${value}'`).join(", ")})`);

export const teams = pgTable("teams", {
  id: uuid("id").primaryKey().defaultRandom(),
  name: text("name").notNull(),
  slug: text("slug").notNull().unique(),
  isAdmin: boolean("is_admin").notNull().default(false),
  createdAt: createdAt(),
});

export const users = pgTable("users", {
  id: uuid("id").primaryKey().defaultRandom(),
  email: text("email").notNull().unique(),
  passwordHash: text("password_hash").notNull(),
  createdAt: createdAt(),
});

export const teamMembers = pgTable(
  "team_members",
  {
    teamId: uuid("team_id").notNull().references(() => teams.id, { onDelete: "cascade" }),
    userId: uuid("user_id").notNull().references(() => users.id, { onDelete: "cascade" }),
    role: text("role").$type<TeamRole>().notNull().default("member"),
    createdAt: createdAt(),
  },
  (table) => [
    primaryKey({ columns: [table.teamId, table.userId] }),
    index("team_members_user_id_idx").on(table.userId),
    check("team_members_role_check", oneOf("role", TEAM_ROLES)),
  ],
);

export const apiKeys = pgTable(
  "api_keys",
  {
    id: uuid("id").primaryKey().defaultRandom(),
    teamId: uuid("team_id").notNull().references(() => teams.id, { onDelete: "cascade" }),
    name: text("name").notNull(),
    /** The secret's first characters, shown in lists so a user can tell keys apart. */
    prefix: text("prefix").notNull(),
    /** sha256 of the whole secret, hex; the secret itself is never stored. */
    secretHash: text("secret_hash").notNull().unique(),
    /** sha256 of the key's E2B-shaped alias (`e2b_` + 40 hex, derived from the secret), hex; null until known. */
    e2bAliasHash: text("e2b_alias_hash").unique(),
    createdByUserId: uuid("created_by_user_id").references(() => users.id, { onDelete: "set null" }),
    createdAt: createdAt(),
    lastUsedAt: timestampMs("last_used_at"),
    revokedAt: timestampMs("revoked_at"),
  },
  (table) => [index("api_keys_team_id_idx").on(table.teamId)],
);

/**
 * Dashboard sign-ins (db/sessions.ts, api/auth.ts): a user's (user_id) or an API key's (api_key_id) session in
 * one team, found by the sha256 of the cookie's random id; the id itself is never stored.
 */
export const sessions = pgTable(
  "sessions",
  {
    /** sha256 of the cookie's value, hex. */
    id: text("id").primaryKey(),
    userId: uuid("user_id").references(() => users.id, { onDelete: "cascade" }),
    apiKeyId: uuid("api_key_id").references(() => apiKeys.id, { onDelete: "cascade" }),
    teamId: uuid("team_id").notNull().references(() => teams.id, { onDelete: "cascade" }),
    /** What a cookie-authenticated request that changes something must echo in X-CSRF-Token. */
    csrfToken: text("csrf_token").notNull(),
    createdAt: createdAt(),
    expiresAt: timestampMs("expires_at").notNull(),
    lastSeenAt: timestampMs("last_seen_at").notNull().defaultNow(),
    ip: text("ip"),
    userAgent: text("user_agent"),
  },
  (table) => [
    index("sessions_user_id_idx").on(table.userId),
    index("sessions_api_key_id_idx").on(table.apiKeyId),
    index("sessions_expires_at_idx").on(table.expiresAt),
    check("sessions_subject_check", sql`(user_id IS NULL) <> (api_key_id IS NULL)`),
  ],
);

export const hosts = pgTable(
  "hosts",
  {
    id: uuid("id").primaryKey().defaultRandom(),
    /** host:port of the agent's RPC endpoint; known once the agent registers. */
    address: text("address"),
    tokenHash: text("token_hash").unique(),
    status: text("status").$type<HostStatus>().notNull().default("pending"),
    registrationTokenHash: text("registration_token_hash").unique(),
    /** Runtime drivers the agent offers, e.g. ["gvisor", "qemu"]. */
    runtimes: jsonb("runtimes").$type<string[]>().notNull().default([]),
    cpu: integer("cpu").notNull().default(0),
    memoryMb: integer("memory_mb").notNull().default(0),
    diskMb: integer("disk_mb").notNull().default(0),
    slots: integer("slots").notNull().default(0),
    /**
     * The token the control plane calls the agent with, AES-256-GCM under the control plane's
     * secret key (hosts/secrets.ts): it must be recoverable, unlike the hashes above.
     */
    agentTokenEncrypted: text("agent_token_encrypted"),
    /** Port of the agent's port proxy (same address as the RPC endpoint), as GetHostInfo reports it. */
    proxyPort: integer("proxy_port"),
    lastHeartbeatAt: timestampMs("last_heartbeat_at"),
    createdAt: createdAt(),
  },
  (table) => [
    check("hosts_status_check", oneOf("status", HOST_STATUSES)),
    // One row per agent endpoint: adding the same local agent twice finds the first row.
    unique("hosts_address_unique").on(table.address),
  ],
);

/** What a host's disk holds, as its agent's ListTemplates said at the last heartbeat (placement reads it). */
export const hostTemplates = pgTable(
  "host_templates",
  {
    hostId: uuid("host_id").notNull().references(() => hosts.id, { onDelete: "cascade" }),
    /** The template's name on the host (templates.host_template_name, or the name of a platform template). */
    name: text("name").notNull(),
    /** The owner the agent recorded; no foreign key: a host may hold templates of a deleted team. */
    teamId: uuid("team_id").notNull(),
    /** The agent's kind: "base", "snapshot" or "image". */
    kind: text("kind").notNull(),
    sizeBytes: bigint("size_bytes", { mode: "number" }).notNull().default(0),
    syncedAt: timestampMs("synced_at").notNull().defaultNow(),
  },
  (table) => [primaryKey({ columns: [table.hostId, table.name] }), index("host_templates_name_idx").on(table.name)],
);

export const templates = pgTable(
  "templates",
  {
    id: uuid("id").primaryKey().defaultRandom(),
    name: text("name").notNull(),
    teamId: uuid("team_id").notNull().references(() => teams.id, { onDelete: "cascade" }),
    kind: text("kind").$type<TemplateKind>().notNull(),
    /** The host whose disk holds it (snapshots live where they were taken); null when on every host. */
    hostId: uuid("host_id").references(() => hosts.id, { onDelete: "set null" }),
    /**
     * Its name on the hosts' disks, where every team's templates share one namespace; null: the
     * same as `name` (platform templates).
     */
    hostTemplateName: text("host_template_name"),
    sizeBytes: bigint("size_bytes", { mode: "number" }).notNull().default(0),
    metadata: jsonb("metadata").$type<Record<string, unknown>>().notNull().default({}),
    createdAt: createdAt(),
  },
  (table) => [
    unique("templates_team_id_name_unique").on(table.teamId, table.name),
    check("templates_kind_check", oneOf("kind", TEMPLATE_KINDS)),
  ],
);

export const TEMPLATE_BUILD_STATUSES = ["building", "ready", "failed"] as const;
export type TemplateBuildStatus = (typeof TEMPLATE_BUILD_STATUSES)[number];

/** Template builds, from start to their end, so status and logs outlive the process that ran them. */
export const templateBuilds = pgTable(
  "template_builds",
  {
    /** bld_ and 32 hex digits. */
    id: text("id").primaryKey(),
    teamId: uuid("team_id").notNull().references(() => teams.id, { onDelete: "cascade" }),
    /** The template the build makes. */
    name: text("name").notNull(),
    baseTemplate: text("base_template").notNull(),
    steps: jsonb("steps").$type<string[]>().notNull(),
    status: text("status").$type<TemplateBuildStatus>().notNull().default("building"),
    error: text("error"),
    /** The build sandbox, once created; no foreign key: the build's record outlives the sandbox's row. */
    sandboxId: text("sandbox_id"),
    /** The catalogue row the build reserved at start (and fills when ready); null once that template is deleted. */
    templateId: uuid("template_id").references(() => templates.id, { onDelete: "set null" }),
    startedAt: timestampMs("started_at").notNull().defaultNow(),
    finishedAt: timestampMs("finished_at"),
  },
  (table) => [
    index("template_builds_team_id_started_at_idx").on(table.teamId, table.startedAt),
    // Deleting a template sets its builds' template_id to null.
    index("template_builds_template_id_idx").on(table.templateId),
    // Start-up looks for builds a previous process left running.
    index("template_builds_building_idx").on(table.status).where(sql`status = 'building'`),
    check("template_builds_status_check", oneOf("status", TEMPLATE_BUILD_STATUSES)),
  ],
);

/** A build's log, one row per event (step, output chunk, exit, the end), in `seq` order. */
export const templateBuildEvents = pgTable(
  "template_build_events",
  {
    buildId: text("build_id").notNull().references(() => templateBuilds.id, { onDelete: "cascade" }),
    /** The event's index in the build's log, from 0. */
    seq: integer("seq").notNull(),
    event: jsonb("event").$type<Record<string, unknown>>().notNull(),
  },
  (table) => [primaryKey({ columns: [table.buildId, table.seq] })],
);

export const sandboxes = pgTable(
  "sandboxes",
  {
    id: text("id").primaryKey(),
    teamId: uuid("team_id").notNull().references(() => teams.id, { onDelete: "cascade" }),
    hostId: uuid("host_id").references(() => hosts.id, { onDelete: "set null" }),
    template: text("template").notNull(),
    status: text("status").$type<SandboxStatus>().notNull().default("starting"),
    vcpus: integer("vcpus").notNull(),
    memoryMb: integer("memory_mb").notNull(),
    diskSizeMb: integer("disk_size_mb").notNull().default(5120),
    timeoutSec: integer("timeout_sec").notNull(),
    onTimeout: text("on_timeout").$type<OnTimeout>().notNull().default("pause"),
    /**
     * The runtime it runs on, as its host answered the create (rows made before runtimes: gvisor);
     * until then the one the create asked for, or null when it left the choice to the host.
     */
    runtime: text("runtime").$type<SandboxRuntime>(),
    metadata: jsonb("metadata").$type<Record<string, string>>().notNull().default({}),
    /** Egress allow/deny lists (CIDRs or host names), as the host agent's network takes them. */
    allowOut: jsonb("allow_out").$type<string[]>().notNull().default([]),
    denyOut: jsonb("deny_out").$type<string[]>().notNull().default([]),
    envdAccessToken: text("envd_access_token"),
    /** Opens the sandbox's own ports (not envd's) through the edge proxy; null admits nobody. */
    trafficAccessToken: text("traffic_access_token"),
    /** envd's version inside the sandbox, as the agent reported it at create. */
    envdVersion: text("envd_version"),
    /** The sandbox's address on its host (inside the host's address pool). */
    hostIp: text("host_ip"),
    createdAt: createdAt(),
    startedAt: timestampMs("started_at"),
    /**
     * Start of the current run segment (usage is accounted per segment when it ends); null when
     * not running. Kept while `unknown`, so a sandbox whose host comes back keeps its segment.
     */
    runningSince: timestampMs("running_since"),
    endedAt: timestampMs("ended_at"),
    statusChangedAt: timestampMs("status_changed_at").notNull().defaultNow(),
  },
  (table) => [
    index("sandboxes_team_id_created_at_id_idx").on(table.teamId, table.createdAt, table.id),
    index("sandboxes_host_id_status_idx").on(table.hostId, table.status),
    index("sandboxes_metadata_idx").using("gin", table.metadata.op("jsonb_path_ops")),
    check("sandboxes_status_check", oneOf("status", SANDBOX_STATUSES)),
    check("sandboxes_on_timeout_check", oneOf("on_timeout", ON_TIMEOUT_ACTIONS)),
  ],
);

export const sandboxMetrics = pgTable(
  "sandbox_metrics",
  {
    sandboxId: text("sandbox_id").notNull().references(() => sandboxes.id, { onDelete: "cascade" }),
    tier: text("tier").$type<MetricTier>().notNull(),
    ts: timestampMs("ts").notNull(),
    cpuPercent: doublePrecision("cpu_percent").notNull(),
    memoryBytes: bigint("memory_bytes", { mode: "number" }).notNull(),
    diskBytes: bigint("disk_bytes", { mode: "number" }).notNull(),
  },
  (table) => [
    // Also the index for reading one sandbox's tier in time order; makes re-flushing a point a no-op.
    primaryKey({ columns: [table.sandboxId, table.tier, table.ts] }),
    index("sandbox_metrics_ts_idx").on(table.ts),
    check("sandbox_metrics_tier_check", oneOf("tier", METRIC_TIERS)),
  ],
);

// No foreign key to teams: the record of what happened outlives the team it happened to.
export const auditLog = pgTable(
  "audit_log",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    teamId: uuid("team_id"),
    actorType: text("actor_type").$type<ActorType>().notNull(),
    actorId: text("actor_id"),
    action: text("action").notNull(),
    resourceType: text("resource_type").notNull(),
    resourceId: text("resource_id"),
    sourceIp: text("source_ip"),
    details: jsonb("details").$type<Record<string, unknown>>().notNull().default({}),
    createdAt: createdAt(),
  },
  (table) => [
    index("audit_log_team_id_created_at_idx").on(table.teamId, table.createdAt),
    check("audit_log_actor_type_check", oneOf("actor_type", ACTOR_TYPES)),
  ],
);

export const usageDaily = pgTable(
  "usage_daily",
  {
    teamId: uuid("team_id").notNull().references(() => teams.id, { onDelete: "cascade" }),
    /** UTC day, 'YYYY-MM-DD'. */
    day: date("day", { mode: "string" }).notNull(),
    sandboxSeconds: doublePrecision("sandbox_seconds").notNull().default(0),
    vcpuSeconds: doublePrecision("vcpu_seconds").notNull().default(0),
    memoryGibSeconds: doublePrecision("memory_gib_seconds").notNull().default(0),
    diskGibSeconds: doublePrecision("disk_gib_seconds").notNull().default(0),
  },
  (table) => [primaryKey({ columns: [table.teamId, table.day] })],
);

export type Team = typeof teams.$inferSelect;
export type User = typeof users.$inferSelect;
export type TeamMember = typeof teamMembers.$inferSelect;
export type ApiKey = typeof apiKeys.$inferSelect;
export type Session = typeof sessions.$inferSelect;
export type Host = typeof hosts.$inferSelect;
export type Template = typeof templates.$inferSelect;
export type HostTemplate = typeof hostTemplates.$inferSelect;
export type TemplateBuildRow = typeof templateBuilds.$inferSelect;
export type Sandbox = typeof sandboxes.$inferSelect;
export type NewSandbox = typeof sandboxes.$inferInsert;
export type SandboxMetric = typeof sandboxMetrics.$inferSelect;
export type AuditEntry = typeof auditLog.$inferSelect;
export type UsageDay = typeof usageDaily.$inferSelect;
