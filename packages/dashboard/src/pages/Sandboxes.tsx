// The team's sandboxes, refreshed live: filters, a create dialog, pause/resume/kill with confirmation.
import { useMemo, useState } from "react";
import { api, justCreated, type Sandbox, type Template } from "../api.ts";
import { Link, navigate } from "../router.tsx";
import { ago, AsyncTable, duration, ErrorBox, FormDialog, mb, PageHead, Segmented, StateBadge, useConfirm, useLoad, useNow } from "../ui.tsx";

const STATE_FILTERS = [
  { value: "", label: "Active" },
  { value: "running", label: "Running" },
  { value: "paused", label: "Paused" },
  { value: "stopped,error", label: "Ended" },
];

/** What the list shows as "time left": until the recorded end, else the idle timeout that applies. */
export function timeLeft(sandbox: Sandbox, now: number): string {
  if (sandbox.state !== "running") return "—";
  if (sandbox.endAt) return duration((Date.parse(sandbox.endAt) - now) / 1000);
  if (sandbox.timeoutSec === 0) return "never";
  return `${duration(sandbox.timeoutSec)} idle`;
}

export function sandboxActions(sandbox: Sandbox, ask: ReturnType<typeof useConfirm>["ask"], done: () => void) {
  const act = (verb: "pause" | "resume") => () =>
    ask({
      title: `${verb === "pause" ? "Pause" : "Resume"} sandbox`,
      body: (
        <p>
          {verb === "pause" ? "Pause" : "Resume"} <code>{sandbox.id}</code>?{verb === "pause" ? " Its memory and disk are saved; resume brings it back." : ""}
        </p>
      ),
      action: verb === "pause" ? "Pause" : "Resume",
      run: async () => {
        await api("POST", `/v1/sandboxes/${sandbox.id}/${verb}`);
        done();
      },
    });
  const kill = () =>
    ask({
      title: "Kill sandbox",
      body: (
        <p>
          Kill <code>{sandbox.id}</code>? Everything in it is lost.
        </p>
      ),
      action: "Kill",
      danger: true,
      run: async () => {
        await api("DELETE", `/v1/sandboxes/${sandbox.id}`);
        done();
      },
    });
  const ended = sandbox.state === "stopped" || sandbox.state === "error";
  return (
    <>
      {sandbox.state === "running" && (
        <button className="small" onClick={act("pause")} aria-label={`Pause ${sandbox.id}`}>
          Pause
        </button>
      )}
      {sandbox.state === "paused" && (
        <button className="small" onClick={act("resume")} aria-label={`Resume ${sandbox.id}`}>
          Resume
        </button>
      )}
      {!ended && (
        <button className="small danger" onClick={kill} aria-label={`Kill ${sandbox.id}`}>
          Kill
        </button>
      )}
    </>
  );
}

/** "3 running · 1 paused": the list's states, counted. */
export function summary(sandboxes: Sandbox[]): string {
  const counts = new Map<string, number>();
  for (const s of sandboxes) counts.set(s.state, (counts.get(s.state) ?? 0) + 1);
  return counts.size === 0 ? "none" : [...counts].map(([state, n]) => `${n} ${state}`).join(" · ");
}

export function SandboxList() {
  const [stateFilter, setStateFilter] = useState("");
  const [search, setSearch] = useState("");
  const [creating, setCreating] = useState(false);
  const confirm = useConfirm();
  const now = useNow(1000);
  const list = useLoad(
    (signal) => api<{ sandboxes: Sandbox[] }>("GET", "/v1/sandboxes", undefined, { signal, query: { state: stateFilter || undefined, limit: 100 } }),
    [stateFilter],
    3000,
  );
  const shown = useMemo(() => {
    const needle = search.trim().toLowerCase();
    const all = list.data?.sandboxes ?? [];
    if (!needle) return all;
    return all.filter((s) => s.id.includes(needle) || s.template.toLowerCase().includes(needle) || Object.entries(s.metadata).some(([k, v]) => `${k}=${v}`.toLowerCase().includes(needle)));
  }, [list.data, search]);

  return (
    <>
      <PageHead title="Sandboxes">
        <span className="dim mono">{list.data ? summary(list.data.sandboxes) : ""}</span>
        <span className="spacer" />
        <button className="primary" onClick={() => setCreating(true)}>
          + New sandbox
        </button>
      </PageHead>
      <div className="row" style={{ marginBottom: 10 }}>
        <Segmented label="State filter" options={STATE_FILTERS} value={stateFilter} onChange={setStateFilter} />
        <input type="search" placeholder="Filter by id, template, metadata" aria-label="Filter sandboxes" value={search} onChange={(e) => setSearch(e.target.value)} style={{ flex: "1 1 200px", maxWidth: 320 }} />
      </div>
      <div className="section">
        <AsyncTable
          state={list}
          what="Loading sandboxes"
          items={() => shown}
          label="Sandboxes"
          empty="No sandboxes here. Create one with “New sandbox”."
          head={
            <>
              <th>ID</th>
              <th>State</th>
              <th>Template</th>
              <th className="num hide-sm">vCPU</th>
              <th className="num hide-sm">Memory</th>
              <th className="num hide-sm">Disk</th>
              <th className="hide-sm">Age</th>
              <th className="hide-sm">Time left</th>
              <th className="hide-sm">Metadata</th>
              <th />
            </>
          }
          row={(s) => (
            <tr key={s.id} data-sandbox={s.id}>
              <td className="mono">
                <Link to={`/ui/sandboxes/${s.id}`}>{s.id}</Link>
              </td>
              <td>
                <StateBadge state={s.state} />
              </td>
              <td className="mono">{s.template}</td>
              <td className="num hide-sm">{s.vcpus}</td>
              <td className="num hide-sm">{mb(s.memoryMb)}</td>
              <td className="num hide-sm">{mb(s.diskSizeMb)}</td>
              <td className="hide-sm dim nowrap">{ago(s.createdAt, now)}</td>
              <td className="hide-sm dim nowrap">{timeLeft(s, now)}</td>
              <td className="hide-sm dim mono wrap">
                {Object.entries(s.metadata)
                  .map(([k, v]) => `${k}=${v}`)
                  .join(" ")}
              </td>
              <td className="actions">{sandboxActions(s, confirm.ask, list.reload)}</td>
            </tr>
          )}
        />
      </div>
      <CreateSandboxDialog open={creating} onClose={() => setCreating(false)} />
      {confirm.element}
    </>
  );
}

export function CreateSandboxDialog({ open, onClose }: { open: boolean; onClose: () => void }) {
  const templates = useLoad((signal) => (open ? api<Template[]>("GET", "/v1/templates", undefined, { signal }) : Promise.resolve([])), [open]);
  const [template, setTemplate] = useState("");
  const [vcpus, setVcpus] = useState(1);
  const [memoryMb, setMemoryMb] = useState(512);
  const [timeoutSec, setTimeoutSec] = useState(300);
  const chosen = template || templates.data?.find((t) => t.name === "base")?.name || templates.data?.[0]?.name || "";

  const create = async () => {
    const created = await api<Sandbox>("POST", "/v1/sandboxes", { template: chosen, vcpus, memoryMb, timeoutSec });
    justCreated.set(created.id, created);
    onClose();
    navigate(`/ui/sandboxes/${created.id}`);
  };

  return (
    <FormDialog title="New sandbox" open={open} submit="Create" busyLabel="Creating…" canSubmit={!!chosen} onClose={onClose} onSubmit={create}>
      <label className="field">
        Template
        <select name="template" value={chosen} onChange={(e) => setTemplate(e.target.value)} required>
          {templates.loading && !templates.data?.length && <option value="">Loading…</option>}
          {templates.data?.map((t) => (
            <option key={t.id} value={t.name}>
              {t.name}
              {t.platform ? "" : ` (${t.kind})`}
            </option>
          ))}
        </select>
      </label>
      {templates.error && <ErrorBox error={templates.error} retry={templates.reload} />}
      <div className="grid-3">
        <label className="field">
          vCPUs
          <input name="vcpus" type="number" min={1} max={64} value={vcpus} onChange={(e) => setVcpus(Number(e.target.value))} />
        </label>
        <label className="field">
          Memory (MiB)
          <input name="memoryMb" type="number" min={64} step={64} value={memoryMb} onChange={(e) => setMemoryMb(Number(e.target.value))} />
        </label>
        <label className="field">
          Idle timeout (s)
          <input name="timeoutSec" type="number" min={0} value={timeoutSec} onChange={(e) => setTimeoutSec(Number(e.target.value))} title="0: never pause" />
        </label>
      </div>
    </FormDialog>
  );
}
