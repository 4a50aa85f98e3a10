// Which runtimes can boot a template. Every template today is a filesystem image (its layers on
// the host's disk): gVisor boots the directory, the VM runtimes an ext4 image their host makes
// from it on first use. So every runtime boots every template; a template that could not (a VM's
// memory snapshot, say) would list fewer here, and creates asking for another runtime are refused.
import { SANDBOX_RUNTIMES, type SandboxRuntime, type Template } from "../db/schema.js";

export function templateRuntimes(_template: Template): readonly SandboxRuntime[] {
  return SANDBOX_RUNTIMES;
}
