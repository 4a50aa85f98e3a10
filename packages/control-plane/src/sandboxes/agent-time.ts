// How long one request waited on host agents, so the API can say it in a Server-Timing header:
// what a request took beyond that is the control plane's own cost.
export class AgentTime {
  private totalMs = 0;

  async measure<T>(call: Promise<T>): Promise<T> {
    const started = performance.now();
    try {
      return await call;
    } finally {
      this.totalMs += performance.now() - started;
    }
  }

  /** The Server-Timing header value (RFC: `name;dur=<ms>`). */
  header(): string {
    return `agent;dur=${this.totalMs.toFixed(1)}`;
  }
}
