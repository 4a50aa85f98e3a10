// Every repository over one database handle (or one transaction: `createRepositories(tx)`).
import { ApiKeyRepository } from "./api-keys.js";
import { AuditRepository } from "./audit.js";
import type { Db } from "./database.js";
import { HostTemplateRepository } from "./host-templates.js";
import { HostRepository } from "./hosts.js";
import { MetricsRepository } from "./metrics.js";
import { SandboxRepository } from "./sandboxes.js";
import { SessionRepository } from "./sessions.js";
import { TeamRepository } from "./teams.js";
import { TemplateBuildRepository } from "./template-builds.js";
import { TemplateRepository } from "./templates.js";
import { UsageRepository } from "./usage.js";
import { UserRepository } from "./users.js";

export interface Repositories {
  apiKeys: ApiKeyRepository;
  audit: AuditRepository;
  hosts: HostRepository;
  hostTemplates: HostTemplateRepository;
  metrics: MetricsRepository;
  sandboxes: SandboxRepository;
  sessions: SessionRepository;
  teams: TeamRepository;
  templates: TemplateRepository;
  templateBuilds: TemplateBuildRepository;
  usage: UsageRepository;
  users: UserRepository;
}

export function createRepositories(db: Db): Repositories {
  return {
    apiKeys: new ApiKeyRepository(db),
    audit: new AuditRepository(db),
    hosts: new HostRepository(db),
    hostTemplates: new HostTemplateRepository(db),
    metrics: new MetricsRepository(db),
    sandboxes: new SandboxRepository(db),
    sessions: new SessionRepository(db),
    teams: new TeamRepository(db),
    templates: new TemplateRepository(db),
    templateBuilds: new TemplateBuildRepository(db),
    usage: new UsageRepository(db),
    users: new UserRepository(db),
  };
}
