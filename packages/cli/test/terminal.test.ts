// wrenn in a real terminal: tmux runs the CLI in a pane, keys are sent to it and the pane's screen
// is read back. The shell (raw mode, Ctrl-C passed through, resize, exit code), the progress bar
// of a large copy, and the live metrics view.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { MAIN, REPO_ROOT, skipAgent, startStack, tempHome, TEST_TEMPLATE, waitFor, type ApiUnderTest } from "./cli-harness.js";

const run = promisify(execFile);
const hasTmux = await run("tmux", ["-V"]).then(
  () => true,
  () => false,
);

describe("wrenn in a real terminal", { skip: skipAgent || (!hasTmux && "needs tmux (scripts/install-system-deps.sh)") }, () => {
  let stack: ApiUnderTest;
  let home: Awaited<ReturnType<typeof tempHome>>;
  let sandboxId: string;
  // A tmux server of our own (-S, its socket in the temp HOME), so no other session is touched; -u: UTF-8 panes.
  const tmux = (...args: string[]) => run("tmux", ["-u", "-S", path.join(home.home, "tmux.sock"), ...args]);
  // `=name:` names the session exactly (a bare name may match a window of another session).
  const screen = async (session: string) => (await tmux("capture-pane", "-p", "-t", `=${session}:`)).stdout;
  const keys = (session: string, ...keys: string[]) => tmux("send-keys", "-t", `=${session}:`, ...keys);

  /** Runs `wrenn <args>` in a new tmux session; the pane shows `EXITED=<code>` when it ends. */
  async function inTerminal(session: string, args: string[], size = { cols: 100, rows: 30 }): Promise<void> {
    const script = path.join(home.home, `${session}.sh`);
    await writeFile(
      script,
      [
        `export HOME='${home.home}' WRENN_API_URL='${stack.url}' WRENN_API_KEY='${stack.teamA.key}' TERM=xterm LANG=C.UTF-8`,
        `cd '${REPO_ROOT}'`,
        // Ctrl-C reaches the whole foreground group: the script itself lives on to print the code.
        `trap : INT`,
        `'${process.execPath}' --import tsx '${MAIN}' ${args.map((arg) => `'${arg}'`).join(" ")}`,
        `echo "EXITED=$?"`,
        `sleep 600`,
      ].join("\n"),
    );
    await tmux("new-session", "-d", "-s", session, "-x", String(size.cols), "-y", String(size.rows), `sh '${script}'`);
  }

  before(async () => {
    stack = await startStack(2, "cliterm");
    home = await tempHome();
    const response = await stack.call(stack.teamA, "POST", "/v1/sandboxes", { template: TEST_TEMPLATE, timeoutSec: 0 });
    assert.equal(response.status, 201, await response.clone().text());
    sandboxId = ((await response.json()) as { id: string }).id;
  });

  after(async () => {
    await tmux("kill-server").catch(() => undefined);
    if (sandboxId) await stack.call(stack.teamA, "DELETE", `/v1/sandboxes/${sandboxId}`).catch(() => undefined);
    await stack?.close();
    await home?.remove();
  });

  test("wrenn shell: echo, Ctrl-C, resize and exit", async () => {
    await inTerminal("shell", ["shell", sandboxId]);
    await keys("shell", "echo hi-$((6 * 7))", "Enter");
    await waitFor("the shell's answer on the screen", async () => /^hi-42\s*$/m.test(await screen("shell")), 60_000);

    // Ctrl-C is a keystroke for the sandbox's terminal, not SIGINT for the CLI: the shell's line
    // editor drops the half-typed line and the session goes on. (A running foreground command is
    // not interrupted under gVisor's terminal yet: see docs/cli.md.)
    await keys("shell", "echo never-$((2 + 2))");
    await waitFor("the half-typed line", async () => (await screen("shell")).includes("echo never-$((2 + 2))"), 30_000);
    await keys("shell", "C-c");
    await keys("shell", "echo after-$((1 + 1))", "Enter");
    await waitFor("the shell alive after Ctrl-C", async () => /^after-2\s*$/m.test(await screen("shell")), 30_000);
    assert.doesNotMatch(await screen("shell"), /^never-4/m, "the interrupted line did not run");

    await tmux("resize-window", "-t", "=shell:", "-x", "120", "-y", "40");
    await new Promise((resolve) => setTimeout(resolve, 500));
    await keys("shell", "clear; stty size", "Enter");
    await waitFor("the new size inside", async () => /^40 120\s*$/m.test(await screen("shell")), 30_000);

    await keys("shell", "exit 7", "Enter");
    await waitFor("the shell's exit code as the CLI's", async () => /^EXITED=7\s*$/m.test(await screen("shell")), 30_000);
  });

  test("wrenn login asks for the URL and the key, and does not echo the key", async () => {
    await inTerminal("login", ["login"]);
    await waitFor("the URL prompt", async () => (await screen("login")).includes("API URL ["), 30_000);
    await keys("login", stack.url, "Enter");
    await waitFor("the key prompt", async () => (await screen("login")).includes("API key"), 30_000);
    await keys("login", stack.teamA.key, "Enter");
    await waitFor("the login's end", async () => /^EXITED=0\s*$/m.test(await screen("login")), 30_000);
    const shown = await screen("login");
    assert.match(shown, /logged in to http:\/\/127\.0\.0\.1:\d+/);
    assert.ok(!shown.includes(stack.teamA.key), "the key is not on the screen");
    const saved = JSON.parse(await readFile(path.join(home.home, ".config/wrenn/config.json"), "utf8")) as { apiUrl: string; apiKey: string };
    assert.deepEqual(saved, { apiUrl: stack.url, apiKey: stack.teamA.key });
  });

  test("wrenn cp draws a progress bar on a terminal for a large file", async () => {
    const big = path.join(home.home, "big.bin");
    await writeFile(big, randomBytes(20 * 1024 * 1024));
    await inTerminal("copy", ["cp", big, `${sandboxId}:/tmp/big.bin`]);
    await waitFor("the copy's end", async () => /^EXITED=0\s*$/m.test(await screen("copy")), 120_000);
    assert.match(await screen("copy"), /^big\.bin \[#+\] 100% 20 MiB\/20 MiB\s*$/m);
  });

  test("wrenn metrics: a live view with sparklines, ended by Ctrl-C", async () => {
    await inTerminal("metrics", ["metrics", sandboxId]);
    await waitFor("the sparklines", async () => /^cpu\s+[\d.]+%\s+[▁▂▃▄▅▆▇█]+\s*$/m.test(await screen("metrics")), 90_000);
    assert.match(await screen("metrics"), /^memory\s+[\d.]+ \w+\s+[▁▂▃▄▅▆▇█]+\s*$/m);
    await keys("metrics", "C-c");
    await waitFor("the view's end", async () => /^EXITED=0\s*$/m.test(await screen("metrics")), 30_000);
  });
});
