// Choosing a sandbox's runtime through the REST API, against a real host agent (gVisor, and QEMU
// microVMs where build/vm is built): the create's `runtime` is validated, placement only picks
// hosts that offer it (a fake host row that offers gVisor alone, and would win otherwise, is
// passed over; no create is ever sent to it), no host offering it is a 409 that leaves nothing
// behind, and the row and its views say what the sandbox runs on; a VM's pause (and its idle
// timeout) hibernates it. One VM in the whole file: TCG boots are slow and take a CPU.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { PLATFORM_TEAM_ID, SANDBOX_RUNTIMES } from "../src/db/schema.js";
import { repoRoot } from "../../host-agent/test/agent-harness.js";
import { startApi, type ApiUnderTest } from "./api-harness.js";
import { skipAgent, TEST_TEMPLATE } from "./orchestration-harness.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const AGENT = { pool: "10.217.0.0/27", table: "wrenn_api_runtimes" };
const skipVm = existsSync(path.join(repoRoot, "build", "vm", "guest.json")) ? false : "needs the VM guest (make vm-guest builds build/vm)";

describe("a sandbox's runtime through the API", { skip: skipAgent }, () => {
  let stack: ApiUnderTest;

  async function call(method: string, route: string, body?: unknown): Promise<{ status: number; body: Json }> {
    const response = await stack.call(stack.teamA, method, route, body);
    const raw = await response.text();
    return { status: response.status, body: raw ? (JSON.parse(raw) as Json) : {} };
  }

  /** Every sandbox of team A, whatever its state. */
  async function allSandboxes(): Promise<Json[]> {
    return (await call("GET", "/v1/sandboxes?state=starting,running,paused,stopped,error,unknown")).body.sandboxes as Json[];
  }

  /** The sandboxes the real agent runs. */
  async function onAgent(): Promise<string[]> {
    return (await stack.agents[0]!.agent.client.listSandboxes({})).sandboxes.map((sandbox) => sandbox.sandboxId);
  }

  before(async () => {
    stack = await startApi({ database: "pglite", agents: [AGENT] });
  });

  after(async () => {
    await stack?.close();
  });

  test("an unknown runtime is refused with 400 before anything runs", async () => {
    for (const runtime of ["docker", "", "GVISOR", 1]) {
      const refused = await call("POST", "/v1/sandboxes", { template: TEST_TEMPLATE, runtime });
      assert.equal(refused.status, 400, JSON.stringify(refused.body));
      assert.equal(refused.body.code, "invalid_argument");
      assert.match(refused.body.message, /runtime/);
    }
    assert.deepEqual(await allSandboxes(), []);
  });

  test("without a runtime the sandbox gets its host's default, recorded on its row and shown by every view", async () => {
    const info = await stack.agents[0]!.agent.client.getHostInfo({});
    const created = await call("POST", "/v1/sandboxes", { template: TEST_TEMPLATE, timeoutSec: 0 });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const id = created.body.id as string;
    try {
      assert.equal(created.body.runtime, info.defaultRuntime);
      assert.equal((await call("GET", `/v1/sandboxes/${id}`)).body.runtime, info.defaultRuntime);
      assert.equal((await allSandboxes()).find((sandbox) => sandbox.id === id)?.runtime, info.defaultRuntime);
      assert.equal((await stack.repos.sandboxes.get(id))?.runtime, info.defaultRuntime);
    } finally {
      assert.equal((await call("DELETE", `/v1/sandboxes/${id}`)).body.runtime, info.defaultRuntime);
    }
  });

  test("a template answers the runtimes that boot it: every one, for a filesystem template", async () => {
    const template = await call("GET", `/v1/templates/${TEST_TEMPLATE}`);
    assert.equal(template.status, 200, JSON.stringify(template.body));
    assert.deepEqual(template.body.runtimes, [...SANDBOX_RUNTIMES]);
  });

  test("a runtime no host offers is a 409 naming the runtimes there are, and leaves nothing behind", async (t) => {
    const [host] = await stack.repos.hosts.list();
    const missing = SANDBOX_RUNTIMES.find((runtime) => !host!.runtimes.includes(runtime));
    if (!missing) return t.skip(`the host offers every runtime (${host!.runtimes.join(", ")})`);
    const before = await allSandboxes();
    const refused = await call("POST", "/v1/sandboxes", { template: TEST_TEMPLATE, runtime: missing });
    assert.equal(refused.status, 409, JSON.stringify(refused.body));
    assert.deepEqual(refused.body, {
      code: "failed_precondition",
      message: `no available host offers runtime ${missing} (the available hosts offer: ${[...host!.runtimes].sort().join(", ")})`,
    });
    assert.deepEqual(await allSandboxes(), before, "no new row, not even a stopped or errored one");
    assert.deepEqual(await onAgent(), [], "nothing on the host");
  });

  test("runtime qemu: placed on the host offering it over a better host without it; the VM's own kernel answers; GET says qemu", { skip: skipVm }, async (t) => {
    const [real] = await stack.repos.hosts.list();
    assert.ok(real!.runtimes.includes("qemu"), `the agent does not offer qemu: ${real!.runtimes.join(", ")}`);
    // A host that would win placement (as idle, far more memory) but offers gVisor alone. Its agent
    // token is no sealed token, so the control plane could not even call it: heartbeats to it fail
    // before any connection (it turns unhealthy after three), and a create sent to it would fail.
    const fakeId = randomUUID();
    await stack.repos.hosts.createRegistered(
      fakeId,
      { address: "127.0.0.1:9", runtimes: ["gvisor"], capacity: { cpu: 64, memoryMb: 1024 * 1024, diskMb: 1024 * 1024, slots: 100 } },
      "not-a-sealed-token",
    );
    t.after(() => stack.repos.hosts.delete(fakeId));
    await stack.repos.hostTemplates.replace(fakeId, [{ name: TEST_TEMPLATE, teamId: PLATFORM_TEAM_ID, kind: "base", sizeBytes: 0 }]);
    const request = { template: TEST_TEMPLATE, hostTemplateName: TEST_TEMPLATE, vcpus: 1, memoryMb: 256, diskSizeMb: 512 };
    const placement = stack.orchestration.placement;
    assert.equal((await placement.rank(request))[0]!.host.id, fakeId, "without a runtime the fake host ranks first");
    assert.deepEqual((await placement.rank({ ...request, runtime: "qemu" })).map((ranked) => ranked.host.id), [real!.id]);

    const started = performance.now();
    const created = await call("POST", "/v1/sandboxes", { template: TEST_TEMPLATE, runtime: "qemu", memoryMb: 256, diskSizeMb: 512, timeoutSec: 0 });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    t.diagnostic(`a qemu sandbox created through the API in ${Math.round(performance.now() - started)} ms`);
    const id = created.body.id as string;
    try {
      assert.equal(created.body.runtime, "qemu");
      assert.equal(created.body.hostId, real!.id);
      const kernel = await call("POST", `/v1/sandboxes/${id}/exec`, { cmd: "uname", args: ["-r"] });
      assert.equal(kernel.status, 200, JSON.stringify(kernel.body));
      assert.match(kernel.body.stdout, /cloud-amd64\n$/, "the guest's own (Debian cloud) kernel, not gVisor's");
      const got = await call("GET", `/v1/sandboxes/${id}`);
      assert.equal(got.body.runtime, "qemu");
      assert.equal(got.body.state, "running");
      assert.equal((await allSandboxes()).find((sandbox) => sandbox.id === id)?.runtime, "qemu");

      // Pause hibernates a VM (as E2B's pause persists a sandbox): no process on its host, its
      // memory on the host's disk; resume brings the same processes back.
      const agent = stack.agents[0]!.agent;
      const statusOnAgent = async () => (await agent.client.listSandboxes({})).sandboxes.find((sandbox) => sandbox.sandboxId === id)?.status;
      const sleeper = await call("POST", `/v1/sandboxes/${id}/exec`, { cmd: "/bin/sh", args: ["-c", "sleep 600 >/dev/null 2>&1 & echo $!"] });
      const pid = (sleeper.body.stdout as string).trim();
      const paused = await call("POST", `/v1/sandboxes/${id}/pause`, {});
      assert.equal(paused.status, 200, JSON.stringify(paused.body));
      assert.equal(paused.body.state, "paused");
      assert.equal(await statusOnAgent(), "hibernated");
      const resumed = await call("POST", `/v1/sandboxes/${id}/resume`, {});
      assert.equal(resumed.status, 200, JSON.stringify(resumed.body));
      assert.equal(await statusOnAgent(), "running");
      const alive = await call("POST", `/v1/sandboxes/${id}/exec`, { cmd: "/bin/sh", args: ["-c", `kill -0 ${pid} && echo alive`] });
      assert.equal(alive.body.stdout, "alive\n", "the process from before the pause runs on");
      // Idle past its timeout, its host hibernates it too; the API says paused.
      assert.equal((await call("POST", `/v1/sandboxes/${id}/timeout`, { timeoutSec: 1 })).status, 200);
      const deadline = Date.now() + 60_000;
      while ((await statusOnAgent()) !== "hibernated" && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal(await statusOnAgent(), "hibernated", "the idle VM was not hibernated");
      while ((await call("GET", `/v1/sandboxes/${id}`)).body.state !== "paused" && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal((await call("GET", `/v1/sandboxes/${id}`)).body.state, "paused");
    } finally {
      const deleted = await call("DELETE", `/v1/sandboxes/${id}`);
      assert.equal(deleted.status, 200, JSON.stringify(deleted.body));
      assert.equal(deleted.body.state, "stopped");
      assert.equal(deleted.body.runtime, "qemu", "a stopped sandbox still says what it ran on");
    }
    assert.deepEqual(await onAgent(), []);
  });
});
