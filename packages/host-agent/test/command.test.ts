import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { CommandError, runCommand } from "../src/exec/command.js";

test("a command's stdout comes back and its stdin is what was given", async () => {
  assert.equal(await runCommand("cat", [], { timeoutMs: 5000, input: "piped\n" }), "piped\n");
});

test("a failing command throws an error with its command line, exit code and stderr", async () => {
  const error = await runCommand("sh", ["-c", "echo oops >&2; exit 3"], { timeoutMs: 5000 }).catch((err: unknown) => err);
  assert.ok(error instanceof CommandError);
  assert.equal(error.exitCode, 3);
  assert.equal(error.stderr, "oops\n");
  assert.match(error.message, /^sh -c 'echo oops >&2; exit 3': exited with 3: oops$/);
});

test("a command that outlives its timeout is killed and reported", async () => {
  const started = Date.now();
  await assert.rejects(runCommand("sleep", ["10"], { timeoutMs: 200 }), /timed out after 200 ms/);
  assert.ok(Date.now() - started < 5000); // well short of the 10 s sleep, with room for a busy machine
});

test("a missing program is an error, not a crash", async () => {
  await assert.rejects(runCommand("/nonexistent/program", [], { timeoutMs: 1000 }), CommandError);
});

test("with outputFile, a command's output goes to the file and a failure quotes its tail", async () => {
  const dir = await mkdtemp(path.join(tmpdir(), "wrenn-command-test-"));
  try {
    const file = path.join(dir, "out.log");
    // The background sleep holds the file open after sh exits, as a detached runsc sandbox does.
    assert.equal(await runCommand("sh", ["-c", "echo started; sleep 1 & exit 0"], { timeoutMs: 2000, outputFile: file }), "");
    await assert.rejects(runCommand("sh", ["-c", "echo broken >&2; exit 1"], { timeoutMs: 2000, outputFile: file }), /exited with 1: started\nbroken/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
