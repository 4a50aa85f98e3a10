// The `wrenn` command against the real stack, run as a child process the way a user runs it:
// login and its config file, the sandbox lifecycle, exec, cp both ways, logs, templates, hosts, errors.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdir, readFile, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { skipAgent, startStack, startWrenn, tempHome, TEST_TEMPLATE, waitFor, wrenn, type ApiUnderTest } from "./cli-harness.js";

describe("wrenn against a real control plane", { skip: skipAgent }, () => {
  let stack: ApiUnderTest;
  let home: Awaited<ReturnType<typeof tempHome>>;
  /** The environment of a user with the key in WRENN_* variables. */
  let env: Record<string, string>;
  const created: string[] = [];

  before(async () => {
    stack = await startStack(1, "cli");
    home = await tempHome();
    env = { HOME: home.home, WRENN_API_URL: stack.url, WRENN_API_KEY: stack.teamA.key };
  });

  after(async () => {
    for (const id of created) await stack.call(stack.teamA, "DELETE", `/v1/sandboxes/${id}`).catch(() => undefined);
    await stack?.close();
    await home?.remove();
  });

  async function createSandbox(): Promise<string> {
    const run = await wrenn(["sandbox", "create", "--template", TEST_TEMPLATE, "--timeout", "0", "--metadata", "purpose=cli-test", "--json"], env);
    assert.equal(run.code, 0, run.stderr);
    const info = JSON.parse(run.stdout) as { id: string; state: string; metadata: Record<string, string> };
    created.push(info.id);
    assert.equal(info.state, "running");
    assert.deepEqual(info.metadata, { purpose: "cli-test" });
    return info.id;
  }

  test("without a key: says to run wrenn login or set WRENN_API_KEY", async () => {
    const empty = await tempHome();
    try {
      const run = await wrenn(["sandbox", "list"], { HOME: empty.home, WRENN_API_URL: stack.url });
      assert.equal(run.code, 1);
      assert.equal(run.stderr, "wrenn: no API key: run wrenn login or set WRENN_API_KEY\n");
      assert.equal(run.stdout, "");
    } finally {
      await empty.remove();
    }
  });

  test("login checks the key, writes ~/.config/wrenn/config.json 0600, and later commands use it", async () => {
    const user = await tempHome();
    try {
      const bad = await wrenn(["login", "--api-url", stack.url, "--api-key", "wrn_not_a_real_key"], { HOME: user.home });
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /wrenn login with a valid key, or set WRENN_API_KEY/);
      await assert.rejects(stat(path.join(user.home, ".config/wrenn/config.json")), { code: "ENOENT" }, "a rejected key is not saved");

      const unreachable = await wrenn(["login", "--api-url", "http://127.0.0.1:1", "--api-key", stack.teamA.key], { HOME: user.home });
      assert.equal(unreachable.code, 1);
      assert.match(unreachable.stderr, /is the control plane running\?/);

      // The key on stdin, as a script would pass it without putting it in argv.
      const good = await wrenn(["login", "--api-url", stack.url + "/"], { HOME: user.home }, { input: `${stack.teamA.key}\n` });
      assert.equal(good.code, 0, good.stderr);
      assert.match(good.stderr, /logged in to http:\/\/127\.0\.0\.1:\d+; saved to .*config\.json/);
      const file = path.join(user.home, ".config/wrenn/config.json");
      assert.equal((await stat(file)).mode & 0o777, 0o600);
      assert.deepEqual(JSON.parse(await readFile(file, "utf8")), { apiUrl: stack.url, apiKey: stack.teamA.key });

      const listed = await wrenn(["sandbox", "list", "--json"], { HOME: user.home });
      assert.equal(listed.code, 0, listed.stderr);
      assert.ok(Array.isArray(JSON.parse(listed.stdout)));

      // The environment overrides the file: team B's key sees none of team A's templates' owner checks, but a wrong one fails.
      const overridden = await wrenn(["sandbox", "list"], { HOME: user.home, WRENN_API_KEY: "wrn_wrong" });
      assert.equal(overridden.code, 1);
      assert.match(overridden.stderr, /set WRENN_API_KEY/);

      const out = await wrenn(["logout"], { HOME: user.home });
      assert.equal(out.code, 0);
      await assert.rejects(stat(file), { code: "ENOENT" });
    } finally {
      await user.remove();
    }
  });

  test("an unknown sandbox: non-zero exit and a message saying where to look", async () => {
    for (const args of [["sandbox", "info", "nosuchsandbox"], ["exec", "nosuchsandbox", "--", "true"], ["cp", "nosuchsandbox:/x", "/tmp/wrenn-cli-never"]]) {
      const run = await wrenn(args, env);
      assert.equal(run.code, 1, args.join(" "));
      assert.match(run.stderr, /^wrenn: .*nosuchsandbox.*wrenn sandbox list shows your sandboxes/s, args.join(" "));
    }
    const usage = await wrenn(["sandbox", "create", "--bogus"], env);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /Unknown option '--bogus'[\s\S]*usage: wrenn sandbox create/);
    const runtime = await wrenn(["sandbox", "create", "--runtime", "docker"], env);
    assert.equal(runtime.code, 2);
    assert.match(runtime.stderr, /unknown runtime "docker" \(one of gvisor, qemu, firecracker\)\nusage: wrenn sandbox create .*--runtime gvisor\|qemu\|firecracker/);
    // A runtime the host does not offer reaches the API, which refuses it (no sandbox boots).
    const [host] = await stack.repos.hosts.list();
    const missing = ["gvisor", "qemu", "firecracker"].find((name) => !host!.runtimes.includes(name));
    if (missing) {
      const refused = await wrenn(["sandbox", "create", "--template", TEST_TEMPLATE, "--runtime", missing], env);
      assert.equal(refused.code, 1, refused.stderr);
      assert.match(refused.stderr, new RegExp(`^wrenn: no available host offers runtime ${missing} \\(the available hosts offer: `));
    }
  });

  test("a sandbox through create → list → info → exec → cp → logs → pause → resume → timeout → kill", async () => {
    const id = await createSandbox();

    const table = await wrenn(["sandbox", "list"], env);
    assert.equal(table.code, 0, table.stderr);
    const [header, ...rows] = table.stdout.trimEnd().split("\n");
    assert.match(header!, /^ID\s+TEMPLATE\s+STATE\s+VCPUS\s+MEMORY\s+CREATED\s+METADATA$/);
    assert.ok(rows.some((row) => new RegExp(`^${id}\\s+${TEST_TEMPLATE}\\s+running\\s+\\d+\\s+\\d+ MiB\\s+\\d+s ago\\s+purpose=cli-test$`).test(row)), table.stdout);
    const json = await wrenn(["sandbox", "list", "--json", "--metadata", "purpose=cli-test"], env);
    assert.deepEqual((JSON.parse(json.stdout) as Array<{ id: string }>).map((s) => s.id), [id]);

    const info = await wrenn(["sandbox", "info", id], env);
    assert.equal(info.code, 0, info.stderr);
    assert.match(info.stdout, new RegExp(`^id:\\s+${id}$`, "m"));
    assert.match(info.stdout, /^state:\s+running$/m);
    assert.match(info.stdout, /^runtime:\s+gvisor$/m, "the host's default, as the host said");
    assert.match(info.stdout, /^timeout:\s+never$/m);

    // Streamed: the first line arrives a second before the command ends.
    const streamed = await wrenn(["exec", id, "--", "echo first; sleep 1.5; echo second; echo oops >&2"], env);
    assert.equal(streamed.code, 0, streamed.stderr);
    assert.equal(streamed.stdout, "first\nsecond\n");
    assert.equal(streamed.stderr, "oops\n");
    const first = streamed.chunks.find((chunk) => chunk.data.startsWith("first"))!;
    assert.ok(streamed.endedMs - first.atMs >= 1000, `first line at ${first.atMs} ms, end at ${streamed.endedMs} ms`);

    const failed = await wrenn(["exec", id, "--", "echo before; exit 3"], env);
    assert.equal(failed.code, 3, "the command's exit code is the CLI's");
    assert.equal(failed.stdout, "before\n");
    const argv = await wrenn(["exec", "--env", "WHO=cli", "--cwd", "/tmp", id, "--", "sh", "-c", 'echo "$WHO in $(pwd)" "$0"', "a b"], env);
    assert.equal(argv.stdout, "cli in /tmp a b\n", argv.stderr);

    // cp: a file and a directory, up and back down.
    const local = await tempHome();
    try {
      const blob = randomBytes(3 * 1024 * 1024);
      await writeFile(path.join(local.home, "blob.bin"), blob);
      await mkdir(path.join(local.home, "tree/sub/deeper"), { recursive: true });
      await writeFile(path.join(local.home, "tree/top.txt"), "top\n");
      await writeFile(path.join(local.home, "tree/sub/deeper/leaf.txt"), "leaf\n");
      await writeFile(path.join(local.home, "tree/sub/empty.txt"), "");

      const upFile = await wrenn(["cp", path.join(local.home, "blob.bin"), `${id}:/tmp/up/blob.bin`], env);
      assert.equal(upFile.code, 0, upFile.stderr);
      const sum = await wrenn(["exec", id, "--", "wc -c < /tmp/up/blob.bin"], env);
      assert.equal(sum.stdout.trim(), String(blob.length));
      const upDir = await wrenn(["cp", path.join(local.home, "tree"), `${id}:/tmp/up/`], env);
      assert.equal(upDir.code, 0, upDir.stderr);
      assert.match(upDir.stderr, /copied 3 files to \w+:\/tmp\/up\/tree/);
      const found = await wrenn(["exec", id, "--", "cd /tmp/up/tree && find . -type f | sort && cat sub/deeper/leaf.txt"], env);
      assert.equal(found.stdout, "./sub/deeper/leaf.txt\n./sub/empty.txt\n./top.txt\nleaf\n");

      const down = path.join(local.home, "down");
      await mkdir(down);
      const downFile = await wrenn(["cp", `${id}:/tmp/up/blob.bin`, down], env);
      assert.equal(downFile.code, 0, downFile.stderr);
      assert.ok(blob.equals(await readFile(path.join(down, "blob.bin"))), "the file came back byte for byte");
      const downDir = await wrenn(["cp", `${id}:/tmp/up/tree`, path.join(down, "copy")], env);
      assert.equal(downDir.code, 0, downDir.stderr);
      assert.equal(await readFile(path.join(down, "copy/sub/deeper/leaf.txt"), "utf8"), "leaf\n");
      assert.equal(await readFile(path.join(down, "copy/top.txt"), "utf8"), "top\n");
      assert.equal(await readFile(path.join(down, "copy/sub/empty.txt"), "utf8"), "");
    } finally {
      await local.remove();
    }

    const logs = await waitFor("envd's logs", async () => {
      const run = await wrenn(["logs", id, "--json"], env);
      assert.equal(run.code, 0, run.stderr);
      const parsed = JSON.parse(run.stdout) as { logs: unknown[] };
      return parsed.logs.length > 0 ? run : undefined;
    });
    assert.ok(logs);
    const plainLogs = await wrenn(["logs", id, "--limit", "5"], env);
    assert.match(plainLogs.stdout, /^\d{4}-\d\d-\d\dT\S+ /);

    const paused = await wrenn(["sandbox", "pause", id], env);
    assert.equal(paused.code, 0, paused.stderr);
    assert.equal(paused.stderr, `paused ${id}\n`);
    const pausedInfo = await wrenn(["sandbox", "info", id, "--json"], env);
    assert.equal(JSON.parse(pausedInfo.stdout).state, "paused", "info does not resume it");
    const again = await wrenn(["sandbox", "pause", id], env);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /^wrenn: /);

    const resumed = await wrenn(["sandbox", "resume", id, "--json"], env);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.equal(JSON.parse(resumed.stdout).state, "running");
    const timeout = await wrenn(["sandbox", "timeout", id, "600"], env);
    assert.equal(timeout.stderr, `${id}: timeout 600s\n`);
    assert.equal((await wrenn(["exec", id, "--", "echo back"], env)).stdout, "back\n");

    const killed = await wrenn(["sandbox", "kill", id], env);
    assert.equal(killed.code, 0, killed.stderr);
    assert.equal(killed.stderr, `killed ${id}\n`);
    const gone = await wrenn(["sandbox", "list", "--json"], env);
    assert.ok(!(JSON.parse(gone.stdout) as Array<{ id: string }>).some((s) => s.id === id), "a killed sandbox is not listed");
    const ended = await wrenn(["exec", id, "--", "true"], env);
    assert.equal(ended.code, 1);
    assert.match(ended.stderr, /has ended .*create a new one/);
  });

  test("templates and hosts: list tables and JSON, a platform template cannot be deleted, hosts need an admin key", async () => {
    const templates = await wrenn(["template", "list"], env);
    assert.equal(templates.code, 0, templates.stderr);
    assert.match(templates.stdout, /^NAME\s+KIND\s+SCOPE\s+SIZE\s+CREATED$/m);
    assert.match(templates.stdout, new RegExp(`^${TEST_TEMPLATE}\\s+\\S+\\s+platform\\s`, "m"));
    const denied = await wrenn(["template", "delete", TEST_TEMPLATE], env);
    assert.equal(denied.code, 1);
    assert.match(denied.stderr, /^wrenn: /);

    const notAdmin = await wrenn(["host", "list"], env);
    assert.equal(notAdmin.code, 1);
    assert.match(notAdmin.stderr, /admin/);
    const adminTeam = await stack.repos.teams.create({ name: "admin", slug: `admin-${randomBytes(4).toString("hex")}`, isAdmin: true });
    const { secret } = await stack.repos.apiKeys.create({ teamId: adminTeam.id, name: "admin" });
    const hosts = await wrenn(["host", "list"], { ...env, WRENN_API_KEY: secret });
    assert.equal(hosts.code, 0, hosts.stderr);
    assert.match(hosts.stdout, /^ID\s+STATUS\s+ADDRESS\s+SANDBOXES\s+SLOTS\s+MEMORY\s+HEARTBEAT\n\S+\s+ready\s+127\.0\.0\.1:\d+/);
    const hostsJson = await wrenn(["host", "list", "--json"], { ...env, WRENN_API_KEY: secret });
    assert.equal((JSON.parse(hostsJson.stdout) as unknown[]).length, 1);
  });

  test("Ctrl-C of wrenn exec ends the command in the sandbox and exits 130", async () => {
    const id = await createSandbox();
    const marker = `sleep ${3000 + Math.floor(Math.random() * 1000)}`;
    const running = startWrenn(["exec", id, "--", `echo started; ${marker}; echo never`], env);
    await waitFor("the command's first line", async () => (await ps(id)).includes(marker), 30_000);
    running.child.kill("SIGINT");
    const run = await running.done;
    assert.equal(run.code, 130);
    assert.equal(run.stdout, "started\n");
    await waitFor("the command gone from the sandbox", async () => !(await ps(id)).includes(marker), 30_000);
    await wrenn(["sandbox", "kill", id], env);
  });

  test("metrics, template build, snapshot and template delete", async () => {
    const id = await createSandbox();
    const json = await wrenn(["metrics", id, "--json", "--range", "10m"], env);
    assert.equal(json.code, 0, json.stderr);
    assert.equal((JSON.parse(json.stdout) as { range: string }).range, "10m");
    await waitFor("a metrics sample", async () => {
      const once = await wrenn(["metrics", id, "--once"], env);
      assert.equal(once.code, 0, once.stderr);
      return /^TIME\s+CPU\s+MEMORY\s+DISK\n\S+\s+[\d.]+%\s+[\d.]+ \w+\s+/.test(once.stdout);
    }, 60_000);
    assert.equal((await wrenn(["metrics", id, "--range", "1y"], env)).code, 2);

    await wrenn(["exec", id, "--", "echo kept > /tmp/kept.txt"], env);
    const snapshotName = `cli-snap-${randomBytes(3).toString("hex")}`;
    const snapshot = await wrenn(["snapshot", id, "--name", snapshotName], env, { timeoutMs: 300_000 });
    assert.equal(snapshot.code, 0, snapshot.stderr);
    assert.equal(snapshot.stderr, `saved ${id} as template ${snapshotName}\n`);

    const buildName = `cli-built-${randomBytes(3).toString("hex")}`;
    const build = await wrenn(["template", "build", buildName, "--from", TEST_TEMPLATE, "--step", "echo built > /built.txt", "--step", "echo to-stderr >&2"], env, { timeoutMs: 300_000 });
    assert.equal(build.code, 0, build.stderr);
    assert.match(build.stderr, /\[step 0\] echo built > \/built\.txt\n\[step 0\] exit 0\n/);
    assert.match(build.stderr, /to-stderr\n/);
    assert.match(build.stderr, new RegExp(`built template ${buildName} `));
    const failing = await wrenn(["template", "build", `${buildName}-bad`, "--from", TEST_TEMPLATE, "--step", "exit 4"], env, { timeoutMs: 300_000 });
    assert.equal(failing.code, 1);
    assert.match(failing.stderr, /failed/);

    const listed = await wrenn(["template", "list", "--json"], env);
    const names = (JSON.parse(listed.stdout) as Array<{ name: string; platform: boolean }>).filter((t) => !t.platform).map((t) => t.name);
    assert.ok(names.includes(snapshotName) && names.includes(buildName), names.join(", "));
    const removed = await wrenn(["template", "delete", snapshotName, buildName], env);
    assert.equal(removed.code, 0, removed.stderr);
    const after = await wrenn(["template", "list", "--json"], env);
    assert.ok(!(JSON.parse(after.stdout) as Array<{ name: string }>).some((t) => t.name === snapshotName || t.name === buildName));
    await wrenn(["sandbox", "kill", id], env);
  });

  async function ps(id: string): Promise<string> {
    return (await wrenn(["exec", id, "--", "ps -o args"], env)).stdout;
  }

  test("completion bash lists the commands", async () => {
    const run = await wrenn(["completion", "bash"], {});
    assert.equal(run.code, 0);
    assert.match(run.stdout, /complete -F _wrenn wrenn/);
    assert.match(run.stdout, /sandbox\) COMPREPLY=\(\$\(compgen -W "create list ls info kill rm pause resume timeout"/);
  });
});
