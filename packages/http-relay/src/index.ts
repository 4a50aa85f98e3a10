// The node:http plumbing shared by the control plane's edge proxy and the host agent's port proxy.
export { HOP_BY_HOP_HEADERS, forwardable, rawHead, writeRelayedHead } from "./headers.js";
export { refuseOnResponse, refuseOnSocket, type Refusal } from "./refusal.js";
export { REPLAYABLE_BODY_MAX_BYTES, readReplayableBody, watchReuse } from "./replay.js";
export { limitConnect } from "./connect.js";
export { SandboxConnections } from "./sandbox-connections.js";
export { growHeapForRelaying } from "./heap.js";
