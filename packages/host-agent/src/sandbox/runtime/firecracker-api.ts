// A client of Firecracker's API: HTTP/1.1 with JSON bodies over the Unix socket `--api-sock`
// names (its swagger file, ../shared/specs/firecracker.yaml, is the contract;
// test/firecracker-contract.test.ts checks every request against it). One connection per call:
// a sandbox makes a handful of calls in its life. Firecracker answers 204 to a change, 200 with
// JSON to a read, and 4xx/5xx with `{ "fault_message": … }`.
import http from "node:http";

/** The body types below are the spec's definitions, with the fields this driver sends. */
export interface MachineConfiguration {
  /** 1–32. */
  vcpu_count: number;
  mem_size_mib: number;
  smt?: boolean;
  track_dirty_pages?: boolean;
}

export interface BootSource {
  kernel_image_path: string;
  initrd_path?: string;
  boot_args?: string;
}

export interface Drive {
  drive_id: string;
  path_on_host: string;
  is_root_device: boolean;
  is_read_only: boolean;
  cache_type?: "Unsafe" | "Writeback";
}

export interface NetworkInterface {
  iface_id: string;
  /** The TAP device, in the VMM's network namespace. */
  host_dev_name: string;
  guest_mac?: string;
}

export interface InstanceInfo {
  app_name: string;
  id: string;
  state: "Not started" | "Running" | "Paused";
  vmm_version: string;
}

export interface SnapshotCreateParams {
  snapshot_path: string;
  mem_file_path: string;
  snapshot_type?: "Full" | "Diff";
}

export interface SnapshotLoadParams {
  snapshot_path: string;
  mem_backend: { backend_type: "File" | "Uffd"; backend_path: string };
  resume_vm?: boolean;
  track_dirty_pages?: boolean;
}

/** What `--config-file` takes with `--no-api` (the spec's FullVmConfiguration; `drives` is required by the parser). */
export interface VmConfigFile {
  "boot-source": BootSource;
  "machine-config"?: MachineConfiguration;
  drives: Drive[];
  "network-interfaces"?: NetworkInterface[];
}

export class FirecrackerApiError extends Error {
  constructor(
    message: string,
    /** The HTTP status, when Firecracker answered. */
    readonly status?: number,
  ) {
    super(message);
    this.name = "FirecrackerApiError";
  }
}

const DEFAULT_TIMEOUT_MS = 10_000;
/** A snapshot writes or maps the whole guest memory. */
const SNAPSHOT_TIMEOUT_MS = 5 * 60_000;

export class FirecrackerClient {
  constructor(readonly socketPath: string) {}

  /** The instance's id, version and state (Not started, Running, Paused). */
  async describe(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<InstanceInfo> {
    return (await this.call("GET", "/", undefined, timeoutMs)) as InstanceInfo;
  }

  /** vCPUs and memory (pre-boot). */
  async setMachine(config: MachineConfiguration): Promise<void> {
    await this.call("PUT", "/machine-config", config);
  }

  /** The kernel, initramfs and command line (pre-boot). */
  async setBootSource(source: BootSource): Promise<void> {
    await this.call("PUT", "/boot-source", source);
  }

  /** A virtio-blk disk backed by a raw file (pre-boot); the root device comes first (vda). */
  async setDrive(drive: Drive): Promise<void> {
    await this.call("PUT", `/drives/${encodeURIComponent(drive.drive_id)}`, drive);
  }

  /** A virtio-net card on a TAP device (pre-boot). */
  async setNetworkInterface(iface: NetworkInterface): Promise<void> {
    await this.call("PUT", `/network-interfaces/${encodeURIComponent(iface.iface_id)}`, iface);
  }

  /** A virtio-rng device that seeds the guest's RNG (pre-boot). */
  async addEntropyDevice(): Promise<void> {
    await this.call("PUT", "/entropy", {});
  }

  /** Boots the configured VM. */
  async start(): Promise<void> {
    await this.call("PUT", "/actions", { action_type: "InstanceStart" });
  }

  /** Stops the vCPUs; memory and devices stay. */
  async pause(): Promise<void> {
    await this.call("PATCH", "/vm", { state: "Paused" });
  }

  async resume(): Promise<void> {
    await this.call("PATCH", "/vm", { state: "Resumed" });
  }

  /** Writes the VM's state and memory to files (the VM must be paused). */
  async createSnapshot(params: SnapshotCreateParams): Promise<void> {
    await this.call("PUT", "/snapshot/create", params, SNAPSHOT_TIMEOUT_MS);
  }

  /** Loads a snapshot into this fresh, unconfigured Firecracker. */
  async loadSnapshot(params: SnapshotLoadParams): Promise<void> {
    await this.call("PUT", "/snapshot/load", params, SNAPSHOT_TIMEOUT_MS);
  }

  private call(method: "GET" | "PUT" | "PATCH", path: string, body?: unknown, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<unknown> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const what = `Firecracker API ${method} ${path} on ${this.socketPath}`;
    return new Promise((resolve, reject) => {
      const request = http.request(
        {
          socketPath: this.socketPath,
          method,
          path,
          // Firecracker's HTTP server takes no chunked bodies: always a Content-Length.
          headers: { Accept: "application/json", ...(payload === undefined ? {} : { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(payload) }) },
          agent: false,
          signal: AbortSignal.timeout(timeoutMs),
        },
        (response) => {
          const chunks: Buffer[] = [];
          response.on("data", (chunk: Buffer) => chunks.push(chunk));
          response.on("error", (err) => reject(new FirecrackerApiError(`${what}: ${err.message}`)));
          response.on("end", () => {
            const status = response.statusCode ?? 0;
            const text = Buffer.concat(chunks).toString();
            let parsed: unknown;
            try {
              parsed = text ? JSON.parse(text) : undefined;
            } catch {
              parsed = undefined;
            }
            if (status >= 200 && status < 300) {
              if (text && parsed === undefined) reject(new FirecrackerApiError(`${what}: unreadable answer ${JSON.stringify(text.slice(0, 200))}`, status));
              else resolve(parsed);
              return;
            }
            const fault = (parsed as { fault_message?: unknown } | undefined)?.fault_message;
            reject(new FirecrackerApiError(`${what}: ${status} ${typeof fault === "string" ? fault : text.slice(0, 500) || response.statusMessage}`, status));
          });
        },
      );
      request.on("error", (err) => reject(new FirecrackerApiError(`${what}: ${err.message}`)));
      request.end(payload);
    });
  }
}
