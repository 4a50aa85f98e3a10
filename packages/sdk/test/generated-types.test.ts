// src/api/schema.ts must be what the control plane's current routes generate.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";
import { generatedTypes } from "../scripts/openapi-document.js";

test("the committed API types match the control plane's OpenAPI document (else run `npm run gen -w @wrenn/sdk`)", async () => {
  const committed = await readFile(new URL("../src/api/schema.ts", import.meta.url), "utf8");
  const fresh = await generatedTypes();
  if (committed !== fresh) {
    const committedLines = committed.split("\n");
    const freshLines = fresh.split("\n");
    const first = freshLines.findIndex((line, index) => line !== committedLines[index]);
    assert.fail(
      `packages/sdk/src/api/schema.ts is stale: regenerate it with \`npm run gen -w @wrenn/sdk\` and commit it ` +
        `(first difference at line ${first + 1}: ${JSON.stringify(committedLines[first])} vs ${JSON.stringify(freshLines[first])})`,
    );
  }
});
