import { type ApiEvent, type ApiResult, corsHeaders, describeError, errorResponse } from './http';
import type { AwsLambdaGlobal, ResponseStream, StreamingHandler } from './lambda-stream';
import { awsLambda } from './lambda-stream';
import { annotate, observe } from './observability';
import { SSE_HEADERS, sseComment, sseEvent } from './sse';

const DISCONNECTED = () => new Error('The client disconnected');

/** An open Server-Sent Events response. */
export interface EventSink {
  send(event: string, data: unknown): void;
  comment(text: string): void;
}

/**
 * The response of a streaming route: either one JSON answer, or a stream of events. Until the
 * first byte is written, any error can still become an ordinary JSON error with its status.
 */
export class Reply {
  /** The status sent, once the response has started. */
  statusCode = 0;
  private body: ResponseStream | undefined;
  private ended = false;
  /** Set when the client went away before the answer ended. */
  private disconnected = false;
  /**
   * Made only when asked for (a streamed turn): a buffered answer never needs one, and an
   * AbortController is among the costlier objects of a request.
   */
  private controller: AbortController | undefined;

  constructor(
    private readonly raw: ResponseStream,
    private readonly runtime: AwsLambdaGlobal,
    /** Sent with whatever answer goes out (CORS). */
    private readonly extraHeaders: Record<string, string> = {},
  ) {
    // The stream closing before we end it means the client went away: abort the upstream call.
    const gone = () => {
      if (this.ended || this.disconnected) return;
      this.disconnected = true;
      this.controller?.abort(DISCONNECTED());
    };
    raw.once('close', gone);
    raw.once('error', gone);
  }

  /** Aborted once the client goes away before the answer has ended. */
  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController();
      if (this.disconnected) this.controller.abort(DISCONNECTED());
    }
    return this.controller.signal;
  }

  /** Whether the status and headers have gone out (after that, errors travel as events). */
  get started(): boolean {
    return this.body !== undefined;
  }

  /** Sends a complete buffered answer. */
  send(result: ApiResult): void {
    this.open(result.statusCode, (result.headers ?? {}) as Record<string, string>).write(result.body);
    this.end();
  }

  /** Starts a `200 text/event-stream` answer. */
  events(headers: Record<string, string> = {}): EventSink {
    annotate({ streamed: true });
    const body = this.open(200, { ...SSE_HEADERS, ...headers });
    const write = (text: string) => {
      if (!body.destroyed && !this.ended) body.write(text);
    };
    return {
      send: (event, data) => write(sseEvent(event, data)),
      comment: (text) => write(sseComment(text)),
    };
  }

  /** Reports an error the best way still open: a JSON error, or an `error` event mid-stream. */
  fail(error: unknown): void {
    if (this.disconnected || this.ended) return;
    if (!this.started) {
      this.send(errorResponse(error));
      return;
    }
    this.body?.write(sseEvent('error', describeError(error).body));
    this.end();
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    if (this.body === undefined) this.open(204, {});
    if (!this.raw.destroyed) this.body?.end();
  }

  private open(statusCode: number, headers: Record<string, string>): ResponseStream {
    if (this.body) throw new Error('The response has already started');
    this.statusCode = statusCode;
    this.body = this.runtime.HttpResponseStream.from(this.raw, {
      statusCode,
      headers: { ...headers, ...this.extraHeaders },
    });
    return this.body;
  }
}

/**
 * Wraps a streaming route's logic with `awslambda.streamifyResponse`: the same wrapper as `route`
 * for buffered routes, turning every thrown error into the right JSON answer or `error` event.
 */
export function streamingRoute(logic: (event: ApiEvent, reply: Reply) => Promise<void>): StreamingHandler {
  const runtime = awsLambda();
  return runtime.streamifyResponse(async (event, responseStream, context) => {
    const reply = new Reply(responseStream, runtime, corsHeaders(event));
    await observe(
      event,
      context,
      async () => {
        try {
          await logic(event, reply);
        } catch (error) {
          reply.fail(error);
        } finally {
          reply.end();
        }
      },
      () => reply.statusCode,
    );
  });
}
