#!/usr/bin/env node
// The `wrenn` command: runs src/main.ts through tsx, resolved from this package (any working directory).
import { register } from "tsx/esm/api";

register();
await import("../src/main.ts");
