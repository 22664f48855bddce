import { Redis } from 'ioredis';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { apiEvent, uniqueId } from '../support/events';
import { openAiError, startFakeOpenAi } from '../support/fake-openai';
import { loadHandler } from '../support/handlers';

const fake = await startFakeOpenAi();
process.env.OPENAI_BASE_URL = fake.baseURL;
process.env.OPENAI_TIMEOUT_MS = '2000';
process.env.STREAM_KEEPALIVE_MS = '40';

const postChat = await loadHandler('post-chat');
const postImg = await loadHandler('post-img');
const getChat = await loadHandler('get-chat');
const redis = new Redis(process.env.REDIS_URL as string);

afterAll(async () => {
  redis.disconnect();
  await fake.close();
});

let tenant: string;
let chatId: string;
beforeEach(() => {
  fake.reset();
  tenant = uniqueId('t');
  chatId = uniqueId('c');
});

const chatEvent = (json: unknown, headers: Record<string, string> = {}) =>
  apiEvent({
    method: 'POST',
    resource: '/{chat_id}/chat',
    chatId,
    apiKeyId: tenant,
    body: JSON.stringify(json),
    headers,
  });
const history = async () =>
  JSON.parse((await getChat(apiEvent({ resource: '/{chat_id}/chat', chatId, apiKeyId: tenant }))).body);
const deltas = (events: { event: string; data: unknown }[]) =>
  events
    .filter((event) => event.event === 'delta')
    .map((event) => (event.data as { content: string }).content);

describe('POST /{chat_id}/chat streamed', () => {
  it('sends delta events, then done with the joined content and the token usage, and stores the turn', async () => {
    const result = await postChat(chatEvent({ content: 'Hello there', stream: true }));

    expect(result.statusCode).toBe(200);
    expect(result.headers['Content-Type']).toMatch(/^text\/event-stream/);
    const done = result.events.at(-1);
    expect(done?.event).toBe('done');
    expect(deltas(result.events).length).toBeGreaterThan(1);
    expect(done?.data).toEqual({
      content: deltas(result.events).join(''),
      role: 'assistant',
      tokens: {
        completion_tokens: expect.any(Number),
        prompt_tokens: expect.any(Number),
        total_tokens: expect.any(Number),
      },
    });
    expect(done?.data).toMatchObject({ tokens: { total_tokens: expect.any(Number) } });
    expect(await history()).toMatchObject([
      { role: 'user', content: 'Hello there' },
      { role: 'assistant', content: deltas(result.events).join('') },
    ]);
  });

  it('asks OpenAI for a stream with usage included', async () => {
    await postChat(chatEvent({ content: 'Hi', stream: true }));

    expect(fake.requestsTo('/chat/completions')[0]?.body).toMatchObject({
      stream: true,
      stream_options: { include_usage: true },
    });
  });

  it('streams when the client sends Accept: text/event-stream', async () => {
    const result = await postChat(chatEvent({ content: 'Hi' }, { accept: 'text/event-stream' }));

    expect(result.headers['Content-Type']).toMatch(/^text\/event-stream/);
    expect(result.events.at(-1)?.event).toBe('done');
  });

  it('answers plain JSON when streaming was not asked for', async () => {
    const result = await postChat(chatEvent({ content: 'Hi' }));

    expect(result.headers['Content-Type']).toMatch(/^application\/json/);
    expect(JSON.parse(result.body)).toMatchObject({ role: 'assistant' });
  });

  it('delivers the first event well before the reply ends', async () => {
    fake.enqueue({ content: 'one two three four five six seven eight', chunkDelayMs: 60 });

    const result = await postChat(chatEvent({ content: 'count', stream: true }));

    const first = result.events.find((event) => event.event === 'delta');
    const done = result.events.find((event) => event.event === 'done');
    expect(done && first && done.at - first.at).toBeGreaterThanOrEqual(300);
  });

  it('sends keep-alive comments while the upstream is silent', async () => {
    fake.enqueue({ content: 'slow words here', chunkDelayMs: 150 });

    const result = await postChat(chatEvent({ content: 'slow', stream: true }));

    expect(result.events.filter((event) => event.event === 'comment').map((event) => event.data)).toContain(
      'keep-alive',
    );
    expect(result.events.at(-1)?.event).toBe('done');
  });

  it('answers an ordinary JSON error when OpenAI refuses before the first byte', async () => {
    fake.enqueue({ status: 429, body: openAiError('slow down'), headers: { 'retry-after': '3' } });

    const result = await postChat(chatEvent({ content: 'Hi', stream: true }));

    expect(result.statusCode).toBe(429);
    expect(result.headers['Retry-After']).toBe('3');
    expect(JSON.parse(result.body)).toEqual({
      error: { code: 'upstream_rate_limited', message: expect.any(String) },
    });
    expect(await history()).toEqual([]);
  });

  it('checks the body before the first byte', async () => {
    const result = await postChat(chatEvent({ content: '', stream: true }));

    expect(result.statusCode).toBe(400);
    expect(fake.requests).toEqual([]);
  });

  it('returns 400 when stream is not a boolean', async () => {
    const result = await postChat(chatEvent({ content: 'Hi', stream: 'yes' }));

    expect(result.statusCode).toBe(400);
  });

  it('ends with an error event and stores nothing when the upstream fails mid-stream', async () => {
    fake.enqueue({ content: 'a b c d e f', failAfterChunks: 2, chunkDelayMs: 20 });

    const result = await postChat(chatEvent({ content: 'Hi', stream: true }));

    expect(result.statusCode).toBe(200);
    expect(deltas(result.events)).toHaveLength(2);
    expect(result.events.at(-1)).toMatchObject({
      event: 'error',
      data: { error: { code: 'upstream_incomplete', message: expect.any(String) } },
    });
    expect(await history()).toEqual([]);
  });

  it('ends with upstream_timeout when the upstream stalls mid-stream', async () => {
    fake.enqueue({ content: 'a b c', chunkDelayMs: 2500 });

    const result = await postChat(chatEvent({ content: 'Hi', stream: true }));

    expect(result.events.at(-1)).toMatchObject({
      event: 'error',
      data: { error: { code: 'upstream_timeout' } },
    });
    expect(await history()).toEqual([]);
  });

  it('aborts the upstream request and stores nothing when the client disconnects', async () => {
    fake.enqueue({ content: 'one two three four five six', chunkDelayMs: 30 });

    const result = await postChat(chatEvent({ content: 'Hi', stream: true }), { disconnectAfter: 2 });

    expect(result.events.some((event) => event.event === 'done')).toBe(false);
    await expect.poll(() => fake.aborted.length).toBe(1);
    expect(await history()).toEqual([]);
  });
});

describe('POST /{chat_id}/img streamed', () => {
  it('streams the reply to an image turn and stores it', async () => {
    const result = await postImg(
      apiEvent({
        method: 'POST',
        resource: '/{chat_id}/img',
        chatId,
        apiKeyId: tenant,
        json: { content: 'What is this?', url: 'https://example.com/cat.png', stream: true },
      }),
    );

    expect(result.events.at(-1)?.event).toBe('done');
    expect(await history()).toHaveLength(2);
  });
});
