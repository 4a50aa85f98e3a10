// A time-series chart on uPlot (small, canvas): one series, sized to its container.
import { useEffect, useRef } from "react";
import uPlot from "uplot";

export interface ChartProps {
  label: string;
  /** Unix seconds. */
  times: number[];
  values: number[];
  format: (value: number) => string;
  height?: number;
  /** Bars rather than a line (per-day usage). */
  bars?: boolean;
  yMax?: number;
}

const AXIS = { stroke: "#5d7065", grid: { stroke: "#1b2620", width: 1 }, ticks: { stroke: "#24332b", width: 1 }, font: "11px system-ui, sans-serif" };

export function Chart({ label, times, values, format, height = 140, bars, yMax }: ChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const last = values.length > 0 ? values[values.length - 1]! : undefined;

  useEffect(() => {
    const element = box.current;
    if (!element) return;
    const options: uPlot.Options = {
      width: Math.max(element.clientWidth, 200),
      height,
      legend: { show: false },
      cursor: { points: { size: 5 } },
      scales: { x: { time: !bars }, y: { range: (_u, min, max) => [Math.min(0, min), Math.max(yMax ?? 0, max * 1.1 || 1)] } },
      axes: [
        { ...AXIS, ...(bars ? { values: (_u: uPlot, ticks: number[]) => ticks.map((t) => new Date(t * 1000).toISOString().slice(5, 10)) } : {}) },
        { ...AXIS, size: 70, values: (_u: uPlot, ticks: number[]) => ticks.map(format) },
      ],
      series: [
        {},
        {
          label,
          stroke: "#8fb39a",
          width: 1.5,
          fill: "rgba(143,179,154,0.12)",
          points: { show: false },
          ...(bars ? { paths: uPlot.paths.bars!({ size: [0.6, 40] }), fill: "rgba(143,179,154,0.5)" } : {}),
        },
      ],
    };
    plot.current = new uPlot(options, [[], []], element);
    const observer = typeof ResizeObserver === "undefined" ? undefined : new ResizeObserver(() => plot.current?.setSize({ width: Math.max(element.clientWidth, 200), height }));
    observer?.observe(element);
    return () => {
      observer?.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
    // A new chart only when its kind changes; data goes through setData below.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [label, height, bars]);

  useEffect(() => {
    plot.current?.setData([times, values]);
  }, [times, values]);

  return (
    <figure className="chart" style={{ margin: 0 }} data-chart={label} data-points={values.length}>
      <figcaption className="chart-title">
        <span>{label}</span>
        <span className="value">{last === undefined ? "—" : format(last)}</span>
      </figcaption>
      <div ref={box} role="img" aria-label={`${label} chart, ${values.length} points${last === undefined ? "" : `, latest ${format(last)}`}`} />
    </figure>
  );
}
