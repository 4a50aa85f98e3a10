// The dashboard's component tests run under vitest (happy-dom, JSX); the repository's test runner
// is node's, so this file runs the vitest suite once as a child process and fails when it fails.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";

const packageDir = fileURLToPath(new URL("..", import.meta.url));
// vitest's own launcher, wherever npm hoisted it (`npx vitest run`, without npx's lookups).
const vitestBin = path.join(path.dirname(createRequire(import.meta.url).resolve("vitest/package.json")), "vitest.mjs");

test("the dashboard's component tests pass (vitest run)", { timeout: 300_000 }, async () => {
  const child = spawn(process.execPath, [vitestBin, "run", "--reporter=dot"], {
    cwd: packageDir,
    env: { ...process.env, CI: "1", NO_COLOR: "1" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  assert.equal(code, 0, `vitest failed:\n${output}`);
  assert.match(output, /Tests\s+\d+ passed/);
});
