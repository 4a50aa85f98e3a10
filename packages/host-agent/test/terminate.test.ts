// Terminate while a create is still booting: the agent waits for it and destroys what it made, so
// nothing (mount, network namespace, sandbox process) outlives the agent.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { test } from "node:test";
import { removeDataDir, skipAgent, startAgentProcess, TEST_TEMPLATE } from "./agent-harness.js";

const POOL = "10.252.0.0/26";
const TABLE = "wrenn_term_test";

const run = promisify(execFile);

test("Terminate during a create leaves no mount, namespace or process behind", { skip: skipAgent }, async () => {
  const agent = await startAgentProcess({ pool: POOL, table: TABLE });
  const exited = new Promise<void>((resolve) => (agent.child.exitCode !== null ? resolve() : agent.child.once("exit", () => resolve())));
  try {
    const sandboxId = "termmidcreate";
    const creating = agent.client.createSandbox({ sandboxId, template: TEST_TEMPLATE }).then(
      () => "created",
      (err: Error) => `failed: ${err.message}`,
    );
    // The create is under way (its network and disk exist, gVisor boots) when Terminate arrives.
    await waitUntil(async () => (await run("ip", ["netns", "list"])).stdout.includes(`wrenn-${sandboxId}`), 20_000);
    await agent.client.terminate({});
    await exited;
    await creating; // answered or cut: either way, what matters is what is left
    assert.ok(!(await run("ip", ["netns", "list"])).stdout.includes(`wrenn-${sandboxId}`), "network namespace left behind");
    const processes = (await run("ps", ["-eo", "args"])).stdout.split("\n").filter((line) => line.includes(agent.dataDir));
    assert.deepEqual(processes, [], "sandbox processes left behind");
  } finally {
    if (agent.child.exitCode === null) agent.child.kill("SIGKILL");
    await exited;
    // Throws when anything is still mounted under the agent's data dir.
    await removeDataDir(agent.dataDir, TABLE);
  }
});

async function waitUntil(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
