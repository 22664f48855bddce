import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { warmUpTurn } from '../support/chat-scope';
import { apiEvent, uniqueId } from '../support/events';
import { startFakeOpenAi } from '../support/fake-openai';
import { loadHandler } from '../support/handlers';

// A short lease, so a stalled turn outlives it within the test.
const fake = await startFakeOpenAi();
process.env.OPENAI_BASE_URL = fake.baseURL;
process.env.TURN_LEASE_MS = '200';

const postChat = await loadHandler('post-chat');
const getChat = await loadHandler('get-chat');

const redis = new Redis(process.env.REDIS_URL as string);
afterAll(async () => {
  redis.disconnect();
  await fake.close();
});
// A first turn loads the tokenizer, so the timings below are the lease's alone.
beforeAll(() => warmUpTurn(postChat));

let tenant: string;
let chatId: string;
beforeEach(() => {
  fake.reset();
  tenant = uniqueId('t');
  chatId = uniqueId('c');
});

const turn = (json: Record<string, unknown>) =>
  apiEvent({ method: 'POST', resource: '/{chat_id}/chat', chatId, apiKeyId: tenant, json });
const history = async () =>
  JSON.parse((await getChat(apiEvent({ resource: '/{chat_id}/chat', chatId, apiKeyId: tenant }))).body) as {
    content: string;
  }[];
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('the turn lease', () => {
  it('expires when its holder stalls, and the stalled turn cannot append afterwards', async () => {
    fake.respondWith((request) =>
      JSON.stringify(request.body).includes('stalled') ? { delayMs: 500 } : undefined,
    );

    const stalled = postChat(turn({ content: 'stalled' }));
    await sleep(100);
    const next = await postChat(turn({ content: 'next', wait_ms: 2000 }));
    const late = await stalled;

    expect(next.statusCode).toBe(200);
    expect(late.statusCode).toBe(409);
    expect(JSON.parse(late.body).error.code).toBe('turn_expired');
    expect((await history()).map((message) => message.content)).toEqual([
      'next',
      expect.stringContaining('next'),
    ]);
  });

  it('is renewed while a long reply streams, keeping other turns out until it is stored', async () => {
    fake.enqueue({ content: 'a b c d e f g h', chunkDelayMs: 80 });

    const streamed = postChat(turn({ content: 'long', stream: true }));
    await sleep(350);
    const meanwhile = await postChat(turn({ content: 'meanwhile' }));
    const result = await streamed;

    expect(meanwhile.statusCode).toBe(409);
    expect(result.events.at(-1)?.event).toBe('done');
    expect(await history()).toHaveLength(2);
  });

  it('is given back at once when a turn fails', async () => {
    fake.enqueue({ status: 500, body: { error: { message: 'boom' } } });

    expect((await postChat(turn({ content: 'fails' }))).statusCode).toBe(502);
    expect((await postChat(turn({ content: 'works' }))).statusCode).toBe(200);
  });
});

describe("a turn's Idempotency-Key", () => {
  const keyed = (json: Record<string, unknown>, key: string) =>
    apiEvent({
      method: 'POST',
      resource: '/{chat_id}/chat',
      chatId,
      apiKeyId: tenant,
      json,
      headers: { 'Idempotency-Key': key },
    });

  it('stays running while a streamed reply outlasts the lease, then replays it', async () => {
    const key = uniqueId('k');
    fake.enqueue({ content: 'a b c d e f g h', chunkDelayMs: 80 });

    const streamed = postChat(keyed({ content: 'long', stream: true }, key));
    await sleep(450);
    const meanwhile = await postChat(keyed({ content: 'long', stream: true }, key));
    await streamed;
    const after = await postChat(keyed({ content: 'long', stream: true }, key));

    expect(meanwhile.statusCode).toBe(409);
    expect(JSON.parse(meanwhile.body).error.code).toBe('request_in_progress');
    expect(after.headers['Idempotent-Replayed']).toBe('true');
    expect(fake.requestsTo('/chat/completions')).toHaveLength(1);
    expect(await history()).toHaveLength(2);
  });

  it('stays running while its turn waits for the chat longer than the lease', async () => {
    const key = uniqueId('k');
    // A streamed reply that renews its lease holds the chat for about 650 ms.
    fake.enqueue({ content: 'a b c d e f g h', chunkDelayMs: 80 });

    const holder = postChat(turn({ content: 'long', stream: true }));
    // The holder has the chat once OpenAI sees its request; the waiting turn's key is claimed
    // once its record exists. The retry comes after a lease's time (200 ms) from that claim.
    await expect.poll(() => fake.requestsTo('/chat/completions').length).toBe(1);
    const waiting = postChat(keyed({ content: 'patient', wait_ms: 2000 }, key));
    await expect.poll(async () => (await redis.keys(`*${chatId}*:idem:*`)).length).toBe(1);
    await sleep(300);
    const retry = await postChat(keyed({ content: 'patient', wait_ms: 2000 }, key));
    const [, waited] = await Promise.all([holder, waiting]);

    expect(waited.statusCode).toBe(200);
    expect(retry.statusCode).toBe(409);
    expect(JSON.parse(retry.body).error.code).toBe('request_in_progress');
    expect((await history()).filter((message) => message.content === 'patient')).toHaveLength(1);
  });
});
