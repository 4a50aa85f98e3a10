// Hosts (admins): capacity, health, running sandboxes, drain and undrain.
import { api, type Host } from "../api.ts";
import { ago, AsyncTable, mb, PageHead, StateBadge, useConfirm, useLoad, useNow } from "../ui.tsx";

/** Used of total (MiB), in figures and as a bar; "—" before the host's first report. */
function Capacity({ label, totalMb, availableMb }: { label: string; totalMb: number; availableMb: number | undefined }) {
  const used = availableMb === undefined ? undefined : totalMb - availableMb;
  const share = used !== undefined && totalMb > 0 ? Math.min(1, Math.max(0, used / totalMb)) : 0;
  return (
    <>
      <div className="mono dim nowrap">
        {used === undefined ? "—" : mb(used)} / {mb(totalMb)}
      </div>
      {used !== undefined && (
        <div title={`${label}: ${Math.round(share * 100)}% used`}>
          <div className="bar" role="meter" aria-label={label} aria-valuemin={0} aria-valuemax={100} aria-valuenow={Math.round(share * 100)}>
            <span style={{ width: `${share * 100}%` }} />
          </div>
        </div>
      )}
    </>
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
      <PageHead title="Hosts" />
      <div className="section">
        <AsyncTable
          state={hosts}
          what="Loading hosts"
          label="Hosts"
          empty="No hosts registered."
          head={
            <>
              <th>Host</th>
              <th>Status</th>
              <th className="num">CPU</th>
              <th>Memory</th>
              <th className="hide-sm">Disk</th>
              <th className="num">Slots</th>
              <th className="num">Sandboxes</th>
              <th className="hide-sm">Heartbeat</th>
              <th />
            </>
          }
          row={(h: Host) => (
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
                <Capacity label="Memory" totalMb={h.capacity.memoryMb} availableMb={h.live?.memoryAvailableMb} />
              </td>
              <td className="hide-sm">
                <Capacity label="Disk" totalMb={h.capacity.diskMb} availableMb={h.live?.diskAvailableMb} />
              </td>
              <td className="num mono">
                {h.live?.slotsUsed ?? "—"}/{h.capacity.slots}
              </td>
              <td className="num mono">{h.live ? `${h.live.sandboxes.running} running · ${h.live.sandboxes.paused} paused` : "—"}</td>
              <td className="dim nowrap hide-sm">{ago(h.lastHeartbeatAt, now)}</td>
              <td className="actions">
                {h.status !== "pending" && (
                  <button className="small" onClick={() => toggle(h)}>
                    {h.status === "draining" ? "Undrain" : "Drain"}
                  </button>
                )}
              </td>
            </tr>
          )}
        />
      </div>
      {confirm.element}
    </>
  );
}
