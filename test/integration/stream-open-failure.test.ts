import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import type { ReceivedRequest } from '../../local/openai-stand-in';
import { uniqueId } from '../support/events';
import { type CompletionBody, startFakeOpenAi } from '../support/fake-openai';

const fake = await startFakeOpenAi();
process.env.OPENAI_BASE_URL = fake.baseURL;
// The exchange's own silence timer would also abort an upstream nobody reads, after this long: it
// must stay far above the abort poll below, so only `streamTurn`'s cancel can make that poll pass.
process.env.OPENAI_TIMEOUT_MS = '10000';

// Imported after the environment is set: these modules read their configuration at import.
const { runTurn, streamTurn } = await import('../../functions/shared/turn');
const { chatRepository } = await import('../../functions/shared/chat-repository');
type ChatRef = import('../../functions/shared/chat-repository').ChatRef;

afterAll(async () => {
  await fake.close();
});

let chat: ChatRef;
beforeEach(() => {
  fake.reset();
  chat = { tenant: uniqueId('t'), chatId: uniqueId('c') };
});

const ABORT_WAIT = { timeout: 2_000, interval: 20 };

/**
 * A streamed turn whose client stream cannot be opened, once the upstream has answered 200 and is
 * still writing the reply, slowly: about 5 s of chunks, so the fake sees its request cut short only
 * if our side drops it, never because the reply ran out first.
 */
async function turnWhoseOpenThrows(content: string): Promise<void> {
  fake.enqueue({ content: Array.from({ length: 50 }, (_, i) => `word${i}`).join(' '), chunkDelayMs: 100 });
  const failure = new Error('the response stream could not be opened');
  // Never aborted: the exchange listens to it, and an abort would drop the upstream for streamTurn.
  const client = new AbortController();
  await expect(
    streamTurn(
      chat,
      { role: 'user', content },
      {
        waitMs: 0,
        signal: client.signal,
        open: () => {
          throw failure;
        },
      },
    ),
  ).rejects.toBe(failure);
}

/** The chat completion requests, received or cut short, whose newest message is `content`. */
const asking = (requests: ReceivedRequest[], content: string) =>
  requests.filter(
    (request) =>
      request.path === '/chat/completions' &&
      (request.body as CompletionBody).messages.at(-1)?.content === content,
  );

describe('streamTurn when open() throws', () => {
  it('rejects with the error open() threw and drops the upstream request at once', async () => {
    await turnWhoseOpenThrows('first');

    // The upstream was reached, so what follows tests the path after `streamCompletion` answered.
    expect(asking(fake.requests, 'first')).toHaveLength(1);
    await expect.poll(() => asking(fake.aborted, 'first').length, ABORT_WAIT).toBe(1);
  });

  it('gives the lease back and stores nothing, so the next turn on the chat is answered', async () => {
    await turnWhoseOpenThrows('first');

    expect((await chatRepository.getMessages(chat, {})).messages).toEqual([]);

    // No wait: a lease left behind would make this turn fail busy for the rest of its lifetime.
    const reply = await runTurn(chat, { role: 'user', content: 'second' }, { waitMs: 0 });

    expect(reply.content).toContain('You said: "second"');
    const { messages } = await chatRepository.getMessages(chat, {});
    expect(messages).toHaveLength(2);
    expect(messages).toMatchObject([
      { role: 'user', content: 'second' },
      { role: 'assistant', content: reply.content },
    ]);
  });
});
