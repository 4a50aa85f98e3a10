// When a process has exited, envd reads its pipes until they close or fall quiet. Quiet must be
// judged by what a read of the pipes finds, not by a clock alone: when envd's event loop is busy
// (many commands at once, a loaded host), a timer comes due before the loop has polled the pipes
// again, and output already written would be dropped unread.
import { test } from "node:test";
import assert from "node:assert/strict";
import { closeSync, existsSync, mkdtempSync, openSync, rmSync, writeSync, constants } from "node:fs";
import { execFileSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { ProcessConfigSchema } from "@wrenn/proto/envd/process";
import { ManagedProcess } from "../src/process/managed-process.js";

const root = { name: "root", uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, home: "/root", shell: "/bin/sh" };

/** Blocks the event loop, as a burst of other work in envd would. */
function busy(ms: number): void {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    // spin
  }
}

test("output written after the exit, while envd's event loop is busy, is still read", async () => {
  // The shell exits at once; a background `cat` it leaves keeps stdout open and echoes a FIFO
  // (Node closes a child's stdin when it exits, so the input comes another way).
  const dir = mkdtempSync(join(tmpdir(), "wrenn-envd-late-"));
  const fifo = join(dir, "input");
  execFileSync("mkfifo", [fifo]);
  const input = openSync(fifo, constants.O_RDWR); // read-write: opening never waits for the other end
  const script = `cat '${fifo}' & exit 0`;
  const proc = await ManagedProcess.spawn({
    config: create(ProcessConfigSchema, { cmd: "/bin/sh", args: ["-c", script] }),
    file: "/bin/sh",
    args: ["-c", script],
    cwd: "/",
    env: { PATH: "/usr/bin:/bin" },
    user: root,
    stdin: false,
  });
  const reader = proc.attach();
  try {
    // Once the shell is reaped, envd has seen its exit and started waiting for the pipes to end.
    while (existsSync(`/proc/${proc.pid}`)) await sleep(1);
    // Output arrives (cat echoes it), and the loop is held for longer than the idle window:
    // the idle timer comes due before the next poll of the pipes.
    setImmediate(() => {
      writeSync(input, "late\n");
      busy(300);
    });
    let stdout = "";
    for (let next = await reader.next(); !next.done; next = await reader.next()) {
      const { event } = next.value;
      if (event.case === "data" && event.value.output.case === "stdout") stdout += Buffer.from(event.value.output.value).toString();
    }
    assert.equal(stdout, "late\n");
    assert.equal((await proc.finished).exitCode, 0);
  } finally {
    closeSync(input);
    rmSync(dir, { recursive: true, force: true });
    try {
      process.kill(-proc.pid, "SIGKILL"); // the background cat, in the shell's process group
    } catch {
      // already gone
    }
  }
});
