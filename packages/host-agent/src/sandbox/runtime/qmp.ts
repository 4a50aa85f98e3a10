// A QEMU Machine Protocol client: one connection per command (QEMU serves one QMP client per
// socket at a time, and a command every few seconds at most is all a sandbox needs). JSON
// messages, one per line: a greeting, then `qmp_capabilities`, then the command's `return` or
// `error`; asynchronous `event`s may come in between and are skipped.
import net from "node:net";

export class QmpError extends Error {
  constructor(message: string, readonly errorClass?: string) {
    super(message);
    this.name = "QmpError";
  }
}

type QmpMessage = { QMP?: unknown; return?: unknown; error?: { class: string; desc: string }; event?: string };

/** How long to wait before trying a connection QEMU's socket had no room for again. */
const BUSY_RETRY_MS = 5;

/**
 * A connection to the socket at `socketPath`. QEMU listens with a backlog of one and accepts the
 * next client only once its main loop has seen the last one hang up, so commands in quick
 * succession (a pause polls the migration) can find the backlog full: connect() fails EAGAIN,
 * and is tried again until `deadline` (performance.now()).
 */
async function connectWhenFree(socketPath: string, deadline: number): Promise<net.Socket> {
  for (;;) {
    const socket = net.connect(socketPath);
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("error", reject);
      });
      return socket;
    } catch (err) {
      socket.destroy();
      if ((err as NodeJS.ErrnoException).code !== "EAGAIN" || performance.now() + BUSY_RETRY_MS > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, BUSY_RETRY_MS));
    }
  }
}

/** Runs `command` on the QMP socket at `socketPath`; its `return` value. */
export async function qmp<T = unknown>(socketPath: string, command: string, args?: Record<string, unknown>, timeoutMs = 10_000): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  const socket = await connectWhenFree(socketPath, deadline);
  socket.setEncoding("utf8");
  const messages: QmpMessage[] = [];
  let waiting: ((message: QmpMessage | Error) => void) | undefined;
  let failure: Error | undefined;
  let buffered = "";
  const deliver = (item: QmpMessage | Error) => {
    if (item instanceof Error) failure ??= item;
    else messages.push(item);
    const wake = waiting;
    waiting = undefined;
    wake?.(item);
  };
  socket.on("data", (chunk: string) => {
    buffered += chunk;
    let newline: number;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, newline).trim();
      buffered = buffered.slice(newline + 1);
      if (!line) continue;
      try {
        deliver(JSON.parse(line) as QmpMessage);
      } catch {
        deliver(new QmpError(`unreadable QMP message: ${line.slice(0, 200)}`));
      }
    }
  });
  socket.on("error", (err) => deliver(err));
  socket.on("close", () => deliver(new QmpError(`QMP socket ${socketPath} closed`)));
  /** The next message that is not an event. */
  const next = async (): Promise<QmpMessage> => {
    for (;;) {
      const message = messages.shift();
      if (message) {
        if (message.event === undefined) return message;
        continue;
      }
      if (failure) throw failure;
      await new Promise<QmpMessage | Error>((resolve) => (waiting = resolve));
    }
  };
  const exchange = async (execute: string, argsOf?: Record<string, unknown>): Promise<unknown> => {
    socket.write(`${JSON.stringify(argsOf ? { execute, arguments: argsOf } : { execute })}\n`);
    const answer = await next();
    if (answer.error) throw new QmpError(`${execute}: ${answer.error.desc}`, answer.error.class);
    return answer.return;
  };
  const timer = setTimeout(() => deliver(new QmpError(`QMP ${command} on ${socketPath} took over ${timeoutMs} ms`)), Math.max(0, deadline - performance.now()));
  try {
    const greeting = await next();
    if (greeting.QMP === undefined) throw new QmpError(`no QMP greeting on ${socketPath}`);
    await exchange("qmp_capabilities");
    return (await exchange(command, args)) as T;
  } finally {
    clearTimeout(timer);
    socket.destroy();
  }
}
