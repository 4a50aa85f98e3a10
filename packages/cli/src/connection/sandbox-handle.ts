// Handles on existing sandboxes: `Sandbox.connect` resumes a paused sandbox, which commands that
// only look at or change its state (info, pause, kill, timeout) must not do; `Sandbox.handle` leaves it be.
import { Sandbox } from "@wrenn/sdk";
import { resolveConnection } from "../config/config-file.js";

/** A handle that leaves the sandbox as it is (no resume). */
export async function sandboxHandle(sandboxId: string): Promise<Sandbox> {
  return Sandbox.handle(sandboxId, await resolveConnection());
}

/** A handle for working in the sandbox: a paused one is resumed. */
export async function connectSandbox(sandboxId: string): Promise<Sandbox> {
  return Sandbox.connect(sandboxId, {}, await resolveConnection());
}
