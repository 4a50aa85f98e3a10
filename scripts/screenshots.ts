// Regenerates docs/screenshots/<page>.png: every dashboard page in headless chromium against a
// real stack (control plane, one host agent, gVisor sandboxes), as `make screenshots` (root).
// Uses the dashboard tests' address pool with a table of its own: not while the dashboard's
// end-to-end test runs.
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Page } from "playwright-core";
import { BASH_TEMPLATE, launchBrowser, signIn, skipBrowser, startDashboardStack, terminalLines } from "../packages/dashboard/test/stack.js";

const OUT = fileURLToPath(new URL("../docs/screenshots/", import.meta.url));
const POOL = "10.238.0.0/26";
const TABLE = "wrenn_t_dash_shot";

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

async function shoot(page: Page, name: string, fullPage = false): Promise<void> {
  await page.waitForLoadState("networkidle").catch(() => undefined);
  await page.waitForTimeout(400); // charts and fonts settle
  const file = path.join(OUT, `${name}.png`);
  await page.screenshot({ path: file, fullPage });
  console.log(`wrote ${path.relative(process.cwd(), file)}`);
}

async function main(): Promise<void> {
  if (skipBrowser) throw new Error(`cannot take screenshots: ${skipBrowser}`);
  await mkdir(OUT, { recursive: true });
  const stack = await startDashboardStack({ pool: POOL, table: TABLE });
  const browser = await launchBrowser({ width: 1360, height: 860 });
  try {
    const { page } = browser;
    page.setDefaultTimeout(60_000);
    const call = (method: string, url: string, body?: unknown) => stack.api.call(stack.admin.key, method, url, body);

    // Something to look at: sandboxes in a few states, a team template, a build, keys, members.
    const created: string[] = [];
    for (const metadata of [{ app: "web" }, { app: "worker" }, { app: "batch" }]) {
      const response = await call("POST", "/v1/sandboxes", { template: BASH_TEMPLATE, memoryMb: 256, timeoutSec: 900, metadata });
      created.push(((await response.json()) as { id: string }).id);
    }
    await call("POST", `/v1/sandboxes/${created[2]}/pause`);
    await call("POST", "/v1/templates", { fromSandbox: created[1], name: "worker-snapshot", keepRunning: true });
    const build = (await (await call("POST", "/v1/templates", { baseTemplate: BASH_TEMPLATE, name: "with-tools", steps: ["echo installing tools", "mkdir -p /opt/tools && echo ok > /opt/tools/ready", "ls -la /opt/tools"] })).json()) as { id: string };
    for (const name of ["ci", "laptop"]) await call("POST", "/v1/api-keys", { name });
    for (const [email, role] of [["dana@example.com", "admin"], ["lee@example.com", "member"]] as const) {
      await call("POST", "/v1/teams/current/members", { email, role, password: `screenshot-password-${role}` });
    }
    // A port to list: busybox httpd in the first sandbox.
    await call("POST", `/v1/sandboxes/${created[0]}/exec`, { cmd: "/bin/sh", args: ["-c", "mkdir -p /tmp/www && echo hello > /tmp/www/index.html && busybox httpd -p 8080 -h /tmp/www"] });
    await call("POST", `/v1/sandboxes/${created[0]}/files/mkdir`, { path: "project" });

    await page.goto(`${stack.url}/`);
    await page.getByLabel("Email").waitFor();
    await shoot(page, "sign-in");
    await signIn(page, stack.url, stack.admin.email, stack.admin.password);
    await page.locator("tr[data-sandbox]").first().waitFor();
    await shoot(page, "sandboxes");

    await page.getByRole("button", { name: "+ New sandbox" }).click();
    await page.getByRole("dialog", { name: "New sandbox" }).getByLabel("Template").selectOption(BASH_TEMPLATE);
    await shoot(page, "create-sandbox");
    await page.keyboard.press("Escape");

    await page.goto(`${stack.url}/ui/sandboxes/${created[0]}`);
    await page.locator('[data-testid="terminal-status"]', { hasText: /^connected$/ }).waitFor();
    await page.getByTestId("terminal").click();
    await page.keyboard.type("uname -a; ls -la; echo hi");
    await page.keyboard.press("Enter");
    await until("the terminal's answer", async () => (await terminalLines(page)).some((line) => line.trim() === "hi"));
    await until("metrics", async () => Number(await page.locator('figure[data-chart="CPU"]').getAttribute("data-points")) > 1, 90_000);
    await page.locator('tr[data-file="project"]').waitFor();
    await page.getByText("8080", { exact: true }).waitFor({ timeout: 30_000 }).catch(() => undefined);
    await shoot(page, "sandbox-detail", true);

    await page.getByRole("link", { name: "Templates" }).click();
    await page.locator('tr[data-template="worker-snapshot"]').waitFor();
    await until("the build to end", async () => {
      const status = (await (await call("GET", `/v1/templates/builds/${build.id}`)).json()) as { status: string };
      return status.status !== "building";
    }, 180_000);
    await page.reload();
    await page.getByRole("button", { name: "Logs" }).first().click();
    await until("the build log's last line", async () => /✓ template|✗/.test((await page.getByTestId("build-log").textContent()) ?? ""), 30_000).catch(async (err: unknown) => {
      console.error("build log:", await page.getByTestId("build-log").textContent(), await (await call("GET", `/v1/templates/builds/${build.id}`)).text());
      throw err;
    });
    await shoot(page, "templates", true);

    await page.getByRole("link", { name: "API keys" }).click();
    await page.locator('tr[data-key="laptop"]').waitFor();
    await shoot(page, "api-keys");

    await page.getByRole("link", { name: "Team" }).click();
    await page.locator('tr[data-member="lee@example.com"]').waitFor();
    await shoot(page, "team");

    await page.getByRole("link", { name: "Usage" }).click();
    await page.locator('figure[data-chart="Sandbox hours per day"]').waitFor();
    await shoot(page, "usage");

    await page.getByRole("link", { name: "Audit log" }).click();
    await page.getByRole("table", { name: "Audit log" }).waitFor();
    await shoot(page, "audit");

    await page.getByRole("link", { name: "Hosts" }).click();
    await page.getByRole("table", { name: "Hosts" }).waitFor();
    await shoot(page, "hosts");

    await page.setViewportSize({ width: 390, height: 844 });
    await page.getByRole("link", { name: "Sandboxes" }).click();
    await page.locator("tr[data-sandbox]").first().waitFor();
    await shoot(page, "sandboxes-phone");
  } finally {
    await browser.close();
    await stack.close();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
