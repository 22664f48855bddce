import type { APIGatewayProxyEvent } from 'aws-lambda';
import type { ResponsePrelude, StreamingHandler } from '../../functions/shared/lambda-stream';
import { createResponseStream, installAwsLambda } from '../../local/awslambda';

// Streaming handlers call `awslambda.streamifyResponse` when their module loads: install the
// stand-in before any of them is imported (this module is imported first by such tests).
installAwsLambda();

export interface ServerSentEvent {
  readonly event: string;
  readonly data: unknown;
  /** Milliseconds since the invocation started. */
  readonly at: number;
}

export interface StreamedResponse {
  readonly statusCode: number;
  readonly headers: Record<string, string>;
  readonly body: string;
  /** The body parsed as Server-Sent Events (comments are kept as event `comment`). */
  readonly events: ServerSentEvent[];
}

/** Parses SSE frames; `data` is JSON, a comment becomes `{event: 'comment', data: text}`. */
export function parseEvents(text: string, at = 0): ServerSentEvent[] {
  return text
    .split('\n\n')
    .filter((frame) => frame.trim() !== '')
    .map((frame) => {
      if (frame.startsWith(': ')) return { event: 'comment', data: frame.slice(2), at };
      const event = /^event: (.*)$/m.exec(frame)?.[1] ?? 'message';
      const data = /^data: (.*)$/m.exec(frame)?.[1] ?? '';
      return { event, data: JSON.parse(data), at };
    });
}

/**
 * Invokes a streaming handler as the Lambda runtime would and collects what API Gateway would
 * send. `disconnectAfter` cuts the client off once that many events have arrived.
 */
export async function invokeStreaming(
  handler: StreamingHandler,
  event: APIGatewayProxyEvent,
  options: { disconnectAfter?: number } = {},
): Promise<StreamedResponse> {
  const started = Date.now();
  let prelude: ResponsePrelude = { statusCode: 0 };
  let body = '';
  const events: ServerSentEvent[] = [];
  let buffered = '';
  const stream = createResponseStream({
    head: (head) => {
      prelude = head;
    },
    write: (chunk) => {
      body += chunk.toString('utf8');
      if (!prelude.headers?.['Content-Type']?.startsWith('text/event-stream')) return;
      buffered += chunk.toString('utf8');
      const complete = buffered.lastIndexOf('\n\n');
      if (complete === -1) return;
      events.push(...parseEvents(buffered.slice(0, complete + 2), Date.now() - started));
      buffered = buffered.slice(complete + 2);
      if (options.disconnectAfter !== undefined && events.length >= options.disconnectAfter) stream.destroy();
    },
    end: () => {},
  });
  await handler(event, stream);
  return { statusCode: prelude.statusCode, headers: prelude.headers ?? {}, body, events };
}
