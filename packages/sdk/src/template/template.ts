// Templates: the catalogue (platform templates and the team's), builds from a base template plus
// shell steps (followed through their log of server-sent events), and deletes.
import type { BuildTemplateRequest, TemplateBuildInfo, TemplateInfo } from "../api/types.js";
import { resolveConnection, type CallOptions, type ConnectionOptions } from "../connection/config.js";
import { serverSentEvents } from "../connection/sse.js";
import { Transport, dataOf } from "../connection/transport.js";
import { ServerError, TemplateBuildError, WrennError } from "../errors.js";
import { errorOfEvent } from "../sandbox/commands.js";

export type BuildLogEvent =
  | { type: "step"; step: number; command: string }
  | { type: "stdout" | "stderr"; step: number; data: string }
  | { type: "exit"; step: number; exitCode: number };

export type BuildTemplateOptions = BuildTemplateRequest &
  CallOptions & {
    /** Each step, its output and its exit as the build runs. */
    onLog?: (event: BuildLogEvent) => void;
  };


export class Template {
  /** The platform templates and the team's own. */
  static async list(options: CallOptions = {}, connection: ConnectionOptions = {}): Promise<TemplateInfo[]> {
    const api = new Transport(resolveConnection(connection));
    return dataOf(await api.client.GET("/v1/templates", { fetch: api.fetchFor({ retry: "idempotent", ...options }) }));
  }

  /** A template by name (the team's own before a platform one). */
  static async get(name: string, options: CallOptions = {}, connection: ConnectionOptions = {}): Promise<TemplateInfo> {
    const api = new Transport(resolveConnection(connection));
    return dataOf(await api.client.GET("/v1/templates/{name}", { params: { path: { name } }, fetch: api.fetchFor({ retry: "idempotent", ...options }) }));
  }

  /** Deletes one of the team's templates (PermissionError for a platform template). */
  static async delete(name: string, options: CallOptions = {}, connection: ConnectionOptions = {}): Promise<void> {
    const api = new Transport(resolveConnection(connection));
    await api.client.DELETE("/v1/templates/{name}", { params: { path: { name } }, fetch: api.fetchFor({ retry: "unsent", ...options }) });
  }

  /**
   * Builds a template: a sandbox from `baseTemplate` runs `steps` in order as root, then is saved
   * as `name`. Resolves with the template when the build is ready; TemplateBuildError when it fails.
   * `timeoutMs` bounds each request; the build itself runs as long as its steps (`stepTimeoutSec`).
   */
  static async build(options: BuildTemplateOptions, connection: ConnectionOptions = {}): Promise<TemplateInfo> {
    const api = new Transport(resolveConnection(connection));
    const { signal, timeoutMs, onLog, ...request } = options;
    const started = dataOf(await api.client.POST("/v1/templates", { body: request, fetch: api.fetchFor({ retry: "unsent", signal, timeoutMs }) })) as TemplateBuildInfo;
    const what = `build ${started.id} of ${request.name}`;
    const response = await api.send({ method: "GET", path: `/v1/templates/builds/${started.id}/logs`, headers: { accept: "text/event-stream" } }, { retry: "idempotent", stream: true, signal, timeoutMs });
    try {
      for await (const { event, data } of serverSentEvents(response, what)) {
        if (event === "done") return data.template as TemplateInfo;
        if (event === "failed") throw new TemplateBuildError(`${what} failed: ${String(data.message)}`, started.id);
        if (event === "error") throw errorOfEvent(data, what);
        if (event === "step" || event === "stdout" || event === "stderr" || event === "exit") onLog?.({ ...data, type: event } as BuildLogEvent);
      }
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      if (err instanceof WrennError) throw err;
      throw new ServerError(`${what}: the log stream broke: ${(err as Error).message}`, { code: "stream_broken", cause: err });
    }
    throw new ServerError(`${what}: the log ended before the build did; see GET /v1/templates/builds/${started.id}`, { code: "stream_ended" });
  }
}
