// Hosts (admins): capacity, health, running sandboxes, drain and undrain.
import { api, type Host } from "../api.ts";
import { ago, Async, mb, StateBadge, useConfirm, useLoad, useNow } from "../ui.tsx";

function Meter({ used, total, label }: { used: number; total: number; label: string }) {
  const share = total > 0 ? Math.min(1, Math.max(0, used / total)) : 0;
  return (
    <div title={`${label}: ${Math.round(share * 100)}% used`}>
      <div className="bar" role="meter" aria-label={label} aria-valuemin={0} aria-valuemax={100} aria-valuenow={Math.round(share * 100)}>
        <span style={{ width: `${share * 100}%` }} />
      </div>
    </div>
  );
}

export function Hosts() {
  const confirm = useConfirm();
  const now = useNow(2000);
  const hosts = useLoad((signal) => api<Host[]>("GET", "/v1/hosts", undefined, { signal }), [], 5000);
  const toggle = (host: Host) => {
    const draining = host.status === "draining";
    confirm.ask({
      title: draining ? "Undrain host" : "Drain host",
      body: <p>{draining ? "Place new sandboxes on this host again?" : "Place no new sandboxes on this host? Its sandboxes keep running."}</p>,
      action: draining ? "Undrain" : "Drain",
      danger: !draining,
      run: async () => {
        await api("POST", `/v1/hosts/${host.id}/${draining ? "undrain" : "drain"}`);
        hosts.reload();
      },
    });
  };
  return (
    <>
      <div className="page-head">
        <h1>Hosts</h1>
      </div>
      <div className="section">
        <Async state={hosts} what="Loading hosts">
          {(list) =>
            list.length === 0 ? (
              <div className="empty">No hosts registered.</div>
            ) : (
              <div className="table-wrap">
                <table aria-label="Hosts">
                  <thead>
                    <tr>
                      <th>Host</th>
                      <th>Status</th>
                      <th className="num">CPU</th>
                      <th>Memory</th>
                      <th className="hide-sm">Disk</th>
                      <th className="num">Slots</th>
                      <th className="num">Sandboxes</th>
                      <th className="hide-sm">Heartbeat</th>
                      <th />
                    </tr>
                  </thead>
                  <tbody>
                    {list.map((h) => (
                      <tr key={h.id}>
                        <td className="mono">
                          {h.address ?? h.id.slice(0, 8)}
                          <div className="faint">{h.live?.agentVersion ?? ""}</div>
                        </td>
                        <td>
                          <StateBadge state={h.status} />
                          {h.missedHeartbeats > 0 && <div className="faint">{h.missedHeartbeats} missed</div>}
                        </td>
                        <td className="num mono">{h.capacity.cpu}</td>
                        <td>
                          <div className="mono dim">
                            {h.live ? mb(h.capacity.memoryMb - h.live.memoryAvailableMb) : "—"} / {mb(h.capacity.memoryMb)}
                          </div>
                          {h.live && <Meter used={h.capacity.memoryMb - h.live.memoryAvailableMb} total={h.capacity.memoryMb} label="Memory" />}
                        </td>
                        <td className="hide-sm">
                          <div className="mono dim">
                            {h.live ? mb(h.capacity.diskMb - h.live.diskAvailableMb) : "—"} / {mb(h.capacity.diskMb)}
                          </div>
                          {h.live && <Meter used={h.capacity.diskMb - h.live.diskAvailableMb} total={h.capacity.diskMb} label="Disk" />}
                        </td>
                        <td className="num mono">
                          {h.live?.slotsUsed ?? "—"}/{h.capacity.slots}
                        </td>
                        <td className="num mono">{h.live ? `${h.live.sandboxes.running} running · ${h.live.sandboxes.paused} paused` : "—"}</td>
                        <td className="dim hide-sm">{ago(h.lastHeartbeatAt, now)}</td>
                        <td className="actions">
                          {h.status !== "pending" && (
                            <button className="small" onClick={() => toggle(h)}>
                              {h.status === "draining" ? "Undrain" : "Drain"}
                            </button>
                          )}
                        </td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </div>
            )
          }
        </Async>
      </div>
      {confirm.element}
    </>
  );
}
