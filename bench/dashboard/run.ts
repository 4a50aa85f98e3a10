// Benchmarks the dashboard against the API it drives, in the same run on the same stack:
// - in chromium (headless, Debian's), from the click on "Create" in the new-sandbox dialog to a
//   usable shell prompt in the sandbox page's terminal (the WebSocket's PTY printed bash's prompt);
// - over REST, `POST /v1/sandboxes` → the first `POST /v1/sandboxes/:id/exec` (echo) answered:
//   the floor any client of the API pays for a new sandbox it can run something in.
// The two alternate run for run (p50 over --runs, default 10) on the `busybox-bash` template; each
// sandbox is killed after its run, outside the measurement. Also reports the dashboard's JS
// bundle, gzipped (goal < 500 kB).
// Usage: `make bench-dashboard`, or `node --import tsx bench/dashboard/run.ts [--runs 10]` (root;
// uses the dashboard tests' address pool with a table of its own: not beside their e2e test).
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { gzipSync } from "node:zlib";
import { BASH_TEMPLATE, launchBrowser, signIn, skipBrowser, startDashboardStack, terminalLines } from "../../packages/dashboard/test/stack.js";

const { values } = parseArgs({ options: { runs: { type: "string", default: "10" } } });
const RUNS = Number(values.runs);
const POOL = "10.238.0.0/26";
const TABLE = "wrenn_t_dash_bench";
const BUNDLE_GOAL_BYTES = 500 * 1000;
const ASSETS = fileURLToPath(new URL("../../packages/dashboard/dist/assets/", import.meta.url));

const ms = (value: number) => `${value.toFixed(0)} ms`;
function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

async function bundleSize(): Promise<{ raw: number; gzipped: number; files: string[] }> {
  const files = (await readdir(ASSETS)).filter((name) => name.endsWith(".js"));
  let raw = 0;
  let gzipped = 0;
  for (const name of files) {
    const body = await readFile(path.join(ASSETS, name));
    raw += body.length;
    gzipped += gzipSync(body, { level: 9 }).length;
  }
  return { raw, gzipped, files };
}

async function main(): Promise<void> {
  if (skipBrowser) throw new Error(`cannot run: ${skipBrowser}`);
  const bundle = await bundleSize();
  const stack = await startDashboardStack({ pool: POOL, table: TABLE });
  const browser = await launchBrowser();
  const call = (method: string, url: string, body?: unknown) => stack.api.call(stack.admin.key, method, url, body);
  const browserMs: number[] = [];
  const apiMs: number[] = [];
  try {
    const { page } = browser;
    page.setDefaultTimeout(120_000);
    await signIn(page, stack.url, stack.admin.email, stack.admin.password);
    // One of each first, unmeasured: the template's first start on this host, the page's code warm.
    for (let run = -1; run < RUNS; run++) {
      // The dashboard: the dialog filled in, then the clock runs from the click to the prompt.
      await page.goto(`${stack.url}/ui/sandboxes`);
      await page.getByRole("button", { name: "+ New sandbox" }).click();
      const dialog = page.getByRole("dialog", { name: "New sandbox" });
      await dialog.getByLabel("Template").selectOption(BASH_TEMPLATE);
      await dialog.getByLabel("Memory (MiB)").fill("256");
      const started = performance.now();
      await dialog.getByRole("button", { name: "Create" }).click();
      await page.waitForURL(/\/ui\/sandboxes\/[a-z0-9]+$/);
      const deadline = Date.now() + 120_000;
      while (!(await terminalLines(page)).some((line) => /\$\s*$/.test(line.replace(/\u00a0/g, " ")))) {
        if (Date.now() > deadline) throw new Error("no shell prompt in the terminal after 120 s");
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      const browserRun = performance.now() - started;
      const id = new URL(page.url()).pathname.split("/").pop()!;
      await page.goto("about:blank");
      await call("DELETE", `/v1/sandboxes/${id}`);

      // The API: create, then the first command in it.
      const apiStarted = performance.now();
      const created = await call("POST", "/v1/sandboxes", { template: BASH_TEMPLATE, memoryMb: 256 });
      if (created.status !== 201) throw new Error(`create: ${created.status} ${await created.text()}`);
      const { id: apiId } = (await created.json()) as { id: string };
      const exec = await call("POST", `/v1/sandboxes/${apiId}/exec`, { cmd: "echo", args: ["hi"] });
      const answer = (await exec.json()) as { stdout?: string };
      if (answer.stdout !== "hi\n") throw new Error(`exec: ${exec.status} ${JSON.stringify(answer)}`);
      const apiRun = performance.now() - apiStarted;
      await call("DELETE", `/v1/sandboxes/${apiId}`);

      if (run < 0) continue;
      browserMs.push(browserRun);
      apiMs.push(apiRun);
      console.log(`run ${run + 1}/${RUNS}: dashboard click → prompt ${ms(browserRun)}; API create → first exec ${ms(apiRun)}`);
    }
  } finally {
    await browser.close();
    await stack.close();
  }

  const p50 = { browser: percentile(browserMs, 50), api: percentile(apiMs, 50) };
  console.log("");
  console.log(`| measure (${RUNS} runs) | p50 | p90 |`);
  console.log("|---|---|---|");
  console.log(`| dashboard: click "Create" → usable terminal prompt | ${ms(p50.browser)} | ${ms(percentile(browserMs, 90))} |`);
  console.log(`| API: POST /v1/sandboxes → first exec answered | ${ms(p50.api)} | ${ms(percentile(apiMs, 90))} |`);
  console.log(`| the dashboard's own share (p50 difference) | ${ms(p50.browser - p50.api)} | |`);
  console.log(`| ratio to the API's floor (p50s) | ${(p50.browser / p50.api).toFixed(2)}× | |`);
  console.log("");
  const verdict = bundle.gzipped < BUNDLE_GOAL_BYTES ? "under" : "OVER";
  console.log(`JS bundle: ${bundle.files.join(", ")}: ${(bundle.raw / 1000).toFixed(1)} kB, ${(bundle.gzipped / 1000).toFixed(1)} kB gzipped (${verdict} the ${BUNDLE_GOAL_BYTES / 1000} kB goal)`);
  if (bundle.gzipped >= BUNDLE_GOAL_BYTES) process.exitCode = 1;
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
