// wrenn host list (admin). The SDK has no hosts call yet, so this one GET is made here.
import { AuthenticationError, PermissionError, type components } from "@wrenn/sdk";
import { parse } from "../command-line/args.js";
import { resolveConnection } from "../config/config-file.js";
import { CliError } from "../output/cli-error.js";
import { formatAge, formatTable, printJson } from "../output/table.js";

type Host = components["schemas"]["Host"];

async function list(argv: string[]): Promise<void> {
  const { values } = parse(argv, { json: { type: "boolean" } }, "wrenn host list [--json]", { max: 0 });
  const { apiUrl, apiKey } = await resolveConnection();
  let response: Response;
  try {
    response = await fetch(`${apiUrl}/v1/hosts`, { headers: { "x-api-key": apiKey }, signal: AbortSignal.timeout(30_000) });
  } catch (err) {
    throw new CliError(`cannot reach ${apiUrl} (${(err as Error).cause ?? (err as Error).message}): is the control plane running? Check WRENN_API_URL or run wrenn login`);
  }
  if (!response.ok) {
    const body = (await response.json().catch(() => ({}))) as { message?: string; code?: string };
    const message = body.message ?? `HTTP ${response.status}`;
    if (response.status === 401) throw new AuthenticationError(message, { code: body.code ?? "unauthorized", status: 401 });
    if (response.status === 403) throw new PermissionError(`${message} (wrenn host list needs the admin key that make up prints)`, { code: body.code ?? "forbidden", status: 403 });
    throw new CliError(`GET /v1/hosts: ${message}`);
  }
  const rows = (await response.json()) as Host[];
  if (values.json) return printJson(rows);
  process.stdout.write(
    formatTable(
      ["ID", "STATUS", "ADDRESS", "SANDBOXES", "SLOTS", "MEMORY", "HEARTBEAT"],
      rows.map((h) => [
        h.id,
        h.status,
        h.address ?? "-",
        h.live ? `${h.live.sandboxes.running} running, ${h.live.sandboxes.paused} paused` : "-",
        h.live ? `${h.live.slotsUsed}/${h.capacity.slots}` : String(h.capacity.slots),
        `${h.capacity.memoryMb} MiB`,
        formatAge(h.lastHeartbeatAt),
      ]),
    ),
  );
}

export const HOST_COMMANDS: Record<string, (argv: string[]) => Promise<void>> = { list, ls: list };
