// Shared pieces: data loading with polling, loading/error states, tables, dialogs and forms, formatting.
import { useCallback, useEffect, useRef, useState, type FormEvent, type ReactNode } from "react";
import { errorMessage } from "./api.ts";

export interface Loaded<T> {
  data: T | undefined;
  error: string | undefined;
  loading: boolean;
  reload: () => void;
}

/**
 * Runs `load` now, again whenever `deps` change, every `pollMs` while the page is visible (when
 * given), and on reload(). The last good data stays shown while a refresh runs or fails;
 * `initial` (data already at hand) shows before the first answer.
 */
export function useLoad<T>(load: (signal: AbortSignal) => Promise<T>, deps: unknown[], pollMs?: number, initial?: T): Loaded<T> {
  const [data, setData] = useState<T | undefined>(initial);
  const [error, setError] = useState<string>();
  const [loading, setLoading] = useState(true);
  const [tick, setTick] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;
  const reload = useCallback(() => setTick((n) => n + 1), []);

  useEffect(() => {
    const controller = new AbortController();
    setLoading(true);
    loadRef
      .current(controller.signal)
      .then((value) => {
        if (controller.signal.aborted) return;
        setData(value);
        setError(undefined);
      })
      .catch((err: unknown) => {
        if (!controller.signal.aborted) setError(errorMessage(err));
      })
      .finally(() => {
        if (!controller.signal.aborted) setLoading(false);
      });
    return () => controller.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, tick]);

  useEffect(() => {
    if (!pollMs) return;
    const timer = setInterval(() => {
      if (document.visibilityState !== "hidden") setTick((n) => n + 1);
    }, pollMs);
    return () => clearInterval(timer);
  }, [pollMs]);

  return { data, error, loading, reload };
}

export function Loading({ what = "Loading" }: { what?: string }) {
  return (
    <div className="loading" role="status">
      <span className="spinner" aria-hidden="true" />
      {what}…
    </div>
  );
}

export function ErrorBox({ error, retry }: { error: string; retry?: () => void }) {
  return (
    <div className="error-box" role="alert">
      <span>{error}</span>
      {retry && (
        <button className="small" onClick={retry}>
          Retry
        </button>
      )}
    </div>
  );
}

/** Loading the first time, an error with retry, or the content (the last good data stays during refreshes). */
export function Async<T>({ state, children, what }: { state: Loaded<T>; children: (data: T) => ReactNode; what?: string }) {
  if (state.data === undefined) {
    if (state.error) return <ErrorBox error={state.error} retry={state.reload} />;
    return <Loading what={what} />;
  }
  return (
    <>
      {state.error && <ErrorBox error={state.error} retry={state.reload} />}
      {children(state.data)}
    </>
  );
}

/** A modal on the native <dialog> (focus stays inside, Esc closes). */
export function Dialog({ title, open, onClose, children }: { title: string; open: boolean; onClose: () => void; children: ReactNode }) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const dialog = ref.current;
    if (!dialog) return;
    if (open && !dialog.open) {
      if (typeof dialog.showModal === "function") dialog.showModal();
      else dialog.setAttribute("open", "");
    } else if (!open && dialog.open) {
      if (typeof dialog.close === "function") dialog.close();
      else dialog.removeAttribute("open");
    }
  }, [open]);
  return (
    <dialog
      ref={ref}
      aria-label={title}
      onCancel={(event) => {
        event.preventDefault();
        onClose();
      }}
    >
      {open && (
        <>
          <h1>{title}</h1>
          {children}
        </>
      )}
    </dialog>
  );
}

export interface ConfirmRequest {
  title: string;
  body: ReactNode;
  action: string;
  danger?: boolean;
  run: () => Promise<unknown>;
}

/** A confirmation dialog: `ask(request)` opens it; the action runs on confirm, errors show inside. */
export function useConfirm(): { ask: (request: ConfirmRequest) => void; element: ReactNode } {
  const [request, setRequest] = useState<ConfirmRequest>();
  const { busy, error, setError, run } = useAction();
  const close = () => {
    setRequest(undefined);
    setError(undefined);
  };
  const confirm = () =>
    run(async () => {
      if (!request) return;
      await request.run();
      close();
    });
  const element = (
    <Dialog title={request?.title ?? ""} open={request !== undefined} onClose={close}>
      <div>{request?.body}</div>
      {error && <ErrorBox error={error} />}
      <div className="buttons">
        <button onClick={close} disabled={busy}>
          Cancel
        </button>
        <button className={request?.danger ? "danger" : "primary"} onClick={() => void confirm()} disabled={busy} autoFocus>
          {busy ? "Working…" : request?.action}
        </button>
      </div>
    </Dialog>
  );
  return { ask: setRequest, element };
}

/** An action's busy flag and error: `run(action)` sets busy, clears the error, and catches. */
export function useAction(): { busy: boolean; error: string | undefined; setError: (error: string | undefined) => void; run: (action: () => Promise<unknown>) => Promise<void> } {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  const run = useCallback(async (action: () => Promise<unknown>) => {
    setBusy(true);
    setError(undefined);
    try {
      await action();
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  }, []);
  return { busy, error, setError, run };
}

/**
 * A dialog around a form: its fields, the submit's error, Cancel and the submit button (disabled
 * while `onSubmit` runs). `onSubmit` closes the dialog itself when it should.
 */
export function FormDialog({
  title,
  open = true,
  onClose,
  onSubmit,
  submit,
  busyLabel = submit,
  canSubmit = true,
  children,
}: {
  title: string;
  open?: boolean;
  onClose: () => void;
  onSubmit: () => Promise<unknown>;
  /** The submit button's label, and while busy `busyLabel` */
  submit: string;
  busyLabel?: string;
  canSubmit?: boolean;
  children: ReactNode;
}) {
  const action = useAction();
  return (
    <Dialog title={title} open={open} onClose={onClose}>
      <form
        className="stack"
        onSubmit={(event: FormEvent) => {
          event.preventDefault();
          void action.run(onSubmit);
        }}
      >
        {children}
        {action.error && <ErrorBox error={action.error} />}
        <div className="buttons">
          <button type="button" onClick={onClose} disabled={action.busy}>
            Cancel
          </button>
          <button className="primary" type="submit" disabled={action.busy || !canSubmit}>
            {action.busy ? busyLabel : submit}
          </button>
        </div>
      </form>
    </Dialog>
  );
}

/** A page's title row: the title, then `children` (counts, then buttons after a spacer). */
export function PageHead({ title, children }: { title: ReactNode; children?: ReactNode }) {
  return (
    <div className="page-head">
      {typeof title === "string" ? <h1>{title}</h1> : title}
      {children}
    </div>
  );
}

/** A segmented control: one of `options`, the chosen one pressed. */
export function Segmented<T extends string | number>({ label, options, value, onChange }: { label: string; options: ReadonlyArray<{ value: T; label: string }>; value: T; onChange: (value: T) => void }) {
  return (
    <div className="seg" role="group" aria-label={label}>
      {options.map((option) => (
        <button key={String(option.value)} type="button" aria-pressed={value === option.value} onClick={() => onChange(option.value)}>
          {option.label}
        </button>
      ))}
    </div>
  );
}

/** A table that scrolls sideways on narrow screens: `head` is the header row's cells. */
export function Table({ label, head, children }: { label: string; head?: ReactNode; children: ReactNode }) {
  return (
    <div className="table-wrap">
      <table aria-label={label}>
        {head && (
          <thead>
            <tr>{head}</tr>
          </thead>
        )}
        <tbody>{children}</tbody>
      </table>
    </div>
  );
}

/** A loaded list as a table: loading, an error with retry, `empty` when there are no rows, else a row per item. */
export function AsyncTable<D, T>({
  state,
  what,
  items,
  empty,
  label,
  head,
  row,
}: {
  state: Loaded<D>;
  what: string;
  /** The rows' items in the data (default: the data, a list) */
  items?: (data: D) => T[];
  /** What shows when there are no rows (default: the table, empty) */
  empty?: ReactNode;
  label: string;
  head: ReactNode;
  row: (item: T) => ReactNode;
}) {
  return (
    <Async state={state} what={what}>
      {(data) => {
        const list = items ? items(data) : (data as unknown as T[]);
        if (list.length === 0 && empty !== undefined) return <div className="empty">{empty}</div>;
        return (
          <Table label={label} head={head}>
            {list.map(row)}
          </Table>
        );
      }}
    </Async>
  );
}

export function StateBadge({ state }: { state: string }) {
  return <span className={`badge ${state}`}>{state}</span>;
}

export function bytes(n: number): string {
  if (!Number.isFinite(n)) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value >= 100 || unit === 0 ? value.toFixed(0) : value.toFixed(1)} ${units[unit]}`;
}

export function mb(n: number): string {
  return n >= 1024 ? `${(n / 1024).toFixed(n % 1024 ? 1 : 0)} GiB` : `${n} MiB`;
}

/** A duration in seconds as "3d 4h", "5h 02m", "4m 10s", "12s". */
export function duration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86_400);
  const h = Math.floor((s % 86_400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m > 0) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  return `${s}s`;
}

export function ago(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return "—";
  const seconds = (now - Date.parse(iso)) / 1000;
  return seconds < 5 ? "just now" : `${duration(seconds)} ago`;
}

export function dateTime(iso: string | null | undefined): string {
  if (!iso) return "—";
  const date = new Date(iso);
  return `${date.toISOString().slice(0, 10)} ${date.toTimeString().slice(0, 8)}`;
}

/** Re-renders every `ms` (ages and countdowns). */
export function useNow(ms = 1000): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(timer);
  }, [ms]);
  return now;
}

/** Copies text, with a fallback for pages served over plain http (no Clipboard API). */
export async function copyText(text: string): Promise<void> {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.append(area);
  area.select();
  document.execCommand("copy");
  area.remove();
}

export function Logo({ size = 18 }: { size?: number }) {
  return (
    <svg width={size} height={size} viewBox="0 0 16 16" aria-hidden="true">
      <rect width="16" height="16" rx="3" fill="#1e2f25" />
      <path d="M3 4l2.5 8L8 6l2.5 6L13 4" stroke="#8fb39a" strokeWidth="1.6" fill="none" strokeLinejoin="round" />
    </svg>
  );
}
