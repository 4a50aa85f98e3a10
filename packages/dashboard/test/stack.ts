// What the dashboard's browser tests, the screenshots script and the dashboard benchmark share:
// the real stack (control plane on PGlite serving the built dashboard, one real host agent with
// the tests' `busybox-bash` template) with the first admin user of bootstrap.ts, and a headless
// Debian chromium driven by playwright-core.
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { bootstrapAdmin } from "../../control-plane/src/bootstrap.js";
import { startApi, type ApiTeam, type ApiUnderTest } from "../../control-plane/test/api-harness.js";
import { removeAgent, skipAgent, startManagedAgent, type ManagedAgent } from "../../control-plane/test/orchestration-harness.js";
import { PLATFORM_TEAM_ID, TemplateStore } from "../../host-agent/src/sandbox/storage/templates.js";
import { newDataDir, removeDataDir } from "../../host-agent/test/agent-harness.js";
import { BASH_STATIC, buildBashTemplate } from "../../host-agent/test/template.js";

export const CHROMIUM = "/usr/bin/chromium";
export const DIST_INDEX = fileURLToPath(new URL("../dist/index.html", import.meta.url));
/** The tests' busybox template with bash-static as /bin/bash: the terminal's login shell is bash. */
export const BASH_TEMPLATE = "busybox-bash";

/** Why the browser tests cannot run here, or false. */
export const skipBrowser: string | false =
  skipAgent ||
  (!existsSync(BASH_STATIC) ? `needs ${BASH_STATIC} (make system-deps)` : false) ||
  (!existsSync(CHROMIUM) ? `needs ${CHROMIUM} (make system-deps: Debian's chromium)` : false) ||
  (!existsSync(DIST_INDEX) ? "needs the built dashboard (make dashboard)" : false);

export interface DashboardStack {
  api: ApiUnderTest;
  /** http://127.0.0.1:<port>: the API and the dashboard at / */
  url: string;
  /** The first admin user (bootstrap.ts), a member of the admin team. */
  admin: { email: string; password: string; key: ApiTeam };
  close(): Promise<void>;
}

/** The control plane with one host agent (its own pool and nftables table) and the admin user. */
export async function startDashboardStack(options: { pool: string; table: string }): Promise<DashboardStack> {
  const api = await startApi({ database: "pglite", agents: [] });
  let agent: ManagedAgent | undefined;
  let dataDir: string | undefined;
  let cpDataDir: string | undefined;
  const close = async () => {
    await api.close().catch((err: unknown) => console.error("dashboard stack: api close:", err));
    if (agent) await removeAgent(agent).catch((err: unknown) => console.error("dashboard stack: agent removal:", err));
    else if (dataDir) await removeDataDir(dataDir, options.table).catch(() => undefined);
    if (cpDataDir) await rm(cpDataDir, { recursive: true, force: true });
  };
  try {
    dataDir = await newDataDir();
    await new TemplateStore(`${dataDir}/templates`).createFrom(BASH_TEMPLATE, { teamId: PLATFORM_TEAM_ID, kind: "base", metadata: {} }, buildBashTemplate);
    agent = await startManagedAgent(options.pool, options.table, undefined, dataDir);
    await api.orchestration.hosts.addLocalHost(agent.address, agent.agent.token);
    cpDataDir = await mkdtemp(path.join(tmpdir(), "wrenn-dash-cp-"));
    const credentials = await bootstrapAdmin(api.repos, cpDataDir, pino({ level: "silent" }));
    return {
      api,
      url: api.url,
      admin: { email: credentials.dashboard.email, password: credentials.dashboard.password!, key: { teamId: credentials.team.id, key: credentials.apiKey } },
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

export interface Browser {
  context: BrowserContext;
  page: Page;
  close(): Promise<void>;
}

/**
 * Headless Debian chromium with a fresh profile. Without the background-networking flags it
 * reaches out to Google's services, which this closed network refuses.
 */
export async function launchBrowser(options: { width?: number; height?: number } = {}): Promise<Browser> {
  const profile = await mkdtemp(path.join(tmpdir(), "wrenn-dash-chromium-"));
  try {
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      acceptDownloads: true,
      viewport: { width: options.width ?? 1280, height: options.height ?? 860 },
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
    const page = context.pages()[0] ?? (await context.newPage());
    return {
      context,
      page,
      close: async () => {
        await context.close().catch(() => undefined);
        await rm(profile, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await rm(profile, { recursive: true, force: true });
    throw err;
  }
}

/** Signs in through the sign-in form with the email and password. */
export async function signIn(page: Page, url: string, email: string, password: string): Promise<void> {
  await page.goto(`${url}/`);
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Sandboxes" }).waitFor();
}

/** Every row of the xterm screen, as text. */
export async function terminalLines(page: Page): Promise<string[]> {
  return page.locator(".xterm-rows > div").allInnerTexts();
}
