// The real stack for SDK tests: the control plane's API harness (a host agent, gVisor sandboxes,
// PGlite) with this package's address pool and nftables table, and a check that nothing is left.
import { startApi, type ApiUnderTest } from "../../control-plane/test/api-harness.js";
import type { ControlPlaneConfig } from "../../control-plane/src/config.js";

export { skipAgent, TEST_TEMPLATE, waitFor } from "../../control-plane/test/orchestration-harness.js";

/** One /24 of 10.248.0.0/16 and one table per test file. */
export function startStack(slot: number, table: string, config: Partial<ControlPlaneConfig> = {}): Promise<ApiUnderTest> {
  return startApi({ database: "pglite", agents: [{ pool: `10.248.${slot}.0/24`, table: `wrenn_hc3_${table}` }], config });
}

export type { ApiUnderTest };
