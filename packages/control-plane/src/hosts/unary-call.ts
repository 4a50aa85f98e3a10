// A unary Connect call (binary protobuf) made straight on the HTTP/2 session that Connect's own
// transport uses for the same agent. Connect's generic client path (interceptors, a universal
// request and response built over async iterables, linked abort signals, an error built and thrown
// away on every success) cost ~0.5 ms of CPU per call more than this on these machines
// (docs/benchmarks.md), and every create and exec pays it on its path. This does the Connect
// protocol's unary exchange and nothing else; its failures are Connect's own ConnectErrors, read
// from the same JSON error body.
import { constants, type ClientHttp2Stream, type IncomingHttpHeaders, type IncomingHttpStatusHeader } from "node:http2";
import { create, fromBinary, toBinary, type DescMessage, type DescMethodUnary, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type CallOptions } from "@connectrpc/connect";
import { codeFromHttpStatus, errorFromJsonBytes } from "@connectrpc/connect/protocol-connect";
import type { Http2SessionManager } from "@connectrpc/connect-node";

export type UnaryCall<I extends DescMessage, O extends DescMessage> = (request: MessageInitShape<I>, options?: CallOptions) => Promise<MessageShape<O>>;

/** Node's error codes that say the connection broke under a call, or was never made. */
const BROKEN = new Set(["ERR_STREAM_DESTROYED", "ERR_HTTP2_INVALID_STREAM", "ECONNRESET"]);
const UNREACHABLE = new Set(["ETIMEDOUT", "ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED"]);

/** A Node error as the ConnectError connect-node would make of it (the same codes; the error kept as the cause). */
export function connectErrorFromNode(reason: unknown): ConnectError {
  let code = Code.Internal;
  for (let cause = reason, depth = 0; cause instanceof Error && depth < 5; depth++) {
    const nodeCode = (cause as { code?: unknown }).code;
    if (typeof nodeCode === "string" && BROKEN.has(nodeCode)) code = Code.Aborted;
    else if (typeof nodeCode === "string" && UNREACHABLE.has(nodeCode)) code = Code.Unavailable;
    cause = cause.cause;
  }
  const error = ConnectError.from(reason, code);
  if (error !== reason) error.cause = reason;
  return error;
}

/**
 * `method` called on `sessions`' connection with `headers` (credentials) on every request.
 * Options: `timeoutMs` (default `defaultTimeoutMs`; sent as `connect-timeout-ms`, and the call is
 * cancelled with DeadlineExceeded when it passes), `signal` (cancels with Canceled) and `headers`.
 * The stream is reset on either, which the agent sees as the call's cancellation.
 */
export function unaryCall<I extends DescMessage, O extends DescMessage>(
  sessions: Http2SessionManager,
  method: DescMethodUnary<I, O>,
  headers: Record<string, string>,
  defaultTimeoutMs: number,
): UnaryCall<I, O> {
  const path = `/${method.parent.typeName}/${method.name}`;
  const fixed = { ...headers, "content-type": "application/proto", "connect-protocol-version": "1" };
  return async (request, options = {}) => {
    const timeoutMs = options.timeoutMs ?? defaultTimeoutMs;
    const body = toBinary(method.input, create(method.input, request));
    const { signal } = options;
    if (signal?.aborted) throw ConnectError.from(signal.reason, Code.Canceled);
    const requestHeaders: Record<string, string> = { ...fixed, "connect-timeout-ms": String(timeoutMs) };
    if (options.headers) new Headers(options.headers).forEach((value, name) => (requestHeaders[name] = value));
    let stream: ClientHttp2Stream;
    try {
      stream = await sessions.request("POST", path, requestHeaders, {});
    } catch (err) {
      throw connectErrorFromNode(err);
    }
    return new Promise<MessageShape<O>>((resolve, reject) => {
      let status = 0;
      let responseHeaders: IncomingHttpHeaders = {};
      const chunks: Buffer[] = [];
      let settled = false;
      const settle = (error: ConnectError | undefined, value?: MessageShape<O>) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        if (error) reject(error);
        else resolve(value!);
      };
      // A call given up: the agent sees the stream reset as the call's cancellation.
      const giveUp = (error: ConnectError) => {
        if (!stream.closed) stream.close(constants.NGHTTP2_CANCEL);
        settle(error);
      };
      const onAbort = () => giveUp(ConnectError.from(signal!.reason, Code.Canceled));
      const timer = setTimeout(() => giveUp(new ConnectError("the operation timed out", Code.DeadlineExceeded)), timeoutMs);
      signal?.addEventListener("abort", onAbort, { once: true });
      stream.once("response", (received: IncomingHttpHeaders & IncomingHttpStatusHeader) => {
        status = Number(received[":status"]);
        responseHeaders = received;
      });
      stream.on("data", (chunk: Buffer) => {
        chunks.push(chunk);
        sessions.notifyResponseByteRead(stream);
      });
      stream.once("end", () => {
        if (settled) return; // given up already (the reset ends the stream)
        const bytes = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
        const encoding = responseHeaders["content-encoding"];
        if (encoding && encoding !== "identity") {
          settle(new ConnectError(`the agent answered in an encoding never asked for: ${String(encoding)}`, Code.Internal));
        } else if (status === 200) {
          try {
            settle(undefined, fromBinary(method.output, bytes));
          } catch (err) {
            settle(new ConnectError(`the agent's answer does not parse: ${(err as Error).message}`, Code.Internal));
          }
        } else {
          settle(errorOfAnswer(status, responseHeaders, bytes));
        }
      });
      stream.once("error", (err: Error) => settle(connectErrorFromNode(err)));
      // Closed with no answer: the connection or the agent reset it. Every stream closes, answered
      // or not: the error (a stack trace, its headers) is made only when there is none.
      stream.once("close", () => settled || settle(new ConnectError(`the agent's stream closed before its answer (code ${stream.rstCode})`, Code.Aborted)));
      stream.end(body);
    });
  };
}

/** The ConnectError a unary answer other than 200 carries (its JSON body), or one from its HTTP status. */
function errorOfAnswer(status: number, headers: IncomingHttpHeaders, body: Uint8Array): ConnectError {
  const fallback = status === 0 ? new ConnectError("the agent's stream ended without an answer", Code.Aborted) : new ConnectError(`HTTP ${status}`, codeFromHttpStatus(status));
  const metadata = Object.entries(headers).filter((entry): entry is [string, string] => !entry[0].startsWith(":") && typeof entry[1] === "string");
  try {
    return errorFromJsonBytes(body, metadata, fallback);
  } catch (err) {
    return err instanceof ConnectError ? err : fallback; // a body that is not Connect's error JSON
  }
}
