import { test } from "node:test";
import assert from "node:assert/strict";
import { cookieValue, withoutCookie } from "../src/cookies.js";

test("cookieValue finds one cookie among others, trimmed, skipping an empty one of the same name", () => {
  assert.equal(cookieValue("a=1; wrenn_session=abc ; b=2", "wrenn_session"), "abc");
  assert.equal(cookieValue("wrenn_session=; wrenn_session=second", "wrenn_session"), "second");
  assert.equal(cookieValue("xwrenn_session=1; =2; novalue", "wrenn_session"), undefined);
  assert.equal(cookieValue("a=b=c", "a"), "b=c", "a value may hold '='");
  assert.equal(cookieValue(undefined, "a"), undefined);
});

test("withoutCookie drops only the named cookie, and says undefined when none is left", () => {
  assert.equal(withoutCookie("app=1; wrenn_port_access=t; theme=dark", "wrenn_port_access"), "app=1; theme=dark");
  assert.equal(withoutCookie("wrenn_port_access=t", "wrenn_port_access"), undefined);
  assert.equal(withoutCookie(undefined, "wrenn_port_access"), undefined);
});
