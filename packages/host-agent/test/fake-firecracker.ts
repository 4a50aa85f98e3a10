// A stand-in for the firecracker binary, for the driver's contract test on machines where the
// real one cannot run (no firecracker package in Debian; a KVM that runs no guest). It takes the
// same command line (`--api-sock <path> --id <id>`, `--version`), serves HTTP on the API socket
// as Firecracker does (204 to a change, 200 + JSON to GET /, 400 + fault_message to what
// Firecracker refuses: a pre-boot call after the start, a snapshot of a running VM, a start
// without a kernel, a load into a configured VM), and appends every request it gets, with its
// headers, body and answer, as one JSON line to the file after `--record`. It boots nothing: what
// it proves is what the driver sends, in what order; test/firecracker-spec.ts judges the requests.
//
//   node --import tsx fake-firecracker.ts --record <file> [--version-says <text>] [--exit-at-start] <firecracker's arguments>
import { appendFileSync, existsSync, readlinkSync, writeFileSync } from "node:fs";
import http from "node:http";

export interface RecordedRequest {
  method: string;
  path: string;
  contentType?: string;
  contentLength?: string;
  transferEncoding?: string;
  /** The body as sent. */
  raw: string;
  /** The body parsed as JSON (undefined when there was none or it was not JSON). */
  body?: unknown;
  status: number;
}

/** The first line the stand-in records: how it was started and where. */
export interface RecordedStart {
  argv: string[];
  pid: number;
  /** /proc/self/ns/net, e.g. net:[4026532281]: the namespace it runs in. */
  netns: string;
}

function main(): void {
  const args = process.argv.slice(2);
  const option = (name: string): string | undefined => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const recordFile = option("--record");
  if (!recordFile) throw new Error("fake-firecracker: --record <file> is required");
  if (args.includes("--version")) {
    console.log(option("--version-says") ?? "Firecracker v1.17.0-dev");
    return;
  }
  const record = (entry: RecordedStart | RecordedRequest) => appendFileSync(recordFile, `${JSON.stringify(entry)}\n`);
  const argv = args.slice(args.indexOf(recordFile) + 1).filter((a) => a !== "--exit-at-start");
  record({ argv, pid: process.pid, netns: readlinkSync("/proc/self/ns/net") });
  if (args.includes("--exit-at-start")) {
    console.log("fake-firecracker: exiting at start, as asked");
    process.exit(1);
  }
  const socket = option("--api-sock");
  const id = option("--id") ?? "anonymous-instance";
  // Firecracker's own checks of its command line (utils/src/validators.rs, the API socket's bind).
  if (!/^[A-Za-z0-9-]{1,64}$/.test(id)) {
    console.log(`fake-firecracker: Invalid instance ID: ${id}`);
    process.exit(1);
  }
  if (!socket) {
    console.log("fake-firecracker: no --api-sock");
    process.exit(1);
  }
  if (existsSync(socket)) {
    console.log(`fake-firecracker: Failed to open the API socket at: ${socket}. Check that it is not already used.`);
    process.exit(1);
  }

  let state: "Not started" | "Running" | "Paused" = "Not started";
  let configured = false;
  let bootSource = false;
  const preBoot = (method: string, path: string) =>
    method === "PUT" && (/^\/(machine-config|boot-source|entropy)$/.test(path) || /^\/(drives|network-interfaces)\/[^/]+$/.test(path));

  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      const raw = Buffer.concat(chunks).toString();
      let body: unknown;
      try {
        body = raw ? JSON.parse(raw) : undefined;
      } catch {
        body = undefined;
      }
      const method = request.method ?? "";
      const path = request.url ?? "";
      const answer = (status: number, json?: unknown) => {
        record({
          method,
          path,
          contentType: request.headers["content-type"],
          contentLength: request.headers["content-length"],
          transferEncoding: request.headers["transfer-encoding"],
          raw,
          body,
          status,
        });
        const text = json === undefined ? "" : JSON.stringify(json);
        response.writeHead(status, json === undefined ? {} : { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
        response.end(text);
      };
      const fault = (message: string) => answer(400, { fault_message: message });
      if (raw && body === undefined) return fault("Invalid JSON body");
      const fields = (body ?? {}) as Record<string, unknown>;
      if (method === "GET" && path === "/") return answer(200, { app_name: "Firecracker", id, state, vmm_version: "1.17.0-dev" });
      if (preBoot(method, path)) {
        if (state !== "Not started") return fault("The requested operation is not supported after starting the microVM.");
        configured = true;
        if (path === "/boot-source") bootSource = true;
        return answer(204);
      }
      if (method === "PUT" && path === "/actions" && fields.action_type === "InstanceStart") {
        if (state !== "Not started") return fault("The requested operation is not supported after starting the microVM.");
        if (!bootSource) return fault("Cannot start microvm without kernel configuration.");
        state = "Running";
        return answer(204);
      }
      if (method === "PATCH" && path === "/vm") {
        if (state === "Not started") return fault("The requested operation is not supported before starting the microVM.");
        state = fields.state === "Paused" ? "Paused" : "Running";
        return answer(204);
      }
      if (method === "PUT" && path === "/snapshot/create") {
        if (state !== "Paused") return fault("Cannot save the microVM state: the microVM must be paused.");
        writeFileSync(String(fields.snapshot_path), "fake-firecracker vm state\n");
        writeFileSync(String(fields.mem_file_path), "fake-firecracker memory\n");
        return answer(204);
      }
      if (method === "PUT" && path === "/snapshot/load") {
        if (state !== "Not started" || configured) return fault("Loading a microVM snapshot not allowed after configuring boot-specific resources.");
        state = fields.resume_vm === true ? "Running" : "Paused";
        return answer(204);
      }
      return fault(`Invalid request method and/or path: ${method} ${path}.`);
    });
  });
  server.listen(socket, () => console.log(`fake-firecracker: API on ${socket} (id ${id})`));
  process.on("SIGTERM", () => process.exit(0));
}

main();
