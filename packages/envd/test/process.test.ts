import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import net from "node:net";
import { once } from "node:events";
import { Code, createClient } from "@connectrpc/connect";
import { Process, Signal, type StartResponse } from "@wrenn/proto/envd/process";
import { startEnvdProcess, allTransports, collect, type EnvdUnderTest } from "./harness.js";
import { basicAuth, eventually, expectCode, rssKiB } from "./helpers.js";

const basic = basicAuth;
const text = (bytes: Uint8Array | undefined) => Buffer.from(bytes ?? []).toString("utf8");

interface RunResult {
  pid: number;
  stdout: string;
  stderr: string;
  pty: string;
  exitCode: number;
  exited: boolean;
  status: string;
  /** Set for any end but exit 0. */
  error?: string;
  order: string[];
}

function summarise(events: StartResponse[]): RunResult {
  const result: RunResult = { pid: 0, stdout: "", stderr: "", pty: "", exitCode: NaN, exited: false, status: "", order: [] };
  for (const { event } of events) {
    const e = event?.event;
    if (!e?.case) continue;
    result.order.push(e.case);
    if (e.case === "start") result.pid = e.value.pid;
    if (e.case === "data" && e.value.output.case) result[e.value.output.case] += text(e.value.output.value);
    if (e.case === "end") Object.assign(result, { exitCode: e.value.exitCode, exited: e.value.exited, status: e.value.status, error: e.value.error });
  }
  return result;
}

const isAlive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const waitFor = (check: () => boolean, what: string) => eventually(() => check() || undefined, what, 10_000);

describe("process service", () => {
  let envd: EnvdUnderTest;
  const run = async (cmd: string, args: string[], options: Record<string, unknown> = {}, headers: Record<string, string> = {}) =>
    summarise(await collect(envd.process.start({ process: { cmd, args }, stdin: false, ...options }, { headers })));

  before(async () => {
    envd = await startEnvdProcess();
  });
  after(async () => {
    await envd.stop();
  });

  test("a command streams start first, then its output in order, then its exit status", async () => {
    const r = await run("/bin/bash", ["-c", "echo one; echo two >&2; echo three; exit 3"]);
    assert.equal(r.order[0], "start");
    assert.equal(r.order.at(-1), "end");
    assert.ok(r.pid > 0);
    assert.equal(r.stdout, "one\nthree\n");
    assert.equal(r.stderr, "two\n");
    assert.deepEqual([r.exitCode, r.exited, r.status, r.error], [3, true, "exit status 3", "exit status 3"], "error: Go's cmd.Wait() error, as E2B's envd sends it");
  });

  test("output printed only at the end of a longer run is never lost, even with many commands at once", async () => {
    // Each runs longer than envd's idle-after-exit window before printing: its output may still
    // be unread in the pipe when 'exit' arrives, and must not count as a quiet pipe.
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => run("/bin/sh", ["-c", `sleep 0.15; echo ${i}`])));
    assert.deepEqual(results.map((r) => r.stdout), Array.from({ length: 40 }, (_, i) => `${i}\n`));
  });

  test("every protocol envd serves runs a command", async () => {
    for (const [name, transport] of Object.entries(allTransports(envd.url))) {
      const client = createClient(Process, transport);
      const r = summarise(await collect(client.start({ process: { cmd: "/bin/echo", args: ["hi", name] }, stdin: false })));
      assert.equal(r.stdout, `hi ${name}\n`, name);
      assert.equal(r.exitCode, 0, name);
      assert.equal(r.error, undefined, "a clean exit carries no error");
    }
  });

  test("output is streamed as it is produced, not at exit", async () => {
    const stream = envd.process.start({ process: { cmd: "/bin/bash", args: ["-c", "echo first; sleep 3; echo second"] }, stdin: false });
    const started = Date.now();
    for await (const { event } of stream) {
      if (event?.event.case === "data") {
        assert.equal(text(event.event.value.output.value as Uint8Array), "first\n");
        assert.ok(Date.now() - started < 2000, "first line arrived before the process ended");
        break;
      }
    }
  });

  test("a process gets the requested env, cwd, and the defaults set by /init", async () => {
    const init = await envd.init({ envVars: { FROM_INIT: "init-value", OVERRIDDEN: "init" } });
    assert.equal(init.status, 204);
    const r = await run("/bin/bash", ["-c", 'echo "$FROM_INIT $OVERRIDDEN $MINE $HOME $USER"; pwd'], {
      process: { cmd: "/bin/bash", args: ["-c", 'echo "$FROM_INIT $OVERRIDDEN $MINE $HOME $USER"; pwd'], envs: { MINE: "mine", OVERRIDDEN: "request" }, cwd: "/tmp" },
    }, basic("root"));
    assert.equal(r.stdout, "init-value request mine /root root\n/tmp\n");
    const env = await (await fetch(`${envd.url}/envs`)).json();
    assert.equal(env.FROM_INIT, "init-value");
  });

  test("a relative cwd is resolved against the user's home, and a missing one is refused", async () => {
    const r = await run("/bin/pwd", [], { process: { cmd: "/bin/pwd", cwd: "." } }, basic("root"));
    assert.equal(r.stdout, "/root\n");
    await expectCode(collect(envd.process.start({ process: { cmd: "/bin/pwd", cwd: "/does/not/exist" } })), Code.InvalidArgument);
  });

  test("a process runs as the requested user", async () => {
    const r = await run("/usr/bin/id", ["-u"], {}, basic("nobody"));
    assert.equal(r.stdout.trim(), "65534");
    await expectCode(collect(envd.process.start({ process: { cmd: "/usr/bin/id" } }, { headers: basic("no-such-user") })), Code.InvalidArgument);
  });

  test("without a named user, a process runs as the default user, falling back to root when it does not exist", async () => {
    await envd.init({ defaultUser: "no-such-default" });
    assert.equal((await run("/usr/bin/id", ["-un"])).stdout.trim(), "root");
    await envd.init({ defaultUser: "nobody" });
    assert.equal((await run("/usr/bin/id", ["-un"])).stdout.trim(), "nobody");
    await envd.init({ defaultUser: "user" });
  });

  test("bad start requests get clear errors", async () => {
    await expectCode(collect(envd.process.start({ process: { cmd: "" } })), Code.InvalidArgument);
    await expectCode(collect(envd.process.start({})), Code.InvalidArgument);
    const err = await expectCode(collect(envd.process.start({ process: { cmd: "/no/such/binary" } })), Code.NotFound);
    assert.match(err.message, /\/no\/such\/binary/);
  });

  test("stdin can be written, streamed and closed", async () => {
    const stream = envd.process.start({ process: { cmd: "/bin/cat" }, stdin: true });
    const events = stream[Symbol.asyncIterator]();
    const first = await events.next();
    assert.equal(first.value.event.event.case, "start");
    const pid = first.value.event.event.value.pid as number;
    await envd.process.sendInput({ process: { selector: { case: "pid", value: pid } }, input: { input: { case: "stdin", value: Buffer.from("hello\n") } } });
    const echoed = await events.next();
    assert.equal(text(echoed.value.event.event.value.output.value), "hello\n");
    // Client-streamed input over HTTP/1.1 and over h2.
    for (const transport of [envd.transport, allTransports(envd.url)["connect over h2c"]!]) {
      const client = createClient(Process, transport);
      async function* input() {
        yield { event: { case: "start" as const, value: { process: { selector: { case: "pid" as const, value: pid } } } } };
        yield { event: { case: "data" as const, value: { input: { input: { case: "stdin" as const, value: Buffer.from("streamed\n") } } } } };
      }
      await client.streamInput(input());
      const got = await events.next();
      assert.equal(text(got.value.event.event.value.output.value), "streamed\n");
    }
    await envd.process.closeStdin({ process: { selector: { case: "pid", value: pid } } });
    const rest = summarise((await collect({ [Symbol.asyncIterator]: () => events })) as StartResponse[]);
    assert.equal(rest.exitCode, 0);
  });

  test("stdin: false gives the process an empty stdin, and input to it is refused", async () => {
    const r = await run("/bin/cat", []);
    assert.equal(r.exitCode, 0);
    const stream = envd.process.start({ process: { cmd: "/bin/sleep", args: ["5"] }, stdin: false });
    const events = stream[Symbol.asyncIterator]();
    const pid = (await events.next()).value.event.event.value.pid as number;
    const selector = { selector: { case: "pid" as const, value: pid } };
    await expectCode(envd.process.sendInput({ process: selector, input: { input: { case: "stdin", value: Buffer.from("x") } } }), Code.FailedPrecondition);
    await envd.process.sendSignal({ process: selector, signal: Signal.SIGKILL });
    const rest = summarise((await collect({ [Symbol.asyncIterator]: () => events })) as StartResponse[]);
    assert.deepEqual([rest.exitCode, rest.exited, rest.status, rest.error], [-1, false, "signal: killed", "signal: killed"]);
  });

  /** bash in a terminal of `cols` × `rows`: type into it, read its screen until a pattern shows, then its exit code. */
  async function shell(cols: number, rows: number) {
    const stream = envd.process.start({ process: { cmd: "/bin/bash", args: ["--norc", "--noprofile", "-i"], envs: { PS1: "$ " } }, pty: { size: { cols, rows } } });
    const events = stream[Symbol.asyncIterator]();
    const pid = (await events.next()).value.event.event.value.pid as number;
    const selector = { selector: { case: "pid" as const, value: pid } };
    const terminal = {
      selector,
      screen: "",
      type: (s: string) => envd.process.sendInput({ process: selector, input: { input: { case: "pty", value: Buffer.from(s) } } }),
      async readUntil(pattern: RegExp) {
        while (!pattern.test(terminal.screen)) {
          const next = await events.next();
          assert.ok(!next.done, `stream ended before ${pattern}: ${terminal.screen}`);
          const e = next.value.event?.event;
          if (e?.case === "data") {
            assert.equal(e.value.output.case, "pty");
            terminal.screen += text(e.value.output.value);
          }
        }
      },
      exitCode: async () => summarise((await collect({ [Symbol.asyncIterator]: () => events })) as StartResponse[]).exitCode,
    };
    return terminal;
  }

  test("a PTY gives a terminal of the requested size that can be resized and typed into", async () => {
    const { selector, type, readUntil, exitCode } = await shell(91, 33);
    await type("stty size; tty; echo $TERM\n");
    await readUntil(/33 91[\s\S]*\/dev\/pts\/\d+[\s\S]*xterm-256color/);
    await envd.process.update({ process: selector, pty: { size: { cols: 120, rows: 40 } } });
    await type("stty size\n");
    await readUntil(/40 120/);
    await expectCode(envd.process.update({ process: selector, pty: { size: { cols: 0, rows: 40 } } }), Code.InvalidArgument);
    await type("exit 7\n");
    assert.equal(await exitCode(), 7);
  });

  test("Ctrl-C typed into a PTY interrupts the running command and the shell takes the next line", async () => {
    const terminal = await shell(80, 24);
    const { type, readUntil } = terminal;
    await type("sleep 100; echo slept-$((2+2))\n");
    await readUntil(/sleep 100; echo slept/);
    await sleep(300);
    await type("\x03");
    await type("echo status-$?\n");
    await readUntil(/status-130\r\n/);
    assert.ok(!terminal.screen.includes("slept-4"), terminal.screen);
    await type("exit 0\n");
    assert.equal(await terminal.exitCode(), 0);
  });

  test("a process outlives its caller's disconnect and can be re-attached by tag or pid", async () => {
    const controller = new AbortController();
    const stream = envd.process.start(
      { process: { cmd: "/bin/bash", args: ["-c", "for i in $(seq 1 100); do echo tick $i; sleep 0.1; done"] }, tag: "ticker", stdin: false },
      { signal: controller.signal },
    );
    let pid = 0;
    for await (const { event } of stream) {
      if (event?.event.case === "start") pid = event.event.value.pid;
      if (event?.event.case === "data") break;
    }
    controller.abort();
    await sleep(300);
    assert.ok(isAlive(pid), "the process is still running after the caller left");
    const listed = await envd.process.list({});
    const info = listed.processes.find((p) => p.pid === pid);
    assert.equal(info?.tag, "ticker");
    assert.equal(info?.config?.cmd, "/bin/bash");

    await expectCode(collect(envd.process.start({ process: { cmd: "/bin/true" }, tag: "ticker" })), Code.AlreadyExists);

    for (const selector of [{ case: "tag" as const, value: "ticker" }, { case: "pid" as const, value: pid }]) {
      const again = envd.process.connect({ process: { selector } });
      const seen: string[] = [];
      for await (const { event } of again) {
        if (event?.event.case === "start") assert.equal(event.event.value.pid, pid);
        seen.push(event?.event.case ?? "");
        if (event?.event.case === "data") {
          assert.match(text(event.event.value.output.value as Uint8Array), /tick \d+/);
          break;
        }
      }
      assert.deepEqual(seen.slice(0, 1), ["start"]);
    }
    await envd.process.sendSignal({ process: { selector: { case: "tag", value: "ticker" } }, signal: Signal.SIGTERM });
    await waitFor(() => !isAlive(pid), "the ticker to end");
    await expectCode(collect(envd.process.connect({ process: { selector: { case: "pid", value: pid } } })), Code.NotFound);
  });

  test("a start's deadline (the SDK's timeoutMs) is its process's lifetime; a connect's deadline is not", async () => {
    const stream = envd.process.start({ process: { cmd: "/bin/sleep", args: ["30"] }, stdin: false }, { timeoutMs: 1500 });
    const events = stream[Symbol.asyncIterator]();
    const pid = (await events.next()).value.event.event.value.pid as number;
    await expectCode(collect(envd.process.connect({ process: { selector: { case: "pid", value: pid } } }, { timeoutMs: 300 })), Code.DeadlineExceeded);
    assert.ok(isAlive(pid), "a re-attach that timed out leaves the process running");
    // The caller's stream ends at the deadline too: with the end event or a deadline error, whichever comes first.
    await collect({ [Symbol.asyncIterator]: () => events }).catch(() => undefined);
    await waitFor(() => !isAlive(pid), "the process to be killed at its deadline");
  });

  test("a signal reaches the whole process group, not only its leader", async () => {
    const stream = envd.process.start({ process: { cmd: "/bin/bash", args: ["-c", "sleep 1000 & echo $!; wait"] }, stdin: false });
    const events = stream[Symbol.asyncIterator]();
    const pid = (await events.next()).value.event.event.value.pid as number;
    const childPid = Number(text((await events.next()).value.event.event.value.output.value));
    assert.ok(isAlive(childPid));
    await envd.process.sendSignal({ process: { selector: { case: "pid", value: pid } }, signal: Signal.SIGTERM });
    const rest = summarise((await collect({ [Symbol.asyncIterator]: () => events })) as StartResponse[]);
    assert.equal(rest.status, "signal: terminated");
    await waitFor(() => !isAlive(childPid), "the background child to be terminated too");
  });

  test("signals, input and resizes to unknown processes are not_found; an unspecified signal is invalid", async () => {
    const missing = { selector: { case: "pid" as const, value: 999_999 } };
    await expectCode(envd.process.sendSignal({ process: missing, signal: Signal.SIGKILL }), Code.NotFound);
    await expectCode(envd.process.sendInput({ process: missing, input: { input: { case: "stdin", value: Buffer.from("x") } } }), Code.NotFound);
    await expectCode(envd.process.closeStdin({ process: { selector: { case: "tag", value: "nobody-has-this-tag" } } }), Code.NotFound);
    await expectCode(collect(envd.process.connect({ process: missing })), Code.NotFound);
    await expectCode(envd.process.sendSignal({ process: {}, signal: Signal.SIGKILL }), Code.InvalidArgument);
    const stream = envd.process.start({ process: { cmd: "/bin/sleep", args: ["5"] }, stdin: false });
    const events = stream[Symbol.asyncIterator]();
    const pid = (await events.next()).value.event.event.value.pid as number;
    const selector = { selector: { case: "pid" as const, value: pid } };
    await expectCode(envd.process.sendSignal({ process: selector, signal: Signal.UNSPECIFIED }), Code.InvalidArgument);
    await expectCode(envd.process.update({ process: selector, pty: { size: { cols: 10, rows: 10 } } }), Code.FailedPrecondition);
    await envd.process.sendSignal({ process: selector, signal: Signal.SIGKILL });
    await collect({ [Symbol.asyncIterator]: () => events });
  });

  test("keepalive events arrive at the interval the caller asks for", async () => {
    const events = await collect(
      envd.process.start({ process: { cmd: "/bin/sleep", args: ["2.5"] }, stdin: false }, { headers: { "Keepalive-Ping-Interval": "1" } }),
    );
    const r = summarise(events);
    assert.ok(r.order.filter((c) => c === "keepalive").length >= 2, r.order.join(","));
    assert.equal(r.order.at(-1), "end");
  });

  test("endless output to a slow reader, or to no reader, does not grow envd's memory", async () => {
    const before = await rssKiB(envd.pid);
    const controller = new AbortController();
    const stream = envd.process.start({ process: { cmd: "/usr/bin/yes", args: ["x".repeat(1000)] }, stdin: false, tag: "flood" }, { signal: controller.signal });
    let received = 0;
    for await (const { event } of stream) {
      if (event?.event.case === "data") received += event.event.value.output.value?.length ?? 0;
      if (received > 5_000_000) break; // stop reading but keep the stream open: a stalled reader
    }
    await sleep(2000);
    const stalled = await rssKiB(envd.pid);
    controller.abort();
    await sleep(2000); // nobody attached: output is dropped, the process runs on
    const detached = await rssKiB(envd.pid);
    await envd.process.sendSignal({ process: { selector: { case: "tag", value: "flood" } }, signal: Signal.SIGKILL });
    assert.ok(stalled - before < 64 * 1024, `RSS grew by ${stalled - before} KiB with a stalled reader`);
    assert.ok(detached - before < 64 * 1024, `RSS grew by ${detached - before} KiB with no reader`);
  });

  test("a reader that stalls and then vanishes does not leave the process blocked", async () => {
    const body = JSON.stringify({ process: { cmd: "/usr/bin/yes", args: ["x".repeat(100)] }, stdin: false, tag: "stalled" });
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    frame.write(body, 5);
    const socket = net.connect(envd.port, "127.0.0.1");
    await once(socket, "connect");
    socket.write(`POST /process.Process/Start HTTP/1.1\r\nHost: envd\r\nContent-Type: application/connect+json\r\nContent-Length: ${frame.length}\r\n\r\n`);
    socket.write(frame);
    await once(socket, "data");
    socket.pause(); // stop reading: envd's writes back up and its reader falls behind
    await sleep(1500);
    socket.destroy(); // then vanish
    const selector = { selector: { case: "tag" as const, value: "stalled" } };
    let received = 0;
    for await (const { event } of envd.process.connect({ process: selector }, { signal: AbortSignal.timeout(5000) })) {
      if (event?.event.case === "data") received += event.event.value.output.value?.length ?? 0;
      if (received > 1_000_000) break;
    }
    assert.ok(received > 1_000_000, `the process produced output again after its stalled reader left (${received} bytes)`);
    await envd.process.sendSignal({ process: selector, signal: Signal.SIGKILL });
  });

  test("malformed requests get errors and never crash envd", async () => {
    const post = (path: string, body: BodyInit, contentType: string) =>
      fetch(`${envd.url}${path}`, { method: "POST", headers: { "content-type": contentType }, body });
    assert.equal((await post("/process.Process/List", "{not json", "application/json")).status, 400);
    // connect-es answers `internal` for undecodable binary protobuf, as gRPC does (connect-go says invalid_argument).
    assert.equal((await post("/process.Process/List", Buffer.from([0xff, 0xff, 0xff]), "application/proto")).status, 500);
    assert.equal((await post("/process.Process/Start", Buffer.from([0, 0x7f, 0xff, 0xff, 0xff, 1, 2]), "application/connect+proto")).status, 200); // error travels in the end-of-stream frame
    assert.equal((await post("/process.Process/Nope", "{}", "application/json")).status, 404);
    assert.equal((await fetch(`${envd.url}/no/such/path`)).status, 404);
    assert.equal((await fetch(`${envd.url}/health`)).status, 204);
    assert.equal((await run("/bin/echo", ["still here"])).stdout, "still here\n");
  });
});

describe("access token", () => {
  let envd: EnvdUnderTest;
  before(async () => {
    envd = await startEnvdProcess();
  });
  after(async () => {
    await envd.stop();
  });

  test("once /init sets a token, every request but /health must carry it", async () => {
    assert.equal((await envd.init({ accessToken: "s3cret" })).status, 204);
    assert.equal((await fetch(`${envd.url}/health`)).status, 204);
    assert.equal((await fetch(`${envd.url}/envs`)).status, 401);
    assert.equal((await fetch(`${envd.url}/envs`, { headers: { "X-Access-Token": "wrong" } })).status, 401);
    await expectCode(envd.process.list({}), Code.Unauthenticated);
    const ok = await envd.process.list({}, { headers: { "X-Access-Token": "s3cret" } });
    assert.ok(Array.isArray(ok.processes));
    assert.equal((await envd.init({ accessToken: "other" })).status, 401, "only the token holder may re-initialise");
    assert.equal((await envd.init({ accessToken: "" }, { "X-Access-Token": "s3cret" })).status, 204);
    assert.equal((await fetch(`${envd.url}/envs`)).status, 200);
  });

  test("a token given at start (WRENN_ENVD_ACCESS_TOKEN) is required from the first request, hidden from processes, and /init replaces it", async () => {
    const booted = await startEnvdProcess({ env: { WRENN_ENVD_ACCESS_TOKEN: "boot-token" } });
    try {
      assert.equal((await fetch(`${booted.url}/health`)).status, 204);
      assert.equal((await fetch(`${booted.url}/envs`)).status, 401, "open before /init");
      await expectCode(booted.process.list({}), Code.Unauthenticated);
      assert.equal((await booted.init({ accessToken: "mine" })).status, 401, "anyone may /init");
      const headers = { "X-Access-Token": "boot-token" };
      const env = await collect(booted.process.start({ process: { cmd: "/usr/bin/env", args: [] } }, { headers }));
      const stdout = env.map((r) => (r.event?.event.case === "data" && r.event.event.value.output.case === "stdout" ? Buffer.from(r.event.event.value.output.value).toString() : "")).join("");
      assert.ok(stdout.includes("PATH="), stdout);
      assert.ok(!stdout.includes("WRENN_ENVD_ACCESS_TOKEN"), "a process inherited the boot token");
      assert.equal((await booted.init({ accessToken: "sandbox-token" }, headers)).status, 204);
      assert.equal((await fetch(`${booted.url}/envs`, { headers })).status, 401, "the boot token still opens envd");
      assert.equal((await fetch(`${booted.url}/envs`, { headers: { "X-Access-Token": "sandbox-token" } })).status, 200);
    } finally {
      await booted.stop();
    }
  });

  test("/init rejects bodies that are not what it expects", async () => {
    const post = (body: string) => fetch(`${envd.url}/init`, { method: "POST", headers: { "content-type": "application/json" }, body });
    assert.equal((await post("{nope")).status, 400);
    assert.equal((await post("[1,2]")).status, 400);
    assert.equal((await post(JSON.stringify({ envVars: { A: 1 } }))).status, 400);
    assert.equal((await post(JSON.stringify({ accessToken: 5 }))).status, 400);
    assert.equal((await post(JSON.stringify({ timestamp: "yesterday-ish" }))).status, 400);
    assert.equal((await post(JSON.stringify({ timestamp: 5 }))).status, 400);
    // A hostname is checked before anything is set (this envd runs on the test machine: a name is
    // only ever set inside a VM, tested in host-agent/test/qemu.test.ts).
    for (const hostname of [5, "", "two words", "a/b", "x".repeat(65), "-leading-dash", "new\nline"]) {
      const answer = await post(JSON.stringify({ hostname, envVars: { SET_BY_A_BAD_INIT: "1" } }));
      assert.equal(answer.status, 400, JSON.stringify(hostname));
      assert.match(await answer.text(), /hostname must be/);
    }
    assert.equal((await fetch(`${envd.url}/envs`).then((r) => r.json()) as Record<string, string>).SET_BY_A_BAD_INIT, undefined, "a refused /init changed the env");
    // The host's own time: nothing to set (this envd runs on the test machine: a clock that is off
    // is only ever set inside a VM, tested in host-agent/test/qemu.test.ts).
    assert.equal((await post(JSON.stringify({ timestamp: new Date().toISOString() }))).status, 204);
    assert.equal((await post("x".repeat(2 << 20))).status, 400);
    assert.equal((await fetch(`${envd.url}/health`)).status, 204);
  });
});
