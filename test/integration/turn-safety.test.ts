import { Redis } from 'ioredis';
import { afterAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { apiEvent, uniqueId } from '../support/events';
import { startFakeOpenAi } from '../support/fake-openai';
import { type Invoke, loadHandler } from '../support/handlers';

const fake = await startFakeOpenAi();
process.env.OPENAI_BASE_URL = fake.baseURL;

/** Separate module instances, each with its own Redis connection, as separate Lambdas would be. */
async function lambdas(entry: string, count: number): Promise<Invoke[]> {
  const instances: Invoke[] = [];
  for (let i = 0; i < count; i += 1) {
    vi.resetModules();
    instances.push(await loadHandler(entry));
  }
  return instances;
}

const chatLambdas = await lambdas('post-chat', 5);
const [postChat] = chatLambdas as [Invoke];
const getChat = await loadHandler('get-chat');
const postClear = await loadHandler('post-clear');
const postSystem = await loadHandler('post-system');
const getSystem = await loadHandler('get-system');
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

const turn = (json: Record<string, unknown>, headers: Record<string, string> = {}) =>
  apiEvent({ method: 'POST', resource: '/{chat_id}/chat', chatId, apiKeyId: tenant, json, headers });
type Message = { role: string; content: string };
const history = async (): Promise<Message[]> =>
  JSON.parse((await getChat(apiEvent({ resource: '/{chat_id}/chat', chatId, apiKeyId: tenant }))).body);

/** Every user message is followed by the reply the stand-in gave to exactly that message. */
function expectWellFormedPairs(messages: Message[]): string[] {
  expect(messages.length % 2).toBe(0);
  const asked: string[] = [];
  for (let i = 0; i < messages.length; i += 2) {
    const [user, reply] = [messages[i], messages[i + 1]];
    expect(user?.role).toBe('user');
    expect(reply?.role).toBe('assistant');
    expect(reply?.content).toContain(`You said: "${user?.content}"`);
    asked.push(String(user?.content));
  }
  return asked;
}

describe('one turn at a time per chat', () => {
  it('answers 200 or 409 chat_busy to 50 simultaneous turns, and stores exactly the 200s as pairs', async () => {
    fake.respondWith(() => ({ delayMs: 20 }));

    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        chatLambdas[i % chatLambdas.length]?.(turn({ content: `message ${i}` })),
      ),
    );

    const ok = results.filter((result) => result?.statusCode === 200);
    const busy = results.filter((result) => result?.statusCode === 409);
    expect(ok.length + busy.length).toBe(50);
    expect(ok.length).toBeGreaterThan(0);
    expect(busy.length).toBeGreaterThan(0);
    for (const result of busy) expect(JSON.parse(result?.body ?? '').error.code).toBe('chat_busy');
    const stored = expectWellFormedPairs(await history());
    expect(stored.length).toBe(ok.length);
    const answered = ok.map((result) => JSON.parse(result?.body ?? '').content as string);
    expect(
      new Set(stored.map((content) => answered.find((reply) => reply.includes(`"${content}"`)))),
    ).not.toContain(undefined);
  });

  it('runs all 50 simultaneous turns one after another when they ask to wait', async () => {
    fake.respondWith(() => ({ delayMs: 5 }));

    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        chatLambdas[i % chatLambdas.length]?.(turn({ content: `message ${i}`, wait_ms: 30_000 })),
      ),
    );

    expect(results.map((result) => result?.statusCode)).toEqual(Array(50).fill(200));
    const stored = expectWellFormedPairs(await history());
    expect(stored.sort()).toEqual(Array.from({ length: 50 }, (_, i) => `message ${i}`).sort());
  }, 60_000);

  it('sends each turn the history as it stood when the turn took the chat', async () => {
    await postChat(turn({ content: 'first' }));
    await postChat(turn({ content: 'second' }));

    const sent = fake
      .requestsTo('/chat/completions')
      .map((request) => (request.body as { messages: unknown[] }).messages.length);

    expect(sent).toEqual([1, 3]);
  });

  it('returns 400 for a wait_ms that is not a whole number up to 30000', async () => {
    for (const wait_ms of [-1, 30_001, 1.5, '100']) {
      expect((await postChat(turn({ content: 'hi', wait_ms }))).statusCode).toBe(400);
    }
  });
});

describe('clear during a turn', () => {
  it('wins: the turn in flight is not stored and old messages do not come back', async () => {
    await postChat(turn({ content: 'before' }));
    fake.respondWith(() => ({ delayMs: 300 }));

    const slow = postChat(turn({ content: 'during' }));
    await new Promise((resolve) => setTimeout(resolve, 100));
    const cleared = await postClear(
      apiEvent({ method: 'POST', resource: '/{chat_id}/clear', chatId, apiKeyId: tenant }),
    );
    const result = await slow;

    expect(cleared.statusCode).toBe(200);
    expect(result.statusCode).toBe(409);
    expect(JSON.parse(result.body).error.code).toBe('chat_cleared');
    expect(await history()).toEqual([]);
  });

  it('leaves the chat usable right after', async () => {
    await postClear(apiEvent({ method: 'POST', resource: '/{chat_id}/clear', chatId, apiKeyId: tenant }));

    expect((await postChat(turn({ content: 'again' }))).statusCode).toBe(200);
    expect(await history()).toHaveLength(2);
  });
});

describe('Idempotency-Key', () => {
  const key = () => ({ 'Idempotency-Key': uniqueId('idem') });

  it('answers a retried turn with the first answer and calls OpenAI once', async () => {
    const headers = key();

    const first = await postChat(turn({ content: 'pay once' }, headers));
    const retry = await postChat(turn({ content: 'pay once' }, headers));

    expect(retry.statusCode).toBe(200);
    expect(retry.body).toBe(first.body);
    expect(retry.headers['Idempotent-Replayed']).toBe('true');
    expect(fake.requestsTo('/chat/completions')).toHaveLength(1);
    expect(await history()).toHaveLength(2);
  });

  it('replays a retried streamed turn as delta and done events', async () => {
    const headers = key();
    const first = await postChat(turn({ content: 'stream once', stream: true }, headers));

    const retry = await postChat(turn({ content: 'stream once', stream: true }, headers));

    expect(retry.events.map((event) => event.event)).toEqual(['delta', 'done']);
    expect(retry.events.at(-1)?.data).toEqual(first.events.at(-1)?.data);
    expect(fake.requestsTo('/chat/completions')).toHaveLength(1);
  });

  it('returns 422 idempotency_key_reused for the same key with another body', async () => {
    const headers = key();
    await postChat(turn({ content: 'one' }, headers));

    const result = await postChat(turn({ content: 'two' }, headers));

    expect(result.statusCode).toBe(422);
    expect(JSON.parse(result.body).error.code).toBe('idempotency_key_reused');
  });

  it('returns 409 request_in_progress while the first request still runs', async () => {
    const headers = key();
    fake.respondWith(() => ({ delayMs: 200 }));

    const first = postChat(turn({ content: 'slow' }, headers));
    await new Promise((resolve) => setTimeout(resolve, 50));
    const retry = await postChat(turn({ content: 'slow' }, headers));

    expect(retry.statusCode).toBe(409);
    expect(JSON.parse(retry.body).error.code).toBe('request_in_progress');
    expect((await first).statusCode).toBe(200);
  });

  it('runs the retry for real when the first attempt failed', async () => {
    const headers = key();
    fake.enqueue({ status: 500, body: { error: { message: 'boom' } } });

    expect((await postChat(turn({ content: 'retry me' }, headers))).statusCode).toBe(502);
    expect((await postChat(turn({ content: 'retry me' }, headers))).statusCode).toBe(200);

    expect(fake.requestsTo('/chat/completions')).toHaveLength(2);
  });

  it('keeps keys apart per tenant and per route', async () => {
    const headers = key();
    await postChat(turn({ content: 'hello' }, headers));

    const otherChat = await postChat(
      apiEvent({
        method: 'POST',
        resource: '/{chat_id}/chat',
        chatId: uniqueId('c'),
        apiKeyId: tenant,
        json: { content: 'hello' },
        headers,
      }),
    );
    const otherTenant = await postChat(
      apiEvent({
        method: 'POST',
        resource: '/{chat_id}/chat',
        chatId,
        apiKeyId: uniqueId('t'),
        json: { content: 'hello' },
        headers,
      }),
    );

    expect(otherChat.headers['Idempotent-Replayed']).toBeUndefined();
    expect(otherTenant.headers['Idempotent-Replayed']).toBeUndefined();
    expect(fake.requestsTo('/chat/completions')).toHaveLength(3);
  });

  it('works on the other POST routes too', async () => {
    const headers = key();
    const event = apiEvent({
      method: 'POST',
      resource: '/system',
      path: '/system',
      apiKeyId: tenant,
      json: { content: 'v1' },
      headers,
    });
    await postSystem(event);
    await postSystem(
      apiEvent({
        method: 'POST',
        resource: '/system',
        path: '/system',
        apiKeyId: tenant,
        json: { content: 'v2' },
      }),
    );

    const replay = await postSystem(event);

    expect(replay.headers['Idempotent-Replayed']).toBe('true');
    expect(
      JSON.parse(
        (await getSystem(apiEvent({ resource: '/system', path: '/system', apiKeyId: tenant }))).body,
      ),
    ).toEqual({
      content: 'v2',
    });
  });

  it.each([
    ['empty', ''],
    ['too long', 'k'.repeat(256)],
    ['not printable ASCII', 'clé'],
  ])('returns 400 invalid_idempotency_key for a key that is %s', async (_, value) => {
    const result = await postChat(turn({ content: 'hi' }, { 'Idempotency-Key': value }));

    expect(result.statusCode).toBe(400);
    expect(JSON.parse(result.body).error.code).toBe('invalid_idempotency_key');
  });
});
