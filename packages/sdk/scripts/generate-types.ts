// Writes src/api/schema.ts: the control plane's API as TypeScript types (test/generated-types.test.ts fails when it is stale).
import { writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { generatedTypes } from "./openapi-document.js";

export const schemaFile = fileURLToPath(new URL("../src/api/schema.ts", import.meta.url));

await writeFile(schemaFile, await generatedTypes());
console.log(`wrote ${schemaFile}`);
