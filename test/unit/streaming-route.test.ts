import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import type { Reply } from '../../functions/shared/streaming-route';
import { createResponseStream, installAwsLambda } from '../../local/awslambda';
import { apiEvent } from '../support/events';

installAwsLambda();
const { streamingRoute } = await import('../../functions/shared/streaming-route');

/** Runs a streaming route's logic on a fresh response stream, which the test may close. */
function invoke(logic: (reply: Reply, stream: ReturnType<typeof createResponseStream>) => Promise<void>) {
  const stream = createResponseStream({ head: () => {}, write: () => {}, end: () => {} });
  const handler = streamingRoute((_event, reply) => logic(reply, stream));
  return handler(apiEvent({ method: 'POST', resource: '/{chat_id}/chat', chatId: 'c' }), stream);
}

describe('Reply.signal (the client going away)', () => {
  it('aborts when the client disconnects while the route runs', async () => {
    let signal: AbortSignal | undefined;
    await invoke(async (reply, stream) => {
      signal = reply.signal;
      expect(signal.aborted).toBe(false);
      stream.destroy();
      await once(stream, 'close');
    });
    expect(signal?.aborted).toBe(true);
    expect(String(signal?.reason)).toContain('The client disconnected');
  });

  it('is already aborted when first asked for after the client went away', async () => {
    let signal: AbortSignal | undefined;
    await invoke(async (reply, stream) => {
      stream.destroy();
      await once(stream, 'close');
      signal = reply.signal;
    });
    expect(signal?.aborted).toBe(true);
    expect(String(signal?.reason)).toContain('The client disconnected');
  });

  it('sends no error answer to a client that went away, when the route then fails', async () => {
    let reply: Reply | undefined;
    await invoke(async (current, stream) => {
      reply = current;
      stream.destroy();
      await once(stream, 'close');
      throw new Error('the upstream call failed');
    });
    // Not a 500 for nobody: the answer just ends (an empty 204, which goes nowhere).
    expect(reply?.statusCode).toBe(204);
  });

  it('does not abort once the answer has ended', async () => {
    let signal: AbortSignal | undefined;
    let stream: ReturnType<typeof createResponseStream> | undefined;
    await invoke(async (reply, raw) => {
      stream = raw;
      signal = reply.signal;
      reply.send({ statusCode: 200, body: '{}' });
    });
    // The stream finishes, then closes, a few ticks after the answer ends.
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(stream?.closed).toBe(true);
    expect(signal?.aborted).toBe(false);
  });
});
