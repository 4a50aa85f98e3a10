// The QMP client against a socket that behaves as QEMU's does when commands come in quick
// succession: a backlog of one, and no accept until the last client is done. QEMU itself cannot
// be made to hold its backlog full on demand, so a small listener (python3, which can listen without
// accepting) stands in for it here; qemu.test.ts runs the client against real VMs.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { qmp } from "../src/sandbox/runtime/qmp.js";

// Listens with a backlog of one, accepts nothing for `hold` seconds, then serves each client in
// turn: a greeting, and an answer to every command (query-status: running).
const LISTENER = `
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(1)
print("ready", flush=True)
time.sleep(float(sys.argv[2]))
while True:
    c, _ = s.accept()
    f = c.makefile("rw")
    f.write(json.dumps({"QMP": {"version": {}}}) + "\\n"); f.flush()
    for line in f:
        execute = json.loads(line)["execute"]
        f.write(json.dumps({"return": {"status": "running"} if execute == "query-status" else {}}) + "\\n"); f.flush()
    c.close()
`;

describe("QMP client", () => {
  let dir: string;
  const listeners: ChildProcess[] = [];

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "wrenn-qmp-test-"));
  });

  after(async () => {
    for (const listener of listeners) if (listener.exitCode === null) listener.kill();
    await rm(dir, { recursive: true, force: true });
  });

  /**
   * A listener at `socketPath` that accepts nothing for `holdSec`, its backlog filled by two
   * clients (QEMU's case: the last command's connection, not yet seen hung up); those clients.
   */
  async function fullListener(socketPath: string, holdSec: number): Promise<net.Socket[]> {
    const listener = spawn("python3", ["-c", LISTENER, socketPath, String(holdSec)], { stdio: ["ignore", "pipe", "inherit"] });
    listeners.push(listener);
    const [line] = (await once(createInterface({ input: listener.stdout! }), "line")) as [string];
    assert.equal(line, "ready");
    const fillers: net.Socket[] = [];
    for (let i = 0; i < 2; i++) {
      const filler = net.connect(socketPath);
      await once(filler, "connect");
      fillers.push(filler);
    }
    return fillers;
  }

  test("a socket with no room for another client is tried again until it has (QEMU's backlog of one)", async () => {
    const socketPath = path.join(dir, "busy.qmp");
    const fillers = await fullListener(socketPath, 0.4);
    const refused = net.connect(socketPath);
    const [err] = (await once(refused, "error")) as [NodeJS.ErrnoException];
    assert.equal(err.code, "EAGAIN", "the listener's backlog is full");
    const answer = qmp<{ status: string }>(socketPath, "query-status", undefined, 5_000);
    await sleep(200);
    for (const filler of fillers) filler.end();
    assert.deepEqual(await answer, { status: "running" });
    // Commands in quick succession, as a pause's migration polling sends them.
    for (let i = 0; i < 20; i++) assert.deepEqual(await qmp(socketPath, "query-status", undefined, 5_000), { status: "running" });
  });

  test("a socket that stays full past the command's timeout fails with EAGAIN, in time", async () => {
    const socketPath = path.join(dir, "full.qmp");
    const fillers = await fullListener(socketPath, 30);
    const started = performance.now();
    await assert.rejects(qmp(socketPath, "query-status", undefined, 300), { code: "EAGAIN" });
    assert.ok(performance.now() - started < 5_000);
    for (const filler of fillers) filler.destroy();
  });
});
