// The dashboard end to end in a real browser (Debian's chromium, headless, through playwright-core)
// against the real stack: the control plane serving the built SPA, a real host agent and gVisor
// sandboxes. Sign in, create a sandbox, a shell in the terminal (and its re-attach after a reload),
// upload (picker and drag and drop) and download, a metrics chart, snapshot, templates (a team one
// deleted, a platform one without delete), API keys (create, revoke), the other pages, sign-out,
// and the team page (a member added with a password signs in and changes it).
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, before, describe, test } from "node:test";
import type { Page } from "playwright-core";
import { BASH_TEMPLATE, launchBrowser, signIn, skipBrowser, startDashboardStack, terminalLines, type Browser, type DashboardStack } from "./stack.js";

const POOL = "10.238.0.0/26";
const TABLE = "wrenn_t_dash";

describe("the dashboard in chromium", { skip: skipBrowser }, () => {
  let stack: DashboardStack;
  let browser: Browser;
  let page: Page;
  let sandboxId: string;
  const suffix = Math.random().toString(36).slice(2, 8);
  const pageErrors: string[] = [];

  before(async () => {
    stack = await startDashboardStack({ pool: POOL, table: TABLE });
    browser = await launchBrowser();
    page = browser.page;
    page.setDefaultTimeout(30_000);
    page.on("pageerror", (err) => pageErrors.push(String(err)));
  });

  after(async () => {
    await browser?.close();
    await stack?.close();
  });

  test("the control plane serves the SPA at / and /ui/*, assets immutable, the API untouched", async () => {
    const index = await fetch(`${stack.url}/ui/sandboxes/whatever`);
    assert.equal(index.status, 200);
    assert.equal(index.headers.get("cache-control"), "no-cache");
    const html = await index.text();
    const script = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1];
    assert.ok(script, html);
    const asset = await fetch(stack.url + script);
    assert.equal(asset.status, 200);
    assert.equal(asset.headers.get("cache-control"), "public, max-age=31536000, immutable");
    assert.equal((await fetch(`${stack.url}/health`)).status, 200);
    assert.equal((await fetch(`${stack.url}/v1/sandboxes`)).status, 401);
  });

  test("signs in with email and password (a wrong password is refused with a message); an admin drains and undrains the host", async () => {
    await page.goto(`${stack.url}/`);
    await page.getByLabel("Email").fill(stack.admin.email);
    await page.getByLabel("Password").fill("not the password at all");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("alert").waitFor();
    await signIn(page, stack.url, stack.admin.email, stack.admin.password);
    assert.equal(new URL(page.url()).pathname, "/ui/sandboxes");
    // An admin sees the hosts page, with the agent as a host.
    await page.getByRole("link", { name: "Hosts" }).click();
    const hosts = page.getByRole("table", { name: "Hosts" });
    await hosts.getByText("ready").first().waitFor();
    // Drain (confirmed), then undrain: the host takes placements again for the tests below.
    await hosts.getByRole("button", { name: "Drain" }).click();
    await page.getByRole("dialog", { name: "Drain host" }).getByRole("button", { name: "Drain" }).click();
    await hosts.getByText("draining").waitFor();
    await hosts.getByRole("button", { name: "Undrain" }).click();
    await page.getByRole("dialog", { name: "Undrain host" }).getByRole("button", { name: "Undrain" }).click();
    await hosts.getByText("ready").waitFor();
  });

  test("works from the keyboard alone: Tab reaches the navigation and the actions, Enter follows and opens, Escape closes", async () => {
    await page.getByRole("link", { name: "Sandboxes" }).click();
    await page.locator("body").click({ position: { x: 1, y: 1 } }); // nothing focused
    /** Tabs until `matches` holds for the focused element (its text and tag), at most 40 times. */
    async function tabTo(what: string, matches: (focused: { tag: string; text: string }) => boolean): Promise<void> {
      for (let i = 0; i < 40; i++) {
        await page.keyboard.press("Tab");
        const focused = await page.evaluate(() => ({ tag: document.activeElement?.tagName ?? "", text: (document.activeElement as HTMLElement | null)?.innerText?.trim() ?? "" }));
        if (matches(focused)) return;
      }
      assert.fail(`Tab never reached ${what}`);
    }
    await tabTo("the Templates link", ({ tag, text }) => tag === "A" && text === "Templates");
    await page.keyboard.press("Enter");
    await page.waitForURL(/\/ui\/templates$/);
    await page.getByRole("link", { name: "Sandboxes" }).focus();
    await page.keyboard.press("Enter");
    await page.waitForURL(/\/ui\/sandboxes$/);
    await tabTo("the new-sandbox button", ({ tag, text }) => tag === "BUTTON" && text === "+ New sandbox");
    await page.keyboard.press("Enter");
    const dialog = page.getByRole("dialog", { name: "New sandbox" });
    await dialog.waitFor();
    const focusInside = await dialog.evaluate((element) => element.contains(document.activeElement));
    assert.ok(focusInside, "the dialog opened without taking the focus");
    await page.keyboard.press("Escape");
    await dialog.waitFor({ state: "hidden" });
  });

  test("creates a sandbox from the dialog and lands on its page, running", async () => {
    await page.getByRole("link", { name: "Sandboxes" }).click();
    await page.getByRole("button", { name: "+ New sandbox" }).click();
    const dialog = page.getByRole("dialog", { name: "New sandbox" });
    await dialog.getByLabel("Template").selectOption(BASH_TEMPLATE);
    await dialog.getByLabel("Memory (MiB)").fill("256");
    await dialog.getByLabel("Idle timeout (s)").fill("0");
    await dialog.getByRole("button", { name: "Create" }).click();
    await page.waitForURL(/\/ui\/sandboxes\/[a-z0-9]+$/, { timeout: 60_000 });
    sandboxId = new URL(page.url()).pathname.split("/").pop()!;
    await page.locator(".page-head .badge.running").waitFor({ timeout: 60_000 });
    const listed = (await (await stack.api.call(stack.admin.key, "GET", `/v1/sandboxes/${sandboxId}`)).json()) as { state: string; template: string; memoryMb: number };
    assert.deepEqual([listed.state, listed.template, listed.memoryMb], ["running", BASH_TEMPLATE, 256]);
  });

  test("the terminal runs `echo hi`, and re-attaches to the same shell after a reload", async () => {
    await page.locator('[data-testid="terminal-status"]', { hasText: /^connected$/ }).waitFor({ timeout: 60_000 });
    await page.getByTestId("terminal").click();
    await page.keyboard.type("echo hi");
    await page.keyboard.press("Enter");
    await waitUntil("`hi` on the terminal", async () => (await terminalLines(page)).some((line) => line.trim() === "hi"));
    const pid = await page.evaluate((id) => sessionStorage.getItem(`wrenn.terminal.pid.${id}`), sandboxId);
    assert.match(pid ?? "", /^\d+$/);

    await page.reload();
    await page.locator('[data-testid="terminal-status"]', { hasText: /^connected$/ }).waitFor({ timeout: 60_000 });
    assert.equal(await page.evaluate((id) => sessionStorage.getItem(`wrenn.terminal.pid.${id}`), sandboxId), pid);
    await page.getByTestId("terminal").click();
    await page.keyboard.type("echo again-$((20+22)) $$");
    await page.keyboard.press("Enter");
    await waitUntil("the re-attached shell's answer", async () => (await terminalLines(page)).some((line) => line.trim() === `again-42 ${pid}`));
  });

  test("uploads a file with the picker and one by drag and drop, and downloads it", async () => {
    const files = page.getByTestId("files");
    await page.getByRole("table", { name: "Files" }).waitFor();
    await page.getByTestId("upload-input").setInputFiles({ name: "hello.txt", mimeType: "text/plain", buffer: Buffer.from("hello from the dashboard\n") });
    await files.locator('tr[data-file="hello.txt"]').waitFor();

    // A drop of a File on the browser pane, as a desktop drag would deliver it.
    const dataTransfer = await page.evaluateHandle(() => {
      const transfer = new DataTransfer();
      transfer.items.add(new File(["dropped bytes\n"], "dropped.txt", { type: "text/plain" }));
      return transfer;
    });
    await files.dispatchEvent("drop", { dataTransfer });
    await files.locator('tr[data-file="dropped.txt"]').waitFor();

    const downloading = page.waitForEvent("download");
    await files.getByRole("link", { name: "hello.txt" }).click();
    const download = await downloading;
    assert.equal(download.suggestedFilename(), "hello.txt");
    assert.equal(await readFile((await download.path())!, "utf8"), "hello from the dashboard\n");

    // In the sandbox, through the API: both files, with their bytes.
    const exec = await stack.api.call(stack.admin.key, "POST", `/v1/sandboxes/${sandboxId}/exec`, { cmd: "/bin/sh", args: ["-c", "cat ~/hello.txt ~/dropped.txt"] });
    assert.equal(((await exec.json()) as { stdout: string }).stdout, "hello from the dashboard\ndropped bytes\n");
  });

  test("renames and deletes a file after confirmation", async () => {
    const files = page.getByTestId("files");
    await files.getByRole("button", { name: "Rename dropped.txt" }).click();
    const dialog = page.getByRole("dialog", { name: "Rename dropped.txt" });
    await dialog.getByLabel("Name").fill("renamed.txt");
    await dialog.getByRole("button", { name: "Rename" }).click();
    await files.locator('tr[data-file="renamed.txt"]').waitFor();
    await files.getByRole("button", { name: "Delete renamed.txt" }).click();
    await page.getByRole("dialog", { name: "Delete" }).getByRole("button", { name: "Delete" }).click();
    await files.locator('tr[data-file="renamed.txt"]').waitFor({ state: "detached" });
  });

  test("a metrics chart draws the sandbox's CPU", async () => {
    const chart = page.locator('figure[data-chart="CPU"]');
    await waitUntil("CPU points", async () => Number(await chart.getAttribute("data-points")) > 0, 90_000);
    // uPlot drew on its canvas: some pixel differs from the first one.
    const drawn = await chart.locator("canvas").evaluate((canvas: HTMLCanvasElement) => {
      const context = canvas.getContext("2d")!;
      const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
      for (let i = 4; i < pixels.length; i += 4) if (pixels[i] !== pixels[0] || pixels[i + 1] !== pixels[1] || pixels[i + 2] !== pixels[2] || pixels[i + 3] !== pixels[3]) return canvas.width > 0;
      return false;
    });
    assert.ok(drawn, "the CPU chart's canvas is blank");
    await page.getByRole("group", { name: "Metrics range" }).getByRole("button", { name: "2h" }).click();
    await page.locator('figure[data-chart="Memory"]').waitFor();
  });

  test("an open port is a link that opens the server in the sandbox in a new tab (a one-minute ticket, then a cookie)", async () => {
    // A server in the sandbox, started from the terminal (Node from /opt/wrenn: busybox httpd drops connections under gVisor).
    await page.getByTestId("terminal").click();
    await page.keyboard.type(`/opt/wrenn/lib/ld-linux-x86-64.so.2 --library-path /opt/wrenn/lib /opt/wrenn/lib/node -e 'require("http").createServer((q, s) => s.end("served-from-port-8123")).listen(8123)' &`);
    await page.keyboard.press("Enter");
    const link = page.getByRole("link", { name: new RegExp(`^https?://8123-${sandboxId}\\.`) });
    await link.waitFor({ timeout: 60_000 });
    const [tab] = await Promise.all([browser.context.waitForEvent("page"), link.click()]);
    await waitUntil("the sandbox's page in the new tab", async () => (await tab.content().catch(() => "")).includes("served-from-port-8123"));
    assert.doesNotMatch(tab.url(), /wrenn_port_ticket/, "the ticket stayed in the address bar");
    await tab.reload(); // the cookie alone opens it now
    await waitUntil("the page again, by cookie", async () => (await tab.content().catch(() => "")).includes("served-from-port-8123"));
    await tab.close();
  });

  test("snapshots the sandbox into a team template, keeping it running", async () => {
    await page.getByRole("button", { name: "Snapshot" }).click();
    const dialog = page.getByRole("dialog", { name: "Snapshot sandbox" });
    await dialog.getByLabel("Template name").fill(`dash-snap-${suffix}`);
    await dialog.getByRole("button", { name: "Snapshot" }).click();
    await dialog.waitFor({ state: "hidden", timeout: 120_000 });
    await page.getByRole("link", { name: "Templates" }).click();
    await page.locator(`tr[data-template="dash-snap-${suffix}"]`).waitFor();
  });

  test("templates: a platform template offers no delete; a team template is deleted", async () => {
    const platformRow = page.locator(`tr[data-template="${BASH_TEMPLATE}"]`);
    await platformRow.waitFor();
    assert.equal(await platformRow.getByRole("button", { name: /delete/i }).count(), 0);
    assert.equal(await platformRow.getByText("read-only").count(), 1);
    await page.getByRole("button", { name: `Delete dash-snap-${suffix}` }).click();
    await page.getByRole("dialog", { name: "Delete template" }).getByRole("button", { name: "Delete" }).click();
    await page.locator(`tr[data-template="dash-snap-${suffix}"]`).waitFor({ state: "detached", timeout: 60_000 });
    assert.equal((await stack.api.call(stack.admin.key, "GET", `/v1/templates/dash-snap-${suffix}`)).status, 404);
  });

  test("API keys: a new key's secret is shown once and works; revoked, it no longer does", async () => {
    await page.getByRole("link", { name: "API keys" }).click();
    await page.getByRole("button", { name: "+ New key" }).click();
    await page.getByRole("dialog", { name: "New API key" }).getByLabel("Name").fill(`e2e-${suffix}`);
    await page.getByRole("dialog", { name: "New API key" }).getByRole("button", { name: "Create" }).click();
    const secret = (await page.getByTestId("new-key-secret").textContent())!.trim();
    assert.match(secret, /^wrn_/);
    const key = { teamId: stack.admin.key.teamId, key: secret };
    assert.equal((await stack.api.call(key, "GET", "/v1/teams/current")).status, 200);
    await page.getByRole("button", { name: "Done" }).click();
    assert.equal(await page.getByTestId("new-key-secret").count(), 0);
    await page.getByRole("button", { name: `Revoke e2e-${suffix}` }).click();
    await page.getByRole("dialog", { name: "Revoke API key" }).getByRole("button", { name: "Revoke" }).click();
    await page.locator(`tr[data-key="e2e-${suffix}"]`).getByText("revoked").waitFor();
    assert.equal((await stack.api.call(key, "GET", "/v1/teams/current")).status, 401);
  });

  test("usage and the audit log show, and the audit log filters", async () => {
    await page.getByRole("link", { name: "Usage" }).click();
    await page.locator('figure[data-chart="Sandbox hours per day"]').waitFor();
    await page.getByRole("link", { name: "Audit log" }).click();
    await page.getByRole("table", { name: "Audit log" }).getByText("api_key.revoke").first().waitFor();
    await page.getByLabel("Action").fill("sandbox.create");
    await page.getByRole("button", { name: "Filter" }).click();
    await waitUntil("only sandbox.create entries", async () => {
      const actions = await page.locator('table[aria-label="Audit log"] tbody tr td:nth-child(2)').allInnerTexts();
      return actions.length > 0 && actions.every((action) => action === "sandbox.create");
    });
  });

  test("kills the sandbox from the list after confirmation", async () => {
    await page.getByRole("link", { name: "Sandboxes" }).click();
    await page.getByRole("button", { name: `Kill ${sandboxId}` }).click();
    await page.getByRole("dialog", { name: "Kill sandbox" }).getByRole("button", { name: "Kill" }).click();
    await page.locator(`tr[data-sandbox="${sandboxId}"]`).waitFor({ state: "detached", timeout: 60_000 });
  });

  test("works at phone width, signs out, and signs in with an API key", async () => {
    await page.setViewportSize({ width: 390, height: 800 });
    await page.getByRole("heading", { name: "Sandboxes" }).waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, `the page is ${overflow}px wider than a phone`);
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByRole("button", { name: "API key" }).click();
    await page.getByLabel("API key").fill(stack.admin.key.key);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Sandboxes" }).waitFor();
    await page.setViewportSize({ width: 1280, height: 860 });
    assert.deepEqual(pageErrors, []);
  });

  test("team: a member added with a password signs in, sees the team, and changes their password", async () => {
    const email = `member-${suffix}@example.com`;
    const first = `first-password-${suffix}`;
    const second = `second-password-${suffix}`;
    const login = async (password: string) =>
      (await fetch(`${stack.url}/v1/auth/login`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ email, password }) })).status;

    // Signed in with the admin team's key (the test before): add the member.
    await page.getByRole("link", { name: "Team" }).click();
    const members = page.getByRole("table", { name: "Members" });
    await members.locator(`tr[data-member="${stack.admin.email}"]`).waitFor();
    await page.getByRole("button", { name: "+ Add member" }).click();
    const add = page.getByRole("dialog", { name: "Add member" });
    await add.getByLabel("Email").fill(email);
    await add.getByLabel("Password").fill(first);
    await add.getByRole("button", { name: "Add" }).click();
    await members.locator(`tr[data-member="${email}"]`).waitFor();
    await add.waitFor({ state: "hidden" });

    // Signed out, then in as the member: the team page shows them, and manages nothing.
    await page.getByRole("button", { name: "Sign out" }).click();
    await signIn(page, stack.url, email, first);
    await page.getByRole("link", { name: "Team" }).click();
    await members.locator(`tr[data-member="${email}"]`).getByText("(you)").waitFor();
    await members.locator(`tr[data-member="${stack.admin.email}"]`).waitFor();
    assert.equal(await page.getByRole("button", { name: "+ Add member" }).count(), 0);

    await page.getByRole("button", { name: "Change my password" }).click();
    const change = page.getByRole("dialog", { name: "Change my password" });
    await change.getByLabel("Current password").fill(first);
    await change.getByLabel("New password", { exact: true }).fill(second);
    await change.getByLabel("Repeat the new password").fill(second);
    await change.getByRole("button", { name: "Change password" }).click();
    await page.getByText("Password changed").waitFor();
    assert.equal(await login(first), 401);
    assert.equal(await login(second), 200);

    // This session outlived the change; the new password signs in through the form.
    await page.reload();
    await page.getByRole("heading", { name: "Team" }).waitFor();
    await page.getByRole("button", { name: "Sign out" }).click();
    await signIn(page, stack.url, email, second);
    assert.deepEqual(pageErrors, []);
  });
});

async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}
