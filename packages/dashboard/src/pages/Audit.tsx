// The team's audit log, newest first, filterable by action and resource type, paged by cursor.
import { useEffect, useState } from "react";
import { api, type AuditEntry } from "../api.ts";
import { dateTime, ErrorBox, Loading, PageHead, Table, useAction } from "../ui.tsx";

export function Audit() {
  const [action, setAction] = useState("");
  const [resourceType, setResourceType] = useState("");
  const [applied, setApplied] = useState({ action: "", resourceType: "" });
  const [entries, setEntries] = useState<AuditEntry[]>();
  const [cursor, setCursor] = useState<string | null>(null);
  const { busy: loading, error, run } = useAction();

  const load = (after: string | null) =>
    run(async () => {
      const page = await api<{ entries: AuditEntry[]; nextCursor: string | null }>("GET", "/v1/audit", undefined, {
        query: { limit: 100, action: applied.action || undefined, resourceType: applied.resourceType || undefined, cursor: after ?? undefined },
      });
      setEntries((current) => (after ? [...(current ?? []), ...page.entries] : page.entries));
      setCursor(page.nextCursor);
    });
  useEffect(() => {
    setEntries(undefined);
    void load(null);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [applied]);

  return (
    <>
      <PageHead title="Audit log" />
      <form
        className="row"
        style={{ marginBottom: 10 }}
        onSubmit={(event) => {
          event.preventDefault();
          setApplied({ action: action.trim(), resourceType: resourceType.trim() });
        }}
      >
        <input aria-label="Action" placeholder="action, e.g. sandbox.create" value={action} onChange={(e) => setAction(e.target.value)} className="mono" style={{ flex: "1 1 220px", maxWidth: 320 }} />
        <select aria-label="Resource type" value={resourceType} onChange={(e) => setResourceType(e.target.value)}>
          <option value="">any resource</option>
          {["sandbox", "template", "template_build", "api_key", "team", "user", "host", "session"].map((t) => (
            <option key={t} value={t}>
              {t}
            </option>
          ))}
        </select>
        <button type="submit">Filter</button>
      </form>
      <div className="section">
        {error && <ErrorBox error={error} retry={() => void load(null)} />}
        {entries === undefined ? (
          loading && <Loading what="Loading the audit log" />
        ) : entries.length === 0 ? (
          <div className="empty">Nothing recorded{applied.action || applied.resourceType ? " for this filter" : ""}.</div>
        ) : (
          <Table
            label="Audit log"
            head={
              <>
                <th>Time</th>
                <th>Action</th>
                <th>Resource</th>
                <th className="hide-sm">Actor</th>
                <th className="hide-sm">Source</th>
              </>
            }
          >
            {entries.map((e) => (
              <tr key={e.id}>
                <td className="mono dim">{dateTime(e.createdAt)}</td>
                <td className="mono">{e.action}</td>
                <td className="mono">
                  <span className="dim">{e.resourceType}</span> {e.resourceId ?? ""}
                </td>
                <td className="mono dim hide-sm">
                  {e.actorType}
                  {e.actorId ? ` ${e.actorId.slice(0, 8)}` : ""}
                </td>
                <td className="mono dim hide-sm">{e.sourceIp ?? ""}</td>
              </tr>
            ))}
          </Table>
        )}
        {cursor && (
          <div className="row" style={{ justifyContent: "center", marginTop: 8 }}>
            <button onClick={() => void load(cursor)} disabled={loading}>
              {loading ? "Loading…" : "Load more"}
            </button>
          </div>
        )}
      </div>
    </>
  );
}
