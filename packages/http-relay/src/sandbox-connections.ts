// Kept-alive connections to sandboxes (the host's port proxy; the edge proxy's direct path to envd),
// pooled per sandbox so that a sandbox's connections go with it: a later sandbox given the same
// address never inherits one.
import http from "node:http";

/** envd's port in every sandbox (E2B's). */
const ENVD_PORT = 49983;

/**
 * envd's server closes idle connections after 65 s (packages/envd/src/server/listen.ts); ours are
 * dropped well before, so envd never closes one we may be about to reuse.
 */
const ENVD_FREE_TIMEOUT_MS = 30_000;
/**
 * Other ports run the user's servers, whose idle timeouts we cannot know: gunicorn closes after
 * 2 s, uvicorn and Node after 5 s (Node announces it, and the agent then drops sooner still), Go
 * and nginx keep far longer. One second keeps a burst of calls (a page load, a loop) on one
 * connection while rarely outliving the server's patience; when it does, the request is replayed
 * on a fresh connection (replay.ts), and a body that cannot be replayed never uses a reused one.
 */
const USER_PORT_FREE_TIMEOUT_MS = 1_000;

interface SandboxPools {
  address: string;
  envd: http.Agent;
  userPorts: http.Agent;
}

// noDelay: a relay passes on small writes (a streamed event, a request's last chunk) as they come;
// Nagle's algorithm would hold one back until the previous segment is acknowledged.
const pooled = (timeout: number) => new http.Agent({ keepAlive: true, scheduling: "lifo", timeout, noDelay: true });

export class SandboxConnections {
  private readonly bySandbox = new Map<string, SandboxPools>();
  /** One connection per request, closed after it: for bodies that cannot be sent twice, and replays. */
  readonly fresh = new http.Agent({ keepAlive: false, noDelay: true });

  /** The pool for `port` of the sandbox at `address`; a sandbox seen at a new address starts afresh. */
  agentFor(sandboxId: string, address: string, port: number): http.Agent {
    let pools = this.bySandbox.get(sandboxId);
    if (pools?.address !== address) {
      if (pools) this.drop(sandboxId, true);
      pools = { address, envd: pooled(ENVD_FREE_TIMEOUT_MS), userPorts: pooled(USER_PORT_FREE_TIMEOUT_MS) };
      this.bySandbox.set(sandboxId, pools);
    }
    return port === ENVD_PORT ? pools.envd : pools.userPorts;
  }

  /**
   * Closes the sandbox's idle connections and retires its pools. `cutActive` also cuts exchanges
   * in flight (a destroyed sandbox's network is gone: they could only hang); without it (a pause)
   * they finish, and their connections close instead of returning to a pool.
   */
  drop(sandboxId: string, cutActive: boolean): void {
    const pools = this.bySandbox.get(sandboxId);
    if (!pools) return;
    this.bySandbox.delete(sandboxId);
    for (const agent of [pools.envd, pools.userPorts]) {
      if (cutActive) {
        agent.destroy();
        continue;
      }
      // The agent's own listener pools a freed socket first; this one then closes it.
      agent.on("free", (socket: import("node:net").Socket) => socket.destroy());
      for (const sockets of Object.values(agent.freeSockets)) for (const socket of sockets ?? []) socket.destroy();
    }
  }

  /** Open connections (idle or busy) to the sandbox's ports, for tests and diagnostics. */
  openCount(sandboxId: string): number {
    const pools = this.bySandbox.get(sandboxId);
    if (!pools) return 0;
    let count = 0;
    for (const agent of [pools.envd, pools.userPorts]) {
      for (const set of [agent.freeSockets, agent.sockets]) for (const sockets of Object.values(set)) count += sockets?.length ?? 0;
    }
    return count;
  }

  destroy(): void {
    for (const sandboxId of [...this.bySandbox.keys()]) this.drop(sandboxId, true);
    this.fresh.destroy();
  }
}
