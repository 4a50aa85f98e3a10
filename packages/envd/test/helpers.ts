// Assertions and probes shared by envd's tests.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError } from "@connectrpc/connect";

/** Request headers naming the sandbox user the way the e2b SDK does (HTTP Basic, empty password). */
export const basicAuth = (user: string): Record<string, string> => ({
  authorization: "Basic " + Buffer.from(`${user}:`).toString("base64"),
});

/** Asserts that `promise` rejects with a ConnectError of `code`, and returns that error. */
export async function expectCode(promise: Promise<unknown>, code: Code): Promise<ConnectError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof ConnectError, `expected a ConnectError, got ${String(err)}`);
    assert.equal(Code[err.code], Code[code], err.message);
    return err;
  }
  assert.fail(`expected a ${Code[code]} error`);
}

/** Polls `check` until it returns something truthy, failing after `timeoutMs` with `what`. */
export async function eventually<T>(
  check: () => T | undefined | false | Promise<T | undefined | false>,
  what: string | (() => string | Promise<string>),
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${typeof what === "string" ? what : await what()}`);
    await sleep(20);
  }
}

/** A process's resident memory in KiB. */
export async function rssKiB(pid: number): Promise<number> {
  return Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${pid}/status`, "utf8"))?.[1]);
}

/** Runs every cleanup step even when one fails, then throws the first failure: nothing is left behind. */
export async function cleanUp(...steps: (() => unknown)[]): Promise<void> {
  const failures: unknown[] = [];
  for (const step of steps) {
    try {
      await step();
    } catch (err) {
      failures.push(err);
    }
  }
  if (failures.length > 0) throw failures[0];
}
