import { Redis } from 'ioredis';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { apiEvent, uniqueId } from '../support/events';
import { startFakeOpenAi } from '../support/fake-openai';
import { loadHandler } from '../support/handlers';

const fake = await startFakeOpenAi();
process.env.OPENAI_BASE_URL = fake.baseURL;
process.env.OPENAI_MODELS = 'gpt-4.1-mini,gpt-4o-mini';

const handlers = {
  postChat: await loadHandler('post-chat'),
  postImg: await loadHandler('post-img'),
  getChat: await loadHandler('get-chat'),
  getInfo: await loadHandler('get-chat-info'),
  deleteChat: await loadHandler('delete-chat'),
  getSettings: await loadHandler('get-settings'),
  postSettings: await loadHandler('post-settings'),
  postChatSystem: await loadHandler('post-chat-system'),
  listChats: await loadHandler('list-chats'),
  deleteChats: await loadHandler('delete-chats'),
  getUsage: await loadHandler('get-usage'),
};
const redis = new Redis(process.env.REDIS_URL as string);

afterAll(async () => {
  redis.disconnect();
  await fake.close();
});

let tenant: string;
beforeEach(() => {
  fake.reset();
  tenant = uniqueId('t');
});

const chatEvent = (resource: string, chatId: string, method = 'GET', json?: unknown, who = tenant) =>
  apiEvent({ method, resource, chatId, apiKeyId: who, ...(json === undefined ? {} : { json }) });
const tenantEvent = (method: string, resource: string, query: Record<string, string> = {}, who = tenant) =>
  apiEvent({ method, resource, path: resource, apiKeyId: who, queryStringParameters: query });
const body = (result: { body: string }) => JSON.parse(result.body);
const turn = (chatId: string, content = 'hello', who = tenant) =>
  handlers.postChat(chatEvent('/{chat_id}/chat', chatId, 'POST', { content }, who));

describe('GET and POST /{chat_id}/settings', () => {
  const unset = {
    model: null,
    temperature: null,
    max_tokens: null,
    max_context_tokens: null,
    ttl_days: null,
  };

  it('answers every setting as null before any is set', async () => {
    const result = await handlers.getSettings(chatEvent('/{chat_id}/settings', uniqueId('c')));

    expect(result.statusCode).toBe(200);
    expect(body(result)).toEqual(unset);
  });

  it('sets the given settings, unsets those sent as null, and answers them all', async () => {
    const chatId = uniqueId('c');
    await handlers.postSettings(
      chatEvent('/{chat_id}/settings', chatId, 'POST', {
        model: 'gpt-4o-mini',
        temperature: 0.2,
        max_tokens: 50,
      }),
    );

    const result = await handlers.postSettings(
      chatEvent('/{chat_id}/settings', chatId, 'POST', { max_tokens: null }),
    );

    expect(body(result)).toEqual({ ...unset, model: 'gpt-4o-mini', temperature: 0.2 });
    expect(body(await handlers.getSettings(chatEvent('/{chat_id}/settings', chatId)))).toEqual(body(result));
  });

  it("applies the chat's model, temperature and max_tokens to its turns", async () => {
    const chatId = uniqueId('c');
    await handlers.postSettings(
      chatEvent('/{chat_id}/settings', chatId, 'POST', {
        model: 'gpt-4o-mini',
        temperature: 1.5,
        max_tokens: 64,
      }),
    );

    await turn(chatId);

    expect(fake.completions()[0]).toMatchObject({
      model: 'gpt-4o-mini',
      temperature: 1.5,
      max_completion_tokens: 64,
    });
  });

  it("limits the history sent by the chat's max_context_tokens", async () => {
    const chatId = uniqueId('c');
    for (let i = 0; i < 5; i += 1) await turn(chatId, `message number ${i} ${'padding '.repeat(20)}`);
    await handlers.postSettings(
      chatEvent('/{chat_id}/settings', chatId, 'POST', { max_context_tokens: 200 }),
    );
    fake.reset();

    await turn(chatId, 'last');

    expect(fake.completions()[0]?.messages.length).toBeLessThan(11);
    expect(fake.completions()[0]?.messages.length).toBeGreaterThan(1);
  });

  it.each([
    ['an unknown field', { colour: 'blue' }, 'invalid_body'],
    ['a model outside the allow-list', { model: 'gpt-2' }, 'invalid_body'],
    ['a temperature above 2', { temperature: 2.5 }, 'invalid_body'],
    ['a fractional max_tokens', { max_tokens: 1.5 }, 'invalid_body'],
    ['a max_context_tokens below 100', { max_context_tokens: 99 }, 'invalid_body'],
    [
      'a max_context_tokens beyond the model',
      { model: 'gpt-4o-mini', max_context_tokens: 500_000 },
      'invalid_body',
    ],
    ['a ttl_days of 0', { ttl_days: 0 }, 'invalid_body'],
    ['a string temperature', { temperature: '0.5' }, 'invalid_body'],
  ])('returns 400 for %s', async (_, json, code) => {
    const result = await handlers.postSettings(chatEvent('/{chat_id}/settings', uniqueId('c'), 'POST', json));

    expect(result.statusCode).toBe(400);
    expect(body(result).error.code).toBe(code);
  });
});

describe('POST /{chat_id}/settings against the model in use', () => {
  it("refuses a budget beyond the chat's current model, set by an earlier request", async () => {
    const chatId = uniqueId('c');
    await handlers.postSettings(chatEvent('/{chat_id}/settings', chatId, 'POST', { model: 'gpt-4o-mini' }));

    const result = await handlers.postSettings(
      chatEvent('/{chat_id}/settings', chatId, 'POST', { max_context_tokens: 500_000 }),
    );

    expect(result.statusCode).toBe(400);
    expect(body(result).error.message).toContain('at most 128000 for gpt-4o-mini');
  });

  it('refuses switching to a model whose context is smaller than the budget already set', async () => {
    const chatId = uniqueId('c');
    await handlers.postSettings(
      chatEvent('/{chat_id}/settings', chatId, 'POST', { max_context_tokens: 500_000 }),
    );

    const result = await handlers.postSettings(
      chatEvent('/{chat_id}/settings', chatId, 'POST', { model: 'gpt-4o-mini' }),
    );

    expect(result.statusCode).toBe(400);
  });

  it('accepts the switch once the budget is unset in the same request', async () => {
    const chatId = uniqueId('c');
    await handlers.postSettings(
      chatEvent('/{chat_id}/settings', chatId, 'POST', { max_context_tokens: 500_000 }),
    );

    const result = await handlers.postSettings(
      chatEvent('/{chat_id}/settings', chatId, 'POST', { model: 'gpt-4o-mini', max_context_tokens: null }),
    );

    expect(result.statusCode).toBe(200);
    expect(body(result)).toMatchObject({ model: 'gpt-4o-mini', max_context_tokens: null });
  });
});

describe('usage', () => {
  it('adds every turn to the chat and tenant totals, and nothing for a failed turn', async () => {
    const [a, b] = [uniqueId('c'), uniqueId('c')];
    const answers = [
      await turn(a),
      await handlers.postImg(
        chatEvent('/{chat_id}/img', a, 'POST', { content: 'see', url: 'https://x.test/a.png' }),
      ),
      await handlers.postChat(chatEvent('/{chat_id}/chat', b, 'POST', { content: 'stream', stream: true })),
    ];
    fake.enqueue({ status: 500, body: { error: { message: 'boom' } } });
    await turn(b);

    const tokens = [
      body(answers[0] as { body: string }).tokens,
      body(answers[1] as { body: string }).tokens,
      answers[2]?.events.at(-1)?.data as { tokens: Record<string, number> },
    ].map((entry) => ('tokens' in entry ? entry.tokens : entry) as Record<string, number>);
    const sum = (field: string, of = tokens) => of.reduce((total, entry) => total + (entry[field] ?? 0), 0);
    const infoA = body(await handlers.getInfo(chatEvent('/{chat_id}', a)));

    expect(infoA.usage).toEqual({
      prompt_tokens: sum('prompt_tokens', tokens.slice(0, 2)),
      completion_tokens: sum('completion_tokens', tokens.slice(0, 2)),
      total_tokens: sum('total_tokens', tokens.slice(0, 2)),
      turns: 2,
    });
    expect(body(await handlers.getUsage(tenantEvent('GET', '/usage')))).toEqual({
      prompt_tokens: sum('prompt_tokens'),
      completion_tokens: sum('completion_tokens'),
      total_tokens: sum('total_tokens'),
      turns: 3,
    });
  });
});

describe('GET /{chat_id}', () => {
  it('answers the dates, message count, usage and settings', async () => {
    const chatId = uniqueId('c');
    await turn(chatId);
    await handlers.postSettings(chatEvent('/{chat_id}/settings', chatId, 'POST', { temperature: 0 }));

    const result = await handlers.getInfo(chatEvent('/{chat_id}', chatId));

    expect(result.statusCode).toBe(200);
    expect(body(result)).toEqual({
      id: chatId,
      created_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      updated_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      message_count: 2,
      usage: {
        prompt_tokens: expect.any(Number),
        completion_tokens: expect.any(Number),
        total_tokens: expect.any(Number),
        turns: 1,
      },
      settings: { model: null, temperature: 0, max_tokens: null, max_context_tokens: null, ttl_days: null },
    });
  });

  it('returns 404 chat_not_found for a chat never written', async () => {
    const result = await handlers.getInfo(chatEvent('/{chat_id}', uniqueId('c')));

    expect(result.statusCode).toBe(404);
    expect(body(result).error.code).toBe('chat_not_found');
  });
});

describe('GET /chats', () => {
  it('lists the chats most recently updated first, paging with a cursor', async () => {
    const ids = [uniqueId('c'), uniqueId('c'), uniqueId('c'), uniqueId('c'), uniqueId('c')];
    for (const id of ids) {
      await turn(id);
      await new Promise((resolve) => setTimeout(resolve, 3));
    }
    await turn(ids[1] as string);

    const listed: string[] = [];
    let query: Record<string, string> = { limit: '2' };
    for (let pages = 0; pages < 10; pages += 1) {
      const result = body(await handlers.listChats(tenantEvent('GET', '/chats', query)));
      listed.push(...result.chats.map((chat: { id: string }) => chat.id));
      if (result.next_cursor === null) break;
      query = { limit: '2', cursor: result.next_cursor };
    }

    expect(listed).toEqual([ids[1], ids[4], ids[3], ids[2], ids[0]]);
  });

  it('answers each chat with its dates and message count', async () => {
    const chatId = uniqueId('c');
    await turn(chatId);

    const result = body(await handlers.listChats(tenantEvent('GET', '/chats')));

    expect(result).toEqual({
      chats: [
        { id: chatId, created_at: expect.any(String), updated_at: expect.any(String), message_count: 2 },
      ],
      next_cursor: null,
    });
  });

  it('returns 400 for a cursor it did not make', async () => {
    expect((await handlers.listChats(tenantEvent('GET', '/chats', { cursor: 'x' }))).statusCode).toBe(400);
  });
});

describe('DELETE /{chat_id} and DELETE /chats', () => {
  it('deletes a chat with everything in it', async () => {
    const chatId = uniqueId('c');
    await handlers.postChatSystem(chatEvent('/{chat_id}/system', chatId, 'POST', { content: 'prompt' }));
    await handlers.postSettings(chatEvent('/{chat_id}/settings', chatId, 'POST', { temperature: 1 }));
    await handlers.postChat(
      apiEvent({
        method: 'POST',
        resource: '/{chat_id}/chat',
        chatId,
        apiKeyId: tenant,
        json: { content: 'hi' },
        headers: { 'Idempotency-Key': 'k1' },
      }),
    );
    expect(await redis.keys(`*{c:${tenant}:${chatId}}*`)).not.toEqual([]);

    const result = await handlers.deleteChat(chatEvent('/{chat_id}', chatId, 'DELETE'));

    expect(result.statusCode).toBe(200);
    expect(await redis.keys(`*{c:${tenant}:${chatId}}*`)).toEqual([]);
    expect((await handlers.getInfo(chatEvent('/{chat_id}', chatId))).statusCode).toBe(404);
    expect(body(await handlers.listChats(tenantEvent('GET', '/chats'))).chats).toEqual([]);
    expect((await handlers.deleteChat(chatEvent('/{chat_id}', chatId, 'DELETE'))).statusCode).toBe(404);
  });

  it("erases all of a tenant's chats, and only that tenant's", async () => {
    const other = uniqueId('t');
    for (let i = 0; i < 3; i += 1) await turn(uniqueId('c'));
    await turn('kept', 'hello', other);

    const result = await handlers.deleteChats(tenantEvent('DELETE', '/chats'));

    expect(body(result)).toEqual({ deleted: 3 });
    expect(await redis.keys(`*{c:${tenant}:*`)).toEqual([]);
    expect(body(await handlers.listChats(tenantEvent('GET', '/chats'))).chats).toEqual([]);
    expect(body(await handlers.listChats(tenantEvent('GET', '/chats', {}, other))).chats).toHaveLength(1);
  });

  it('sweeps chat keys the index does not know', async () => {
    const chatId = uniqueId('c');
    await turn(chatId);
    await redis.del(`chat-proxy:{t:${tenant}}:chats`);

    const result = await handlers.deleteChats(tenantEvent('DELETE', '/chats'));

    expect(body(result)).toEqual({ deleted: 1 });
    expect(await redis.keys(`*{c:${tenant}:*`)).toEqual([]);
  });
});

describe('tenant isolation on the chat routes', () => {
  it("never shows or deletes another tenant's chat", async () => {
    const chatId = uniqueId('c');
    await turn(chatId);
    await handlers.postSettings(chatEvent('/{chat_id}/settings', chatId, 'POST', { temperature: 1 }));
    const intruder = uniqueId('t');

    expect(
      (await handlers.getInfo(chatEvent('/{chat_id}', chatId, 'GET', undefined, intruder))).statusCode,
    ).toBe(404);
    expect(
      body(await handlers.getSettings(chatEvent('/{chat_id}/settings', chatId, 'GET', undefined, intruder)))
        .temperature,
    ).toBeNull();
    expect(body(await handlers.listChats(tenantEvent('GET', '/chats', {}, intruder))).chats).toEqual([]);
    expect(body(await handlers.getUsage(tenantEvent('GET', '/usage', {}, intruder))).turns).toBe(0);
    expect(
      (await handlers.deleteChat(chatEvent('/{chat_id}', chatId, 'DELETE', undefined, intruder))).statusCode,
    ).toBe(404);
    expect(body(await handlers.deleteChats(tenantEvent('DELETE', '/chats', {}, intruder)))).toEqual({
      deleted: 0,
    });
    expect((await handlers.getInfo(chatEvent('/{chat_id}', chatId))).statusCode).toBe(200);
  });

  it.each(['system', 'mod', 'chats', 'usage'])(
    'refuses the reserved word %s as a chat id on every chat route',
    async (word) => {
      for (const [name, resource, method] of [
        ['getInfo', '/{chat_id}', 'GET'],
        ['deleteChat', '/{chat_id}', 'DELETE'],
        ['getSettings', '/{chat_id}/settings', 'GET'],
        ['getChat', '/{chat_id}/chat', 'GET'],
      ] as const) {
        const result = await handlers[name](chatEvent(resource, word, method));
        expect(result.statusCode).toBe(400);
        expect(body(result).error.message).toContain('reserved');
      }
    },
  );
});
