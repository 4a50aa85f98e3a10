// One running build's log: kept in memory for live readers (they see each event as it happens) and
// written to the database in batches, so a finished build's log outlives the process. Output past
// BUILD_OUTPUT_BYTES_KEPT is dropped, with one line saying so, in memory and database alike.
import { EventEmitter } from "node:events";
import type { Logger } from "pino";
import type { Template } from "../db/schema.js";
import type { BuildLogEvent, TemplateBuildRepository } from "../db/template-builds.js";

/** stdout and stderr kept per build; steps, exits and the outcome are always kept. */
export const BUILD_OUTPUT_BYTES_KEPT = 512 * 1024;
/** Events wait at most this long before they are written… */
const FLUSH_DELAY_MS = 250;
/** …or until this many are waiting. */
const FLUSH_BATCH_EVENTS = 200;

/** One line of a build's log, in order. */
export type BuildEvent =
  | { type: "step"; step: number; command: string }
  | { type: "stdout" | "stderr"; step: number; data: string }
  | { type: "exit"; step: number; exitCode: number }
  | { type: "done"; template: Template }
  | { type: "failed"; message: string };

/** An event as the database gave it back (JSON): the template's dates are strings again. */
export function storedBuildEvent(stored: BuildLogEvent): BuildEvent {
  const event = stored as BuildEvent;
  if (event.type !== "done") return event;
  return { ...event, template: { ...event.template, createdAt: new Date(event.template.createdAt) } };
}

export class BuildLog {
  readonly events: BuildEvent[] = [];
  private readonly emitter = new EventEmitter();
  /** events[0, written) are in the database. */
  private written = 0;
  private writing: Promise<void> = Promise.resolve();
  private timer?: NodeJS.Timeout;
  private outputBytes = 0;
  private truncated = false;

  constructor(
    private readonly buildId: string,
    private readonly repository: TemplateBuildRepository,
    private readonly log: Logger,
  ) {
    this.emitter.setMaxListeners(0); // one per live reader
  }

  /** Adds an event: live readers get it now, the database with the next batch. */
  append(event: BuildEvent): void {
    if (event.type === "stdout" || event.type === "stderr") {
      if (event.data === "" || this.truncated) return;
      const bytes = Buffer.byteLength(event.data);
      if (this.outputBytes + bytes > BUILD_OUTPUT_BYTES_KEPT) {
        this.truncated = true;
        event = { type: "stderr", step: event.step, data: `\n[wrenn] build output past ${BUILD_OUTPUT_BYTES_KEPT / 1024} KiB is not kept\n` };
      } else {
        this.outputBytes += bytes;
      }
    }
    this.events.push(event);
    this.emitter.emit("event");
    if (this.events.length - this.written >= FLUSH_BATCH_EVENTS) void this.flush();
    else this.timer ??= setTimeout(() => void this.flush(), FLUSH_DELAY_MS);
  }

  /**
   * Writes every event appended so far; resolves once they are in the database. A failed write is
   * logged and its events are tried again with the next flush.
   */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.writing = this.writing.then(async () => {
      const from = this.written;
      const batch = this.events.slice(from);
      if (batch.length === 0) return;
      try {
        await this.repository.appendEvents(this.buildId, from, batch as unknown as BuildLogEvent[]);
        this.written = from + batch.length;
      } catch (err) {
        this.log.warn({ err: (err as Error).message, events: batch.length }, "writing the build log failed; retrying with the next batch");
      }
    });
    return this.writing;
  }

  /** Resolves at the next event, or when `signal` aborts. */
  next(signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      const wake = () => {
        this.emitter.off("event", wake);
        signal?.removeEventListener("abort", wake);
        resolve();
      };
      this.emitter.on("event", wake);
      signal?.addEventListener("abort", wake);
    });
  }
}
