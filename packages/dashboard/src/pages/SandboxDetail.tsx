// One sandbox: its facts and actions, live metrics, a terminal, a file browser and its open ports.
import { useMemo, useState } from "react";
import { api, justCreated, type MetricPoint, type Sandbox } from "../api.ts";
import { Chart } from "../Chart.tsx";
import { Link, navigate } from "../router.tsx";
import { Terminal } from "../Terminal.tsx";
import { ago, Async, bytes, dateTime, FormDialog, Loading, mb, PageHead, Segmented, StateBadge, useConfirm, useLoad, useNow } from "../ui.tsx";
import { Files } from "./Files.tsx";
import { sandboxActions, timeLeft } from "./Sandboxes.tsx";
import { SnapshotFields } from "./Templates.tsx";

const RANGES = ["10m", "2h", "24h"] as const;

export function SandboxDetail({ id }: { id: string }) {
  const confirm = useConfirm();
  const now = useNow(1000);
  const [snapshotting, setSnapshotting] = useState(false);
  const [created] = useState(() => {
    const answer = justCreated.get(id);
    justCreated.delete(id);
    return answer;
  });
  const sandbox = useLoad((signal) => api<Sandbox>("GET", `/v1/sandboxes/${id}`, undefined, { signal }), [id], 3000, created);
  const s = sandbox.data;
  const running = s?.state === "running";

  return (
    <>
      <PageHead
        title={
          <>
            <Link to="/ui/sandboxes" className="dim">
              Sandboxes
            </Link>
            <span className="faint">/</span>
            <h1 className="mono">{id}</h1>
          </>
        }
      >
        {s && <StateBadge state={s.state} />}
        <span className="spacer" />
        {s && (s.state === "running" || s.state === "paused") && (
          <button onClick={() => setSnapshotting(true)} className="small">
            Snapshot
          </button>
        )}
        {s && sandboxActions(s, confirm.ask, sandbox.reload)}
      </PageHead>
      <Async state={sandbox} what="Loading sandbox">
        {(s) => (
          <>
            <div className="section">
              <dl className="kv">
                <dt>Template</dt>
                <dd>{s.template}</dd>
                <dt>Resources</dt>
                <dd>
                  {s.vcpus} vCPU · {mb(s.memoryMb)} · {mb(s.diskSizeMb)} disk
                </dd>
                <dt>Created</dt>
                <dd>
                  {dateTime(s.createdAt)} ({ago(s.createdAt, now)})
                </dd>
                <dt>Time left</dt>
                <dd>{timeLeft(s, now)}</dd>
                <dt>Host</dt>
                <dd>{s.hostId ?? "—"}</dd>
                {Object.keys(s.metadata).length > 0 && (
                  <>
                    <dt>Metadata</dt>
                    <dd>
                      {Object.entries(s.metadata)
                        .map(([k, v]) => `${k}=${v}`)
                        .join("  ")}
                    </dd>
                  </>
                )}
              </dl>
            </div>
            <Metrics id={id} live={running} />
            {running ? (
              <>
                <section className="section" aria-label="Terminal">
                  <h2>Terminal</h2>
                  <Terminal sandboxId={id} />
                </section>
                <div className="grid-2">
                  <section className="section" aria-label="Files">
                    <h2>Files</h2>
                    <Files sandboxId={id} />
                  </section>
                  <section className="section" aria-label="Ports">
                    <h2>Open ports</h2>
                    <Ports sandboxId={id} />
                  </section>
                </div>
              </>
            ) : (
              <div className="section dim">
                {s.state === "paused" ? "Paused: resume it for the terminal, files and ports." : s.state === "starting" ? <Loading what="Starting" /> : "The sandbox is not running."}
              </div>
            )}
          </>
        )}
      </Async>
      {snapshotting && s && <SnapshotDialog sandbox={s} onClose={() => setSnapshotting(false)} onDone={sandbox.reload} />}
      {confirm.element}
    </>
  );
}

function Metrics({ id, live }: { id: string; live: boolean }) {
  const [range, setRange] = useState<(typeof RANGES)[number]>("10m");
  const metrics = useLoad(
    (signal) => api<{ points: MetricPoint[] }>("GET", `/v1/sandboxes/${id}/metrics`, undefined, { signal, query: { range } }),
    [id, range],
    live ? 5000 : undefined,
  );
  const series = useMemo(() => {
    const points = metrics.data?.points ?? [];
    return {
      times: points.map((p) => Date.parse(p.timestamp) / 1000),
      cpu: points.map((p) => p.cpuPercent),
      memory: points.map((p) => p.memoryBytes),
      disk: points.map((p) => p.diskBytes),
    };
  }, [metrics.data]);
  return (
    <section className="section" aria-label="Metrics">
      <div className="row" style={{ marginBottom: 8 }}>
        <h2 style={{ margin: 0 }}>Metrics</h2>
        <span style={{ flex: 1 }} />
        <Segmented label="Metrics range" options={RANGES.map((r) => ({ value: r, label: r }))} value={range} onChange={setRange} />
      </div>
      <Async state={metrics} what="Loading metrics">
        {() => (
          <div className="grid-3">
            <Chart label="CPU" times={series.times} values={series.cpu} format={(v) => `${v.toFixed(v < 10 ? 1 : 0)}%`} yMax={100} />
            <Chart label="Memory" times={series.times} values={series.memory} format={bytes} />
            <Chart label="Disk" times={series.times} values={series.disk} format={bytes} />
          </div>
        )}
      </Async>
    </section>
  );
}

/** Listening TCP ports, read from /proc/net/tcp{,6} inside the sandbox (envd's own port left out). */
export function parseListeningPorts(procNetTcp: string): number[] {
  const ports = new Set<number>();
  for (const line of procNetTcp.split("\n")) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 4 || fields[3] !== "0A") continue;
    const port = parseInt(fields[1]!.split(":").pop() ?? "", 16);
    if (Number.isFinite(port) && port !== 49983) ports.add(port);
  }
  return [...ports].sort((a, b) => a - b);
}

/** The edge proxy's address for a sandbox port: `<port>-<id>.<domain>` on the API's own port. */
export function portUrl(sandboxId: string, port: number, where: Location = location): string {
  const host = where.hostname;
  const domain = host === "localhost" || /^[\d.]+$/.test(host) || host.includes(":") ? "localhost" : host;
  return `${where.protocol}//${port}-${sandboxId}.${domain}${where.port ? `:${where.port}` : ""}/`;
}

/**
 * A browser cannot send the sandbox's traffic token as a header, so a click asks the API for a
 * one-minute link (POST /v1/sandboxes/:id/ports/:port/link): following it leaves a cookie for that
 * port's host only. The tab opens at once (a tab opened after an await is blocked as a pop-up).
 */
async function openPort(event: { preventDefault(): void }, sandboxId: string, port: number): Promise<void> {
  event.preventDefault();
  const tab = window.open("about:blank", "_blank");
  if (tab) tab.opener = null;
  try {
    const link = await api<{ url: string }>("POST", `/v1/sandboxes/${sandboxId}/ports/${port}/link`);
    if (tab) tab.location.href = link.url;
    else window.location.href = link.url;
  } catch (err) {
    tab?.close();
    window.alert(`Could not open port ${port}: ${(err as Error).message}`);
  }
}

function Ports({ sandboxId }: { sandboxId: string }) {
  const ports = useLoad(
    async (signal) => {
      // The terminal's shell starts first: the ports can wait a moment.
      if (!ports.data) await new Promise((resolve) => setTimeout(resolve, 1500));
      signal.throwIfAborted();
      const result = await api<{ stdout: string }>(
        "POST",
        `/v1/sandboxes/${sandboxId}/exec`,
        { cmd: "/bin/sh", args: ["-c", "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null"], timeoutSec: 10 },
        { signal },
      );
      return parseListeningPorts(result.stdout);
    },
    [sandboxId],
    15_000,
  );
  return (
    <Async state={ports} what="Looking for open ports">
      {(list) =>
        list.length === 0 ? (
          <div className="empty">Nothing listens on a TCP port yet.</div>
        ) : (
          <ul className="stack" style={{ listStyle: "none", padding: 0, margin: 0 }}>
            {list.map((port) => (
              <li key={port} className="row mono">
                <span style={{ minWidth: 56 }}>{port}</span>
                <a href={portUrl(sandboxId, port)} target="_blank" rel="noreferrer" onClick={(event) => openPort(event, sandboxId, port)}>
                  {portUrl(sandboxId, port)}
                </a>
              </li>
            ))}
          </ul>
        )
      }
    </Async>
  );
}

function SnapshotDialog({ sandbox, onClose, onDone }: { sandbox: Sandbox; onClose: () => void; onDone: () => void }) {
  const [name, setName] = useState(`${sandbox.template}-snap-${new Date().toISOString().slice(0, 10)}`.replace(/[^a-z0-9._-]/g, "-").slice(0, 63));
  const [keepRunning, setKeepRunning] = useState(true);
  const snapshot = async () => {
    await api("POST", "/v1/templates", { fromSandbox: sandbox.id, name, keepRunning });
    onDone();
    onClose();
    if (!keepRunning) navigate("/ui/templates");
  };
  return (
    <FormDialog title="Snapshot sandbox" submit="Snapshot" busyLabel="Saving…" onClose={onClose} onSubmit={snapshot}>
      <p className="dim" style={{ margin: 0 }}>
        Saves <code>{sandbox.id}</code> as a team template that new sandboxes can start from.
      </p>
      <SnapshotFields name={name} setName={setName} keepRunning={keepRunning} setKeepRunning={setKeepRunning} autoFocus />
    </FormDialog>
  );
}
