// A sandbox's logs (what envd prints) over GetSandboxLogs, with a real agent and a real gVisor
// sandbox: envd's start-up lines, start and limit, paused sandboxes, unknown ids, and the cap that
// keeps console.log bounded while envd keeps appending to it. Plus the line parser on its own.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import type { SandboxLogEntry } from "@wrenn/proto/hostagent";
import { capConsoleLog } from "../src/sandbox/logs/console-log.js";
import { consoleLogOf } from "../src/sandbox/runtime/gvisor.js";
import { parseLogLines } from "../src/sandbox/logs/entry.js";
import { TEST_TEMPLATE, codeOf, terminateAgent, skipAgent, startAgentProcess, type AgentUnderTest } from "./agent-harness.js";

const POOL = "10.245.0.0/24";
const TABLE = "wrenn_h1_logs_agent";

test("pino lines become level, message and fields; other lines take the time of the line before", () => {
  const entries = parseLogLines(
    [
      "starting up",
      '{"level":30,"time":1700000000000,"pid":1,"name":"envd","msg":"envd listening","port":49983}',
      "envd listening on port 49983",
      '{"level":50,"time":1700000000500,"msg":"boom","err":{"message":"x"}}',
      '{"level":60,"time":1700000000600,"msg":"fatal"}',
      '{"level":10,"time":1700000000700,"msg":"trace"}',
      '{"not":"pino"}',
    ],
    42,
  );
  assert.deepEqual(
    entries.map((e) => [e.timestampMs, e.level, e.message]),
    [
      [1700000000000, "info", "starting up"], // no line before it: the first timed one after
      [1700000000000, "info", "envd listening"],
      [1700000000000, "info", "envd listening on port 49983"],
      [1700000000500, "error", "boom"],
      [1700000000600, "error", "fatal"],
      [1700000000700, "debug", "trace"],
      [1700000000700, "info", '{"not":"pino"}'],
    ],
  );
  assert.deepEqual(entries[1]!.fields, { pid: "1", name: "envd", port: "49983" });
  assert.deepEqual(entries[3]!.fields, { err: '{"message":"x"}' });
  assert.deepEqual(entries[2]!.fields, {});
  assert.equal(entries[2]!.line, "envd listening on port 49983");
  assert.deepEqual(parseLogLines(["only plain"], 42).map((e) => e.timestampMs), [42]);
});

describe("sandbox logs", { skip: skipAgent }, () => {
  let agent: AgentUnderTest;
  const sandboxId = "logs1";
  const sandboxDir = () => path.join(agent.dataDir, "sandboxes", sandboxId);

  /** Asks for logs until `done` holds for them (envd writes as it goes; nothing is timed). */
  async function logsUntil(done: (entries: SandboxLogEntry[]) => boolean, request: { startUnixMs?: bigint; limit?: number } = {}): Promise<SandboxLogEntry[]> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const { entries } = await agent.client.getSandboxLogs({ sandboxId, ...request });
      if (done(entries)) return entries;
      if (Date.now() > deadline) throw new Error(`logs never matched; got:\n${entries.map((e) => e.line).join("\n")}`);
      await sleep(50);
    }
  }

  before(async () => {
    agent = await startAgentProcess({ pool: POOL, table: TABLE });
    await agent.client.createSandbox({ sandboxId, template: TEST_TEMPLATE });
  });

  after(async () => {
    if (!agent) return;
    await terminateAgent(agent);
  });

  test("envd's start-up lines appear, structured and plain", async () => {
    const entries = await logsUntil((all) => all.some((e) => e.line === `envd listening on port 49983`));
    const listening = entries.find((e) => e.message === "envd listening");
    assert.ok(listening, `no "envd listening" entry in:\n${entries.map((e) => e.line).join("\n")}`);
    assert.equal(listening.level, "info");
    assert.equal(listening.fields.name, "envd");
    assert.equal(listening.fields.port, "49983");
    assert.ok(Math.abs(Number(listening.timestampUnixMs) - Date.now()) < 3_600_000, "the timestamp is in milliseconds since the epoch");
    const plain = entries.find((e) => e.line === "envd listening on port 49983")!;
    assert.deepEqual(plain.fields, {});
    assert.equal(plain.message, plain.line);
    assert.ok(plain.timestampUnixMs >= listening.timestampUnixMs);
  });

  test("start keeps entries at or after it, limit the oldest of them", async () => {
    await agent.client.exec({ sandboxId, cmd: "/bin/true" });
    const all = await logsUntil((entries) => entries.some((e) => e.message === "process ended"));
    const started = all.find((e) => e.message === "process started")!;
    assert.equal(started.fields.cmd, "/bin/true");

    const from = await agent.client.getSandboxLogs({ sandboxId, startUnixMs: started.timestampUnixMs });
    assert.ok(from.entries.every((e) => e.timestampUnixMs >= started.timestampUnixMs));
    assert.ok(from.entries.some((e) => e.message === "process started"));
    assert.ok(!from.entries.some((e) => e.message === "envd listening" && e.timestampUnixMs < started.timestampUnixMs));

    const future = await agent.client.getSandboxLogs({ sandboxId, startUnixMs: BigInt(Date.now() + 3_600_000) });
    assert.deepEqual(future.entries, []);

    const one = await agent.client.getSandboxLogs({ sandboxId, limit: 1 });
    assert.equal(one.entries.length, 1);
    assert.equal(one.entries[0]!.line, all[0]!.line, "limit keeps the oldest");

    assert.equal(await codeOf(agent.client.getSandboxLogs({ sandboxId, limit: -1 })), "InvalidArgument");
    assert.equal(await codeOf(agent.client.getSandboxLogs({ sandboxId, startUnixMs: -1n })), "InvalidArgument");
  });

  test("a paused sandbox's logs can still be read", async () => {
    await agent.client.pauseSandbox({ sandboxId });
    try {
      const { entries } = await agent.client.getSandboxLogs({ sandboxId });
      assert.ok(entries.some((e) => e.message === "envd listening"));
    } finally {
      await agent.client.resumeSandbox({ sandboxId });
    }
  });

  test("an unknown sandbox is not_found", async () => {
    assert.equal(await codeOf(agent.client.getSandboxLogs({ sandboxId: "nosuchsandbox" })), "NotFound");
  });

  test("a capped console log starts again empty while its tail stays readable", async () => {
    const file = consoleLogOf(sandboxDir());
    const before = await readFile(file, "utf8");
    assert.ok(before.includes("envd listening"));
    // A cap far below the file's size: the whole file goes to console.log.1.
    assert.equal(await capConsoleLog(sandboxDir(), { capBytes: 10, keepBytes: 1024 * 1024 }), true);
    assert.equal((await readFile(file)).length, 0);

    // envd keeps appending to the file it holds open: new lines start at offset 0, no hole.
    await agent.client.exec({ sandboxId, cmd: "/bin/echo", args: ["after-cap"] });
    const entries = await logsUntil((all) => all.some((e) => e.message === "process started" && e.fields.cmd === "/bin/echo"), { limit: 1000 });
    const now = await readFile(file);
    assert.ok(now.length > 0 && now[0] === "{".charCodeAt(0), `console.log after the cap starts with ${JSON.stringify(now.subarray(0, 20).toString())}`);
    assert.ok(!now.includes(0), "no NUL bytes: the writers append at the new end");
    assert.ok(entries.some((e) => e.message === "envd listening"), "the tail kept in console.log.1 is still read");
    assert.equal(await capConsoleLog(sandboxDir()), false, "under the default cap nothing happens");
  });
});
