// A shell in the sandbox: xterm.js over the control plane's terminal WebSocket
// (/v1/sandboxes/:id/terminal). The PTY's pid is kept in sessionStorage per sandbox, so a page
// reload re-attaches to the same shell instead of starting another.
import { useEffect, useRef, useState } from "react";
import { Terminal as XTerm } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";

const pidKey = (sandboxId: string) => `wrenn.terminal.pid.${sandboxId}`;

export function terminalUrl(sandboxId: string, cols: number, rows: number, pid?: string | null): string {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = new URLSearchParams({ cols: String(cols), rows: String(rows) });
  if (pid) query.set("pid", pid);
  return `${scheme}//${location.host}/v1/sandboxes/${encodeURIComponent(sandboxId)}/terminal?${query}`;
}

type Status = "connecting" | "connected" | "closed" | "error";

export function Terminal({ sandboxId }: { sandboxId: string }) {
  const box = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState<Status>("connecting");
  const [message, setMessage] = useState<string>();
  const [generation, setGeneration] = useState(0);

  useEffect(() => {
    const element = box.current;
    if (!element) return;
    const term = new XTerm({
      fontFamily: 'ui-monospace, "JetBrains Mono", Menlo, Consolas, "DejaVu Sans Mono", monospace',
      fontSize: 13,
      cursorBlink: true,
      scrollback: 5000,
      theme: { background: "#070a08", foreground: "#d6e2da", cursor: "#a9cbb3", selectionBackground: "#2f4237", green: "#8fb39a", brightGreen: "#a9cbb3" },
    });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(element);
    try {
      fit.fit();
    } catch {
      // not laid out yet
    }
    const encoder = new TextEncoder();
    let ws: WebSocket | undefined;
    let disposed = false;

    const connect = (pid: string | null) => {
      setStatus("connecting");
      setMessage(undefined);
      const socket = new WebSocket(terminalUrl(sandboxId, term.cols, term.rows, pid));
      socket.binaryType = "arraybuffer";
      ws = socket;
      socket.onmessage = (event) => {
        if (event.data instanceof ArrayBuffer) {
          term.write(new Uint8Array(event.data));
          return;
        }
        const frame = JSON.parse(String(event.data)) as { type: string; pid?: number; exitCode?: number; message?: string };
        if (frame.type === "started") {
          sessionStorage.setItem(pidKey(sandboxId), String(frame.pid));
          setStatus("connected");
          term.focus();
        } else if (frame.type === "exit") {
          sessionStorage.removeItem(pidKey(sandboxId));
          term.write(`\r\n\x1b[2m[shell exited with code ${frame.exitCode}]\x1b[0m\r\n`);
        } else if (frame.type === "error") {
          setMessage(frame.message);
        }
      };
      socket.onclose = (event) => {
        if (disposed || ws !== socket) return;
        if (event.code === 4404 && pid) {
          // The shell of the stored pid is gone: start a new one.
          sessionStorage.removeItem(pidKey(sandboxId));
          connect(null);
          return;
        }
        if (event.code === 1000) setStatus("closed");
        else {
          setStatus("error");
          setMessage((current) => current ?? (event.reason || (event.code === 4409 ? "The sandbox is not running" : `Connection closed (${event.code})`)));
        }
      };
    };
    connect(sessionStorage.getItem(pidKey(sandboxId)));

    const input = term.onData((data) => {
      if (ws?.readyState === WebSocket.OPEN) ws.send(encoder.encode(data));
    });
    const resize = term.onResize(({ cols, rows }) => {
      if (ws?.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "resize", cols, rows }));
    });
    const observer =
      typeof ResizeObserver === "undefined"
        ? undefined
        : new ResizeObserver(() => {
            try {
              fit.fit();
            } catch {
              // hidden
            }
          });
    observer?.observe(element);
    return () => {
      disposed = true;
      observer?.disconnect();
      input.dispose();
      resize.dispose();
      ws?.close(1000); // the shell keeps running: a reload re-attaches
      term.dispose();
    };
  }, [sandboxId, generation]);

  return (
    <div className="stack">
      <div className="row">
        <span className={`badge ${status === "connected" ? "running" : status === "connecting" ? "creating" : status === "error" ? "error" : "stopped"}`} data-testid="terminal-status">
          {status}
        </span>
        {message && <span className="dim">{message}</span>}
        <span style={{ flex: 1 }} />
        {(status === "closed" || status === "error") && (
          <button className="small" onClick={() => setGeneration((n) => n + 1)}>
            Reconnect
          </button>
        )}
        <button
          className="small ghost"
          onClick={() => {
            sessionStorage.removeItem(pidKey(sandboxId));
            setGeneration((n) => n + 1);
          }}
          title="Start a new shell"
        >
          New shell
        </button>
      </div>
      <div className="terminal-box" ref={box} data-testid="terminal" aria-label="Terminal" />
    </div>
  );
}
