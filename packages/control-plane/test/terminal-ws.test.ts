// The dashboard's terminal, GET /v1/sandboxes/:id/terminal as a WebSocket, end to end: the `ws`
// client against the API, a real host agent and a gVisor sandbox of `busybox-bash` (the tests'
// busybox template with Debian's bash-static as /bin/bash), so the login shell is bash.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import WebSocket from "ws";
import { startApi, type ApiTeam, type ApiUnderTest } from "./api-harness.js";
import { BASH_TEMPLATE, skipBash, waitFor, type ManagedAgent } from "./orchestration-harness.js";

const POOL = "10.237.0.0/26";
const TABLE = "wrenn_t_term";

const skip = skipBash;

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** A client's view of one terminal: what it received, and how it closed. */
interface Terminal {
  ws: WebSocket;
  /** Every binary frame so far, decoded. */
  screen(): string;
  /** Every JSON text frame so far. */
  messages: Json[];
  closed: Promise<{ code: number; reason: string }>;
  type(text: string | Buffer): void;
  /** Waits for `text` in the output (a mark the shell computes, so the echoed command line never matches). */
  expectOutput(text: string): Promise<void>;
  started(): Promise<number>;
}

describe("the browser terminal over a WebSocket", { skip }, () => {
  let stack: ApiUnderTest;
  let agent: ManagedAgent | undefined;
  let sandboxId: string;
  let envdAccessToken: string;
  const opened: WebSocket[] = [];

  const terminalUrl = (id: string, query: Record<string, string | number> = {}) => {
    const search = new URLSearchParams(Object.entries(query).map(([key, value]) => [key, String(value)]));
    return `${stack.url.replace(/^http/, "ws")}/v1/sandboxes/${id}/terminal${search.size ? `?${search}` : ""}`;
  };

  /** Opens a terminal; rejects with the HTTP status when the upgrade is refused. */
  function openTerminal(
    team: ApiTeam | undefined,
    query: Record<string, string | number> = { cols: 80, rows: 24 },
    id = sandboxId,
    headers: Record<string, string> = team ? { "x-api-key": team.key } : {},
  ): Promise<Terminal> {
    const ws = new WebSocket(terminalUrl(id, query), { headers });
    opened.push(ws);
    const decoder = new TextDecoder();
    let screen = "";
    const messages: Json[] = [];
    const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on("close", (code, reason) => resolve({ code, reason: reason.toString() })));
    ws.on("message", (data, isBinary) => {
      const bytes = Buffer.from(data as Buffer);
      if (isBinary) screen += decoder.decode(bytes, { stream: true });
      else messages.push(JSON.parse(bytes.toString()) as Json);
    });
    const terminal: Terminal = {
      ws,
      screen: () => screen,
      messages,
      closed,
      type: (text) => ws.send(typeof text === "string" ? Buffer.from(text) : text, { binary: true }),
      expectOutput: (text) =>
        waitFor(`"${text}" in the terminal`, async () => screen.includes(text), 30_000).then(
          () => undefined,
          (err: Error) => {
            throw new Error(`${err.message}; the terminal showed ${JSON.stringify(screen)}, messages ${JSON.stringify(messages)}`);
          },
        ),
      started: async () => {
        await waitFor("the started frame", async () => messages.length > 0, 30_000);
        assert.equal(messages[0]!.type, "started", JSON.stringify(messages));
        return messages[0]!.pid as number;
      },
    };
    return new Promise((resolve, reject) => {
      ws.once("open", () => resolve(terminal));
      ws.once("unexpected-response", (_req, res) => {
        let body = "";
        res.on("data", (chunk: Buffer) => (body += chunk.toString()));
        res.on("end", () => reject(Object.assign(new Error(`upgrade refused: ${res.statusCode} ${body}`), { status: res.statusCode, body })));
      });
      ws.once("error", reject);
    });
  }

  async function refusal(team: ApiTeam | undefined, query: Record<string, string | number>, id = sandboxId, headers?: Record<string, string>): Promise<{ status: number; body: Json }> {
    const err = (await openTerminal(team, query, id, headers).then(
      () => assert.fail("the upgrade was accepted"),
      (error: unknown) => error,
    )) as { status?: number; body?: string };
    assert.ok(err.status, String(err));
    return { status: err.status, body: JSON.parse(err.body ?? "{}") as Json };
  }

  const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  before(async () => {
    stack = await startApi({ database: "pglite", agents: [{ pool: POOL, table: TABLE, bashTemplate: true }] });
    agent = stack.agents[0]!;
    const response = await stack.call(stack.teamA, "POST", "/v1/sandboxes", { template: BASH_TEMPLATE, timeoutSec: 0 });
    const created = (await response.json()) as Json;
    assert.equal(response.status, 201, JSON.stringify(created));
    sandboxId = created.id as string;
    envdAccessToken = created.envdAccessToken as string;
  });

  after(async () => {
    for (const ws of opened) ws.terminate();
    await stack?.close();
  });

  test("a terminal runs a login bash in a PTY: typed input, output, resize and Ctrl-C", async () => {
    const terminal = await openTerminal(stack.teamA, { cols: 80, rows: 24 });
    const pid = await terminal.started();
    assert.ok(Number.isInteger(pid) && pid > 0);
    terminal.type("echo hi-$((40+2))\r");
    await terminal.expectOutput("hi-42\r\n");
    terminal.type('echo "user=$(whoami) in=$(pwd) term=$TERM bash=${BASH_VERSION%%.*} login=$(shopt -q login_shell && echo yes)"; stty size\r');
    await terminal.expectOutput("user=user in=/home/user term=xterm-256color bash=5 login=yes\r\n24 80\r\n");

    // A resize and the keys after it reach the shell in the order sent.
    terminal.ws.send(JSON.stringify({ type: "resize", cols: 100, rows: 30 }));
    terminal.type("stty size\r");
    await terminal.expectOutput("30 100\r\n");

    terminal.type("sleep 100; echo slept-$((2+2))\r");
    await waitFor("sleep to start", async () => terminal.screen().includes("sleep 100; echo slept"), 30_000);
    await pause(500); // let the shell hand the terminal to sleep
    terminal.type(Buffer.from([0x03]));
    terminal.type("echo status-$?\r");
    await terminal.expectOutput("status-130\r\n"); // 128 + SIGINT
    assert.ok(!terminal.screen().includes("slept-4"));

    terminal.ws.close();
    const { code } = await terminal.closed;
    assert.equal(code, 1005);

    const audit = (await (await stack.call(stack.teamA, "GET", "/v1/audit?action=sandbox.terminal")).json()) as Json;
    const entry = audit.entries.find((e: Json) => e.details?.pid === pid);
    assert.ok(entry, JSON.stringify(audit));
    assert.equal(entry.resourceType, "sandbox");
    assert.equal(entry.resourceId, sandboxId);
    assert.equal(entry.details.attached, false);
  });

  test("closing the socket leaves the shell running: attaching by pid reaches the same shell, at the new size, until exit", async () => {
    const first = await openTerminal(stack.teamA);
    const pid = await first.started();
    first.type("export MARK=kept-$((5+5)); echo set-$((1+1))\r");
    await first.expectOutput("set-2\r\n");
    first.ws.close();
    await first.closed;

    const again = await openTerminal(stack.teamA, { cols: 90, rows: 20, pid });
    assert.equal(await again.started(), pid);
    again.type("echo mark=$MARK; stty size\r");
    await again.expectOutput("mark=kept-10\r\n20 90\r\n");

    again.type("exit 7\r");
    const { code } = await again.closed;
    assert.equal(code, 1000);
    assert.deepEqual(again.messages.at(-1), { type: "exit", exitCode: 7 });

    const ended = await openTerminal(stack.teamA, { cols: 80, rows: 24, pid });
    const closed = await ended.closed;
    assert.equal(closed.code, 4404, closed.reason);
    assert.match(closed.reason, new RegExp(`pid ${pid}`));
  });

  test("attaching to a pid no process has closes with 4404", async () => {
    const terminal = await openTerminal(stack.teamA, { cols: 80, rows: 24, pid: 999_999 });
    const closed = await terminal.closed;
    assert.equal(closed.code, 4404);
    assert.deepEqual(terminal.messages, []);
  });

  test("a text frame that is not a resize closes the terminal with 1008; the shell runs on", async () => {
    const terminal = await openTerminal(stack.teamA);
    const pid = await terminal.started();
    terminal.ws.send(JSON.stringify({ type: "resize", cols: 0, rows: 10 }));
    const closed = await terminal.closed;
    assert.equal(closed.code, 1008);
    assert.equal(terminal.messages.at(-1)!.type, "error");

    const again = await openTerminal(stack.teamA, { cols: 80, rows: 24, pid });
    assert.equal(await again.started(), pid);
    again.type("exit\r");
    assert.equal((await again.closed).code, 1000);
  });

  test("the upgrade is refused: no key 401, another team's sandbox 404, bad sizes 400, a plain GET 404", async () => {
    assert.equal((await refusal(undefined, { cols: 80, rows: 24 })).status, 401);
    const otherTeam = await refusal(stack.teamB, { cols: 80, rows: 24 });
    assert.equal(otherTeam.status, 404);
    assert.match(otherTeam.body.message, /not found/);
    assert.equal((await refusal(stack.teamA, { cols: 80, rows: 24 }, "nosuchsandbox")).status, 404);
    const badQueries: Array<Record<string, string | number>> = [{ cols: 0, rows: 24 }, { cols: 80, rows: 5000 }, { cols: "wide", rows: 24 }, { cols: 80, rows: 24, pid: -1 }];
    for (const query of badQueries) {
      assert.equal((await refusal(stack.teamA, query)).status, 400, JSON.stringify(query));
    }
    const plain = await stack.call(stack.teamA, "GET", `/v1/sandboxes/${sandboxId}/terminal`);
    assert.equal(plain.status, 404);
  });

  test("the dashboard's session cookie opens a terminal from the same site only", async () => {
    const login = await stack.call(undefined, "POST", "/v1/auth/login", { apiKey: stack.teamA.key });
    assert.equal(login.status, 200, await login.clone().text());
    const cookie = /^(wrenn_session=[^;]+)/.exec(login.headers.get("set-cookie") ?? "")?.[1];
    assert.ok(cookie, login.headers.get("set-cookie") ?? "no cookie");
    const terminal = await openTerminal(undefined, { cols: 80, rows: 24 }, sandboxId, { cookie, origin: stack.url });
    await terminal.started();
    terminal.type("echo cookie-$((6*7))\r");
    await terminal.expectOutput("cookie-42\r\n");
    terminal.type("exit\r");
    assert.equal((await terminal.closed).code, 1000);
    assert.equal((await refusal(undefined, { cols: 80, rows: 24 }, sandboxId, { cookie, origin: "http://evil.example" })).status, 403);
    assert.equal((await refusal(undefined, { cols: 80, rows: 24 }, sandboxId, { cookie })).status, 403);
  });

  test("an upgrade for a sandbox's port goes to the sandbox only, never to the API's WebSocket routes", async () => {
    // The same path, but naming the sandbox's envd port: the edge proxy passes it to envd, which serves no WebSocket.
    const ws = new WebSocket(terminalUrl(sandboxId, { cols: 80, rows: 24 }), {
      headers: { "x-api-key": stack.teamA.key, "e2b-sandbox-id": sandboxId, "e2b-sandbox-port": "49983", "x-access-token": envdAccessToken },
    });
    opened.push(ws);
    const outcome = await new Promise<string>((resolve) => {
      ws.once("open", () => resolve("upgraded"));
      ws.once("unexpected-response", (_req, res) => resolve(`refused ${res.statusCode} by ${res.headers["x-envd-version"] ? "envd" : "?"} ${JSON.stringify(res.headers)}`));
      ws.once("error", (err) => resolve(`error ${err.message}`));
    });
    assert.match(outcome, /^refused 404/);
    // An upgrade for no route of the API is refused by the API.
    const ws2 = new WebSocket(`${stack.url.replace(/^http/, "ws")}/v1/no-such-socket`, { headers: { "x-api-key": stack.teamA.key } });
    opened.push(ws2);
    const status = await new Promise<number>((resolve) => {
      ws2.once("open", () => resolve(101));
      ws2.once("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0));
      ws2.once("error", () => resolve(0));
    });
    assert.equal(status, 404);
  });

  test("a paused sandbox's terminal is refused with 409", async () => {
    const paused = await stack.call(stack.teamA, "POST", `/v1/sandboxes/${sandboxId}/pause`);
    assert.equal(paused.status, 200, await paused.text());
    const refused = await refusal(stack.teamA, { cols: 80, rows: 24 });
    assert.equal(refused.status, 409);
    assert.match(refused.body.message, /paused/);
  });
});
