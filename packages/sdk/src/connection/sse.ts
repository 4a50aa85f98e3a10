// Server-sent events of a streamed answer (exec output, build logs), each with its JSON data.
import { EventSourceParserStream } from "eventsource-parser/stream";
import { ServerError } from "../errors.js";

export interface ServerSentEvent {
  event: string;
  data: Record<string, unknown>;
}

/** The answer's events as they come; leaving the loop early cancels the body, which closes the connection. */
export async function* serverSentEvents(response: Response, what: string): AsyncGenerator<ServerSentEvent, void, undefined> {
  if (!response.body) throw new ServerError(`${what}: the answer had no body`, { code: "stream_ended" });
  const messages = response.body.pipeThrough(new TextDecoderStream()).pipeThrough(new EventSourceParserStream());
  for await (const message of messages) {
    yield { event: message.event ?? "message", data: JSON.parse(message.data) as Record<string, unknown> };
  }
}
