// First start: an admin team, its first API key and its first dashboard user, the key and the
// user's password saved in the data dir so every later start can print them again (only their
// hashes are in the database).
import { existsSync } from "node:fs";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "pino";
import { hashPassword, PASSWORD_MIN_LENGTH, randomPassword, verifyPassword } from "./api/passwords.js";
import { isUniqueViolation } from "./db/errors.js";
import type { Repositories } from "./db/repositories.js";
import type { Team } from "./db/schema.js";

export const ADMIN_TEAM_SLUG = "admin";
export const ADMIN_KEY_FILE = "admin-api-key";
export const ADMIN_USER_EMAIL = "admin@wrenn.local";
/** The first admin user's password, beside the admin key. */
export const ADMIN_PASSWORD_FILE = "dashboard-password";

export interface AdminCredentials {
  team: Team;
  /** The admin API key's secret (wrn_…). */
  apiKey: string;
  /** The first dashboard user's email and password; password null once it was changed from the saved one. */
  dashboard: { email: string; password: string | null };
}

/** The admin team and a working key for it, created when missing; idempotent across starts. */
export async function bootstrapAdmin(repos: Repositories, dataDir: string, logger: Logger): Promise<AdminCredentials> {
  const team = await adminTeam(repos);
  const keyFile = path.join(dataDir, ADMIN_KEY_FILE);
  if (existsSync(keyFile)) {
    const saved = (await readFile(keyFile, "utf8")).trim();
    const apiKey = await repos.apiKeys.findBySecret(saved);
    if (apiKey?.teamId === team.id) return { team, apiKey: saved, dashboard: await adminUser(repos, team, dataDir, logger) };
    logger.warn({ keyFile }, "the saved admin API key is revoked or unknown to this database; creating a new one");
  }
  const { apiKey, secret } = await repos.apiKeys.create({ teamId: team.id, name: "admin (created at first start)" });
  await saveSecret(dataDir, keyFile, secret);
  logger.info({ teamId: team.id, apiKeyId: apiKey.id, keyFile }, "created the admin API key");
  return { team, apiKey: secret, dashboard: await adminUser(repos, team, dataDir, logger) };
}

/** Writes `secret` to `file` (mode 0600) in one step: a reader sees the whole secret or no file. */
async function saveSecret(dataDir: string, file: string, secret: string): Promise<void> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const partial = `${file}.${process.pid}.tmp`;
  await writeFile(partial, `${secret}\n`, { mode: 0o600 });
  await rename(partial, file);
}

/**
 * The first dashboard user (admin@wrenn.local, an owner of the admin team) with a random password
 * saved in the data dir; made when missing. A saved password its user no longer has (changed since)
 * is removed and not shown.
 */
async function adminUser(repos: Repositories, team: Team, dataDir: string, logger: Logger): Promise<AdminCredentials["dashboard"]> {
  const passwordFile = path.join(dataDir, ADMIN_PASSWORD_FILE);
  const saved = existsSync(passwordFile) ? (await readFile(passwordFile, "utf8")).trim() : undefined;
  let user = await repos.users.findByEmail(ADMIN_USER_EMAIL);
  if (user) {
    if (saved && (await verifyPassword(saved, user.passwordHash))) return { email: user.email, password: saved };
    if (saved) {
      logger.warn({ passwordFile }, "the saved dashboard password is no longer the admin user's; removing the file");
      await rm(passwordFile, { force: true });
    }
    return { email: user.email, password: null };
  }
  // A saved password survives a new database (as the admin key's file does not): the user keeps it.
  const password = saved && saved.length >= PASSWORD_MIN_LENGTH ? saved : randomPassword(20);
  try {
    user = await repos.users.create({ email: ADMIN_USER_EMAIL, passwordHash: await hashPassword(password) });
  } catch (error) {
    // Another control plane on the same database made it first, with its own password.
    if (!isUniqueViolation(error)) throw error;
    return adminUser(repos, team, dataDir, logger);
  }
  await repos.teams.addMember(team.id, user.id, "owner");
  if (password !== saved) await saveSecret(dataDir, passwordFile, password);
  logger.info({ userId: user.id, email: ADMIN_USER_EMAIL, passwordFile }, "created the admin dashboard user");
  return { email: user.email, password };
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
