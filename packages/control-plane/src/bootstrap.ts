// First start: an admin team and its first API key, the key saved in the data dir so every later
// start can print it again (only its hash is in the database).
import { existsSync } from "node:fs";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "pino";
import { isUniqueViolation } from "./db/errors.js";
import type { Repositories } from "./db/repositories.js";
import type { Team } from "./db/schema.js";

export const ADMIN_TEAM_SLUG = "admin";
export const ADMIN_KEY_FILE = "admin-api-key";

export interface AdminCredentials {
  team: Team;
  /** The admin API key's secret (wrn_…). */
  apiKey: string;
}

/** The admin team and a working key for it, created when missing; idempotent across starts. */
export async function bootstrapAdmin(repos: Repositories, dataDir: string, logger: Logger): Promise<AdminCredentials> {
  const team = await adminTeam(repos);
  const keyFile = path.join(dataDir, ADMIN_KEY_FILE);
  if (existsSync(keyFile)) {
    const saved = (await readFile(keyFile, "utf8")).trim();
    const apiKey = await repos.apiKeys.findBySecret(saved);
    if (apiKey?.teamId === team.id) return { team, apiKey: saved };
    logger.warn({ keyFile }, "the saved admin API key is revoked or unknown to this database; creating a new one");
  }
  const { apiKey, secret } = await repos.apiKeys.create({ teamId: team.id, name: "admin (created at first start)" });
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const partial = `${keyFile}.${process.pid}.tmp`;
  await writeFile(partial, `${secret}\n`, { mode: 0o600 });
  await rename(partial, keyFile);
  logger.info({ teamId: team.id, apiKeyId: apiKey.id, keyFile }, "created the admin API key");
  return { team, apiKey: secret };
}

async function adminTeam(repos: Repositories): Promise<Team> {
  let team = await repos.teams.getBySlug(ADMIN_TEAM_SLUG);
  if (!team) {
    try {
      team = await repos.teams.create({ name: "admin", slug: ADMIN_TEAM_SLUG, isAdmin: true });
    } catch (error) {
      // Another control plane on the same database created it first.
      team = isUniqueViolation(error) ? await repos.teams.getBySlug(ADMIN_TEAM_SLUG) : undefined;
      if (!team) throw error;
    }
  }
  if (!team.isAdmin) throw new Error(`team "${ADMIN_TEAM_SLUG}" exists but is not an admin team; fix is_admin in the database`);
  return team;
}
