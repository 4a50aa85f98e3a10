// Templates & snapshots: platform templates (read-only) and the team's own (delete), snapshot a
// running sandbox, build a template from steps with its log live, recent builds.
import { useEffect, useState } from "react";
import { api, type Build, type Sandbox, type Template } from "../api.ts";
import { ago, Async, AsyncTable, bytes, FormDialog, PageHead, StateBadge, useConfirm, useLoad, useNow } from "../ui.tsx";

export function Templates() {
  const confirm = useConfirm();
  const now = useNow(5000);
  const [dialog, setDialog] = useState<"snapshot" | "build">();
  const [watching, setWatching] = useState<string>();
  const templates = useLoad((signal) => api<Template[]>("GET", "/v1/templates", undefined, { signal }), [], 10_000);
  const builds = useLoad((signal) => api<Build[]>("GET", "/v1/templates/builds", undefined, { signal }), [], 5000);

  const remove = (template: Template) =>
    confirm.ask({
      title: "Delete template",
      body: (
        <p>
          Delete <code>{template.name}</code>? Sandboxes can no longer start from it.
        </p>
      ),
      action: "Delete",
      danger: true,
      run: async () => {
        await api("DELETE", `/v1/templates/${encodeURIComponent(template.name)}`);
        templates.reload();
      },
    });

  return (
    <>
      <PageHead title="Templates & snapshots">
        <span className="spacer" />
        <button onClick={() => setDialog("snapshot")}>Snapshot a sandbox</button>
        <button className="primary" onClick={() => setDialog("build")}>
          + Build template
        </button>
      </PageHead>
      <div className="section">
        <AsyncTable
          state={templates}
          what="Loading templates"
          label="Templates"
          head={
            <>
              <th>Name</th>
              <th>Kind</th>
              <th>Owner</th>
              <th className="num">Size</th>
              <th className="hide-sm">Created</th>
              <th />
            </>
          }
          row={(t: Template) => (
            <tr key={t.id} data-template={t.name}>
              <td className="mono">{t.name}</td>
              <td>
                <span className="badge plain">{t.kind}</span>
              </td>
              <td className="dim">{t.platform ? "platform" : "team"}</td>
              <td className="num mono">{t.sizeBytes ? bytes(t.sizeBytes) : "—"}</td>
              <td className="dim nowrap hide-sm">{ago(t.createdAt, now)}</td>
              <td className="actions">
                {t.platform ? (
                  <span className="faint" title="Platform templates are shared by every team and cannot be deleted">
                    read-only
                  </span>
                ) : (
                  <button className="small danger" onClick={() => remove(t)} aria-label={`Delete ${t.name}`}>
                    Delete
                  </button>
                )}
              </td>
            </tr>
          )}
        />
      </div>
      <div className="section">
        <h2>Builds</h2>
        <AsyncTable
          state={builds}
          what="Loading builds"
          items={(list) => list.slice(0, 20)}
          label="Builds"
          empty="No builds yet."
          head={
            <>
              <th>Build</th>
              <th>Template</th>
              <th>From</th>
              <th>Status</th>
              <th className="hide-sm">Started</th>
              <th />
            </>
          }
          row={(b) => (
            <tr key={b.id}>
              <td className="mono dim">{b.id.slice(0, 12)}…</td>
              <td className="mono">{b.name}</td>
              <td className="mono dim">{b.baseTemplate}</td>
              <td>
                <StateBadge state={b.status} />
              </td>
              <td className="dim nowrap hide-sm">{ago(b.startedAt, now)}</td>
              <td className="actions">
                <button className="small" onClick={() => setWatching(b.id)}>
                  Logs
                </button>
              </td>
            </tr>
          )}
        />
      </div>
      {watching && (
        <div className="section">
          <div className="row" style={{ marginBottom: 6 }}>
            <h2 style={{ margin: 0 }}>
              Build log <span className="mono">{watching}</span>
            </h2>
            <span style={{ flex: 1 }} />
            <button className="small ghost" onClick={() => setWatching(undefined)}>
              Close
            </button>
          </div>
          <BuildLog
            buildId={watching}
            onEnd={() => {
              templates.reload();
              builds.reload();
            }}
          />
        </div>
      )}
      {dialog === "snapshot" && <SnapshotDialog onClose={() => setDialog(undefined)} onDone={templates.reload} />}
      {dialog === "build" && (
        <BuildDialog
          templates={templates.data ?? []}
          onClose={() => setDialog(undefined)}
          onStarted={(build) => {
            setWatching(build.id);
            builds.reload();
          }}
        />
      )}
      {confirm.element}
    </>
  );
}

interface LogLine {
  kind: "step" | "stdout" | "stderr" | "exit" | "done" | "failed";
  text: string;
}

/** A build's log over server-sent events: what happened so far, then live until it ends. */
export function BuildLog({ buildId, onEnd }: { buildId: string; onEnd?: () => void }) {
  const [lines, setLines] = useState<LogLine[]>([]);
  const [ended, setEnded] = useState(false);
  useEffect(() => {
    setLines([]);
    setEnded(false);
    const source = new EventSource(`/v1/templates/builds/${buildId}/logs`);
    const add = (line: LogLine) => setLines((all) => [...all, line]);
    const parse = (event: MessageEvent) => JSON.parse(String(event.data)) as Record<string, unknown>;
    source.addEventListener("step", (e) => {
      const d = parse(e);
      add({ kind: "step", text: `$ ${String(d.command)}\n` });
    });
    for (const stream of ["stdout", "stderr"] as const) source.addEventListener(stream, (e) => add({ kind: stream, text: String(parse(e).data) }));
    source.addEventListener("exit", (e) => add({ kind: "exit", text: `[exit ${String(parse(e).exitCode)}]\n` }));
    const finish = (line: LogLine) => {
      add(line);
      setEnded(true);
      source.close();
      onEnd?.();
    };
    source.addEventListener("done", (e) => finish({ kind: "done", text: `✓ template ${String((parse(e).template as { name?: string })?.name ?? "")} ready\n` }));
    source.addEventListener("failed", (e) => finish({ kind: "failed", text: `✗ ${String(parse(e).message)}\n` }));
    source.onerror = () => {
      // The server closes the stream after the last event of an ended build.
      if (source.readyState === EventSource.CLOSED || source.readyState === EventSource.CONNECTING) {
        source.close();
        setEnded(true);
      }
    };
    return () => source.close();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [buildId]);
  return (
    <pre className="log" aria-live="polite" data-testid="build-log">
      {lines.map((line, i) => (
        <span key={i} className={line.kind === "step" ? "step" : line.kind === "stderr" ? "stderr" : line.kind === "failed" ? "fail" : undefined}>
          {line.text}
        </span>
      ))}
      {!ended && <span className="dim">…</span>}
    </pre>
  );
}

function SnapshotDialog({ onClose, onDone }: { onClose: () => void; onDone: () => void }) {
  const sandboxes = useLoad((signal) => api<{ sandboxes: Sandbox[] }>("GET", "/v1/sandboxes", undefined, { signal, query: { state: "running,paused" } }), []);
  const [from, setFrom] = useState("");
  const [name, setName] = useState("");
  const [keepRunning, setKeepRunning] = useState(true);
  const chosen = from || sandboxes.data?.sandboxes[0]?.id || "";
  const snapshot = async () => {
    await api("POST", "/v1/templates", { fromSandbox: chosen, name, keepRunning });
    onDone();
    onClose();
  };
  return (
    <FormDialog title="Snapshot a sandbox" submit="Snapshot" busyLabel="Saving…" canSubmit={!!chosen} onClose={onClose} onSubmit={snapshot}>
      <Async state={sandboxes} what="Loading sandboxes">
        {(data) =>
          data.sandboxes.length === 0 ? (
            <div className="empty">No running or paused sandbox to snapshot.</div>
          ) : (
            <label className="field">
              Sandbox
              <select name="fromSandbox" value={chosen} onChange={(e) => setFrom(e.target.value)}>
                {data.sandboxes.map((s) => (
                  <option key={s.id} value={s.id}>
                    {s.id} ({s.template}, {s.state})
                  </option>
                ))}
              </select>
            </label>
          )
        }
      </Async>
      <SnapshotFields name={name} setName={setName} keepRunning={keepRunning} setKeepRunning={setKeepRunning} placeholder="my-snapshot" />
    </FormDialog>
  );
}

function BuildDialog({ templates, onClose, onStarted }: { templates: Template[]; onClose: () => void; onStarted: (build: Build) => void }) {
  const [base, setBase] = useState("");
  const [name, setName] = useState("");
  const [steps, setSteps] = useState("");
  const chosen = base || templates.find((t) => t.name === "base")?.name || templates[0]?.name || "";
  const start = async () => {
    const list = steps
      .split("\n")
      .map((s) => s.trim())
      .filter(Boolean);
    const build = await api<Build>("POST", "/v1/templates", { baseTemplate: chosen, name, steps: list });
    onStarted(build);
    onClose();
  };
  return (
    <FormDialog title="Build a template" submit="Build" busyLabel="Starting…" canSubmit={!!chosen} onClose={onClose} onSubmit={start}>
      <label className="field">
        From template
        <select name="baseTemplate" value={chosen} onChange={(e) => setBase(e.target.value)}>
          {templates.map((t) => (
            <option key={t.id} value={t.name}>
              {t.name}
            </option>
          ))}
        </select>
      </label>
      <label className="field">
        New template name
        <TemplateNameInput value={name} onChange={setName} placeholder="my-template" />
      </label>
      <label className="field">
        Steps (one shell command per line, run as root)
        <textarea name="steps" rows={6} value={steps} onChange={(e) => setSteps(e.target.value)} placeholder={"apt-get update\napt-get install -y jq"} required />
      </label>
    </FormDialog>
  );
}

/** A template's name, as the API takes it. */
export function TemplateNameInput({ value, onChange, placeholder, autoFocus }: { value: string; onChange: (name: string) => void; placeholder?: string; autoFocus?: boolean }) {
  return <input name="name" className="mono" value={value} onChange={(e) => onChange(e.target.value)} pattern="[a-z0-9][a-z0-9._\-]{0,62}" placeholder={placeholder} required autoFocus={autoFocus} />;
}

/** A snapshot's own fields: the new template's name, and whether the sandbox keeps running. */
export function SnapshotFields({
  name,
  setName,
  keepRunning,
  setKeepRunning,
  placeholder,
  autoFocus,
}: {
  name: string;
  setName: (name: string) => void;
  keepRunning: boolean;
  setKeepRunning: (keep: boolean) => void;
  placeholder?: string;
  autoFocus?: boolean;
}) {
  return (
    <>
      <label className="field">
        Template name
        <TemplateNameInput value={name} onChange={setName} placeholder={placeholder} autoFocus={autoFocus} />
      </label>
      <label className="check">
        <input type="checkbox" checked={keepRunning} onChange={(e) => setKeepRunning(e.target.checked)} /> Keep the sandbox running afterwards
      </label>
    </>
  );
}
