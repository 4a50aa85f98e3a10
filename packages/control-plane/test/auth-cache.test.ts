// The API-key cache's own rules: one lookup per burst, refresh in the background past half the TTL,
// never an answer older than the TTL, and clear() wins over a lookup already in flight.
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { test } from "node:test";
import { AuthCache } from "../src/api/auth-cache.js";
import type { RequestAuth } from "../src/api/auth.js";

const authOf = (teamId: string) => ({ teamId, apiKeyId: `key-${teamId}`, userId: null, isAdmin: false }) as unknown as RequestAuth;

test("a burst with one key costs one lookup; a fresh entry is served without one", async () => {
  const cache = new AuthCache(1000);
  let lookups = 0;
  const lookup = async () => {
    lookups++;
    await sleep(20);
    return authOf("a");
  };
  const answers = await Promise.all([1, 2, 3].map(() => cache.resolve("wrn_x", lookup)));
  assert.deepEqual(answers.map((auth) => auth?.teamId), ["a", "a", "a"]);
  assert.equal(lookups, 1);
  assert.equal((await cache.resolve("wrn_x", lookup))?.teamId, "a");
  assert.equal(lookups, 1);
});

test("past half its life an entry is served at once and looked up again in the background", async () => {
  const cache = new AuthCache(400);
  let lookups = 0;
  let release: (() => void) | undefined;
  // The second lookup does not finish until the test says so: the answer cannot have waited on it.
  const lookup = () => {
    lookups++;
    if (lookups === 1) return Promise.resolve(authOf("a"));
    return new Promise<RequestAuth>((resolve) => (release = () => resolve(authOf("b"))));
  };
  await cache.resolve("wrn_x", lookup);
  await sleep(250);
  assert.equal((await cache.resolve("wrn_x", lookup))?.teamId, "a", "the cached answer, before the refresh begins");
  assert.equal(lookups, 1, "the refresh waits for the request's own work to be under way");
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(lookups, 2, "the refresh began");
  release!();
  await sleep(10);
  assert.equal((await cache.resolve("wrn_x", lookup))?.teamId, "b", "the refreshed answer");
  assert.equal(lookups, 2);
});

test("a key found revoked by a refresh is dropped; an entry past the TTL is never served", async () => {
  const cache = new AuthCache(200);
  let valid = true;
  const lookup = async () => (valid ? authOf("a") : undefined);
  await cache.resolve("wrn_x", lookup);
  await sleep(120);
  valid = false;
  await cache.resolve("wrn_x", lookup); // served, refresh finds it revoked
  await sleep(10);
  assert.equal(await cache.resolve("wrn_x", lookup), undefined);
  valid = true;
  await cache.resolve("wrn_y", lookup);
  valid = false;
  await sleep(220);
  assert.equal(await cache.resolve("wrn_y", lookup), undefined, "expired: looked up, and now revoked");
});

test("clear() wins over a lookup that was already in flight", async () => {
  const cache = new AuthCache(1000);
  let release!: () => void;
  const slow = () => new Promise<RequestAuth>((resolve) => (release = () => resolve(authOf("a"))));
  const first = cache.resolve("wrn_x", slow);
  cache.clear(); // e.g. the key was revoked meanwhile
  release();
  assert.equal((await first)?.teamId, "a");
  let lookups = 0;
  const revoked = async () => {
    lookups++;
    return undefined;
  };
  assert.equal(await cache.resolve("wrn_x", revoked), undefined);
  assert.equal(lookups, 1, "the in-flight answer was not cached");
});
