// The team's usage per UTC day: sandbox hours charted, and the figures in a table.
import { useMemo, useState } from "react";
import { api, type UsageDay } from "../api.ts";
import { Chart } from "../Chart.tsx";
import { Async, PageHead, Segmented, Table, useLoad } from "../ui.tsx";

const DAYS = [7, 30, 90] as const;
const isoDay = (date: Date) => date.toISOString().slice(0, 10);
/** An axis label for hours: minutes below one hour. */
export const hoursLabel = (h: number) => (h === 0 ? "0" : h < 1 ? `${Math.round(h * 60)}m` : `${h.toFixed(h < 10 ? 1 : 0)}h`);
const hours = (seconds: number) => (seconds / 3600).toFixed(seconds < 36 ? 2 : 1);

export function Usage() {
  const [days, setDays] = useState<(typeof DAYS)[number]>(30);
  const usage = useLoad(
    (signal) => {
      const to = new Date();
      const from = new Date(to.getTime() - (days - 1) * 86_400_000);
      return api<{ days: UsageDay[]; from: string; to: string }>("GET", "/v1/usage", undefined, { signal, query: { from: isoDay(from), to: isoDay(to) } });
    },
    [days],
    60_000,
  );
  const series = useMemo(() => {
    // Every day of the range, zero where nothing ran (the API leaves those days out).
    const byDay = new Map((usage.data?.days ?? []).map((d) => [d.day, d]));
    const times: number[] = [];
    const values: number[] = [];
    if (usage.data) {
      for (let t = Date.parse(usage.data.from); t <= Date.parse(usage.data.to); t += 86_400_000) {
        times.push(t / 1000);
        values.push((byDay.get(isoDay(new Date(t)))?.sandboxSeconds ?? 0) / 3600);
      }
    }
    return { times, values };
  }, [usage.data]);
  const totals = (usage.data?.days ?? []).reduce(
    (sum, d) => ({ sandbox: sum.sandbox + d.sandboxSeconds, vcpu: sum.vcpu + d.vcpuSeconds, mem: sum.mem + d.memoryGibSeconds }),
    { sandbox: 0, vcpu: 0, mem: 0 },
  );
  return (
    <>
      <PageHead title="Usage">
        <span className="spacer" />
        <Segmented label="Days" options={DAYS.map((d) => ({ value: d, label: `${d}d` }))} value={days} onChange={setDays} />
      </PageHead>
      <Async state={usage} what="Loading usage">
        {(data) => (
          <>
            <div className="section">
              <div className="row dim" style={{ marginBottom: 8, gap: 18 }}>
                <span>
                  Sandbox hours <strong className="mono">{hours(totals.sandbox)}</strong>
                </span>
                <span>
                  vCPU hours <strong className="mono">{hours(totals.vcpu)}</strong>
                </span>
                <span>
                  GiB·hours <strong className="mono">{hours(totals.mem)}</strong>
                </span>
              </div>
              <Chart label="Sandbox hours per day" times={series.times} values={series.values} format={hoursLabel} height={200} bars />
            </div>
            <div className="section">
              {data.days.length === 0 ? (
                <div className="empty">No usage in this range.</div>
              ) : (
                <Table
                  label="Usage per day"
                  head={
                    <>
                      <th>Day (UTC)</th>
                      <th className="num">Sandbox h</th>
                      <th className="num">vCPU h</th>
                      <th className="num">Memory GiB·h</th>
                      <th className="num hide-sm">Disk GiB·h</th>
                    </>
                  }
                >
                  {[...data.days].reverse().map((d) => (
                    <tr key={d.day}>
                      <td className="mono">{d.day}</td>
                      <td className="num mono">{hours(d.sandboxSeconds)}</td>
                      <td className="num mono">{hours(d.vcpuSeconds)}</td>
                      <td className="num mono">{hours(d.memoryGibSeconds)}</td>
                      <td className="num mono hide-sm">{hours(d.diskGibSeconds)}</td>
                    </tr>
                  ))}
                </Table>
              )}
            </div>
          </>
        )}
      </Async>
    </>
  );
}
