// A sandbox's processes as its envd runs them (E2B's Connect `process.Process`), reached through
// the port proxy of the sandbox's host like its files (envd-files.ts): start one in a terminal,
// attach to a running one, type into it, resize it.
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { Process, type ProcessEvent } from "@wrenn/proto/envd/process";
import type { Host, Sandbox } from "../db/schema.js";
import { WrennError } from "../errors.js";
import { agentError } from "../hosts/agent-client.js";
import type { HostRegistry } from "../hosts/registry.js";
import { ENVD_PORT } from "./envd-files.js";
import { requireStatus } from "./transitions.js";
import type { SandboxService } from "./service.js";

/** Unary calls (input, resize) are quick: anything slower means envd or the host is stuck. */
const CALL_TIMEOUT_MS = 30_000;
/** envd sends a keepalive event on an idle stream this often (seconds), so no proxy on the way thinks it dead. */
const KEEPALIVE_INTERVAL_SEC = "30";

type ProcessClient = Client<typeof Process>;

export interface TerminalSize {
  cols: number;
  rows: number;
}

export interface TerminalCommand {
  cmd: string;
  args: string[];
  envs: Record<string, string>;
  /** Inside the sandbox; `~` is the user's home. */
  cwd: string;
}

/** One running sandbox's envd process service; calls fail with WrennErrors (not_found: no such process). */
export class SandboxProcesses {
  constructor(
    readonly sandbox: Sandbox,
    private readonly host: Host,
    private readonly client: ProcessClient,
    private readonly headers: Record<string, string>,
  ) {}

  /** Starts `command` in a terminal of `size`, as envd's default user; the events begin with start{pid}. */
  startTerminal(command: TerminalCommand, size: TerminalSize, signal: AbortSignal): AsyncIterable<ProcessEvent> {
    // No deadline: envd makes a Start's deadline the process's lifetime.
    const stream = this.client.start(
      { process: { cmd: command.cmd, args: command.args, envs: command.envs, cwd: command.cwd }, pty: { size } },
      { headers: this.streamHeaders(), signal },
    );
    return this.events(stream);
  }

  /** Follows a running process's events (start{pid} first); not_found when no process has that pid. */
  attach(pid: number, signal: AbortSignal): AsyncIterable<ProcessEvent> {
    return this.events(this.client.connect({ process: { selector: { case: "pid", value: pid } } }, { headers: this.streamHeaders(), signal }));
  }

  /** Types into a process's terminal. */
  async sendInput(pid: number, data: Uint8Array): Promise<void> {
    await this.call(() =>
      this.client.sendInput({ process: { selector: { case: "pid", value: pid } }, input: { input: { case: "pty", value: data } } }, this.callOptions()),
    );
  }

  async resize(pid: number, size: TerminalSize): Promise<void> {
    await this.call(() => this.client.update({ process: { selector: { case: "pid", value: pid } }, pty: { size } }, this.callOptions()));
  }

  private async *events(stream: AsyncIterable<{ event?: ProcessEvent }>): AsyncGenerator<ProcessEvent> {
    try {
      for await (const response of stream) if (response.event) yield response.event;
    } catch (err) {
      throw this.error(err);
    }
  }

  private async call<T>(rpc: () => Promise<T>): Promise<T> {
    try {
      return await rpc();
    } catch (err) {
      throw this.error(err);
    }
  }

  private callOptions() {
    return { headers: this.headers, timeoutMs: CALL_TIMEOUT_MS };
  }

  private streamHeaders(): Record<string, string> {
    return { ...this.headers, "keepalive-ping-interval": KEEPALIVE_INTERVAL_SEC };
  }

  private error(err: unknown): WrennError {
    const connectError = ConnectError.from(err);
    if (connectError.code === Code.NotFound) return new WrennError("not_found", connectError.rawMessage, { cause: connectError });
    if (connectError.code === Code.InvalidArgument) return new WrennError("invalid_argument", connectError.rawMessage, { cause: connectError });
    if (connectError.code === Code.FailedPrecondition) return new WrennError("failed_precondition", connectError.rawMessage, { cause: connectError });
    // The host's proxy answers 404 (read by Connect as Unimplemented) once it no longer runs the sandbox.
    if (connectError.code === Code.Unimplemented) {
      return new WrennError("failed_precondition", `sandbox ${this.sandbox.id} is no longer running on its host`, { cause: connectError });
    }
    return agentError(err, this.host.id);
  }
}

export class EnvdProcesses {
  /** One Connect client per proxy endpoint (HTTP/1.1 keep-alive, binary codec). */
  private readonly clients = new Map<string, ProcessClient>();

  constructor(private readonly options: { sandboxes: SandboxService; registry: HostRegistry }) {}

  /** The process service of the caller's running sandbox: not_found for another team's, failed_precondition when not running. */
  async of(teamId: string, sandboxId: string): Promise<SandboxProcesses> {
    const sandbox = await this.options.sandboxes.get(teamId, sandboxId);
    requireStatus(sandbox, ["running"]);
    if (!sandbox.hostId) throw new WrennError("unavailable", `sandbox ${sandbox.id} has no host`);
    const { host } = await this.options.registry.connect(sandbox.hostId);
    const { baseUrl, token } = this.options.registry.proxyEndpoint(host);
    let client = this.clients.get(baseUrl);
    if (!client) {
      client = createClient(Process, createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true }));
      this.clients.set(baseUrl, client);
    }
    const headers: Record<string, string> = {
      "x-wrenn-sandbox-id": sandbox.id,
      "x-wrenn-sandbox-port": String(ENVD_PORT),
      "x-wrenn-host-token": token,
    };
    if (sandbox.envdAccessToken) headers["x-access-token"] = sandbox.envdAccessToken;
    return new SandboxProcesses(sandbox, host, client, headers);
  }
}
