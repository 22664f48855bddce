import { Redis } from 'ioredis';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { apiEvent, uniqueId } from '../support/events';
import { openAiError, startFakeOpenAi } from '../support/fake-openai';
import { loadHandler } from '../support/handlers';

const fake = await startFakeOpenAi();
process.env.OPENAI_BASE_URL = fake.baseURL;
process.env.OPENAI_TIMEOUT_MS = '1000';

const health = await loadHandler('health');
const getSystem = await loadHandler('get-system');
const postSystem = await loadHandler('post-system');
const postMod = await loadHandler('post-mod');
const getChatSystem = await loadHandler('get-chat-system');
const postChatSystem = await loadHandler('post-chat-system');
const postChat = await loadHandler('post-chat');
const getChat = await loadHandler('get-chat');
const postImg = await loadHandler('post-img');
const postClear = await loadHandler('post-clear');

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

const body = (result: { body: string }): unknown => JSON.parse(result.body);
const chatEvent = (resource: string, json?: unknown) =>
  apiEvent({ method: json === undefined ? 'GET' : 'POST', resource, chatId, apiKeyId: tenant, json });
const tenantEvent = (resource: string, json?: unknown) =>
  apiEvent({ method: json === undefined ? 'GET' : 'POST', resource, path: resource, apiKeyId: tenant, json });

async function tenantKeys(id: string): Promise<string[]> {
  return redis.keys(`*${id}*`);
}

describe('GET /', () => {
  it('answers 200 text/html Hello, World!', async () => {
    const result = await health(apiEvent());
    expect(result.statusCode).toBe(200);
    expect(result.headers?.['Content-Type']).toMatch(/^text\/html/);
    expect(result.body).toBe('Hello, World!');
  });
});

describe('GET and POST /system', () => {
  it('returns null content before any prompt is set', async () => {
    const result = await getSystem(tenantEvent('/system'));
    expect(result.statusCode).toBe(200);
    expect(body(result)).toEqual({ content: null });
  });

  it('stores the prompt and returns {}', async () => {
    const set = await postSystem(tenantEvent('/system', { content: 'You are a python engineer' }));
    expect(set.statusCode).toBe(200);
    expect(body(set)).toEqual({});
    expect(body(await getSystem(tenantEvent('/system')))).toEqual({ content: 'You are a python engineer' });
  });

  it('keeps one tenant prompt invisible to another tenant', async () => {
    await postSystem(tenantEvent('/system', { content: 'secret prompt' }));
    const other = await getSystem(
      apiEvent({ resource: '/system', path: '/system', apiKeyId: uniqueId('t') }),
    );
    expect(body(other)).toEqual({ content: null });
  });

  it.each([
    ['a missing content', {}, 'invalid_body'],
    ['an empty content', { content: '' }, 'invalid_body'],
    ['a non-string content', { content: 42 }, 'invalid_body'],
    ['a body that is an array', ['content'], 'invalid_body'],
    ['a body that is a string', 'hello', 'invalid_body'],
  ])('returns 400 for %s', async (_, json, code) => {
    const result = await postSystem(tenantEvent('/system', json));
    expect(result.statusCode).toBe(400);
    expect(body(result)).toEqual({ error: { code, message: expect.any(String) } });
  });

  it('returns 400 invalid_body for malformed JSON', async () => {
    const result = await postSystem({ ...tenantEvent('/system'), httpMethod: 'POST', body: '{"content": ' });
    expect(result.statusCode).toBe(400);
    expect(body(result)).toEqual({ error: { code: 'invalid_body', message: expect.any(String) } });
  });

  it('returns 413 for a body over the size limit and stores nothing', async () => {
    const result = await postSystem(tenantEvent('/system', { content: 'x'.repeat(600 * 1024) }));
    expect(result.statusCode).toBe(413);
    expect(body(result)).toEqual({ error: { code: 'payload_too_large', message: expect.any(String) } });
    expect(await tenantKeys(tenant)).toEqual([]);
  });

  it('reads a base64-encoded body', async () => {
    const event = tenantEvent('/system');
    const result = await postSystem({
      ...event,
      httpMethod: 'POST',
      isBase64Encoded: true,
      body: Buffer.from(JSON.stringify({ content: 'from base64' })).toString('base64'),
    });
    expect(result.statusCode).toBe(200);
    expect(body(await getSystem(event))).toEqual({ content: 'from base64' });
  });

  it('returns 403 when the request has no API key id', async () => {
    const result = await getSystem(apiEvent({ resource: '/system', path: '/system', apiKeyId: null }));
    expect(result.statusCode).toBe(403);
    expect(body(result)).toEqual({ error: { code: 'forbidden', message: expect.any(String) } });
  });
});

describe('GET and POST /{chat_id}/system', () => {
  it("stores a chat's own prompt apart from the global one", async () => {
    await postChatSystem(chatEvent('/{chat_id}/system', { content: 'Answer in French' }));
    expect(body(await getChatSystem(chatEvent('/{chat_id}/system')))).toEqual({
      content: 'Answer in French',
    });
    expect(body(await getSystem(tenantEvent('/system')))).toEqual({ content: null });
  });

  it.each([
    ['has a space', 'bad id'],
    ['has a colon', 'a:b'],
    ['has braces', 'a{b}'],
    ['is too long', 'x'.repeat(129)],
    ['is a reserved route word', 'system'],
  ])('returns 400 invalid_chat_id when the id %s', async (_, badId) => {
    const result = await getChatSystem(
      apiEvent({ resource: '/{chat_id}/system', pathParameters: { chat_id: badId }, apiKeyId: tenant }),
    );
    expect(result.statusCode).toBe(400);
    expect(body(result)).toEqual({ error: { code: 'invalid_chat_id', message: expect.any(String) } });
  });
});

describe('POST /mod', () => {
  it("answers OpenAI's moderation result as {id, model, results}", async () => {
    const result = await postMod(tenantEvent('/mod', { content: 'is this ok?' }));
    expect(result.statusCode).toBe(200);
    const answer = body(result) as { id: string; model: string; results: { flagged: boolean }[] };
    expect(Object.keys(answer).sort()).toEqual(['id', 'model', 'results']);
    expect(answer.results[0]?.flagged).toBe(false);
    expect(fake.requestsTo('/moderations')[0]?.body).toMatchObject({
      input: 'is this ok?',
      model: 'omni-moderation-latest',
    });
  });
});

describe('POST /{chat_id}/chat', () => {
  it('answers the reply with role and token counts, and stores the turn', async () => {
    const result = await postChat(chatEvent('/{chat_id}/chat', { content: 'Hello' }));
    expect(result.statusCode).toBe(200);
    expect(body(result)).toEqual({
      content: expect.stringContaining('Hello'),
      role: 'assistant',
      tokens: {
        completion_tokens: expect.any(Number),
        prompt_tokens: expect.any(Number),
        total_tokens: expect.any(Number),
      },
    });
    const history = body(await getChat(chatEvent('/{chat_id}/chat')));
    expect(history).toEqual([
      { id: 0, role: 'user', content: 'Hello', created_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) },
      {
        id: 1,
        role: 'assistant',
        content: (body(result) as { content: string }).content,
        created_at: expect.stringMatching(/^\d{4}-/),
      },
    ]);
  });

  it('sends the global prompt, the chat prompt, the history and the new message, in order', async () => {
    await postSystem(tenantEvent('/system', { content: 'global rules' }));
    await postChatSystem(chatEvent('/{chat_id}/system', { content: 'chat rules' }));
    await postChat(chatEvent('/{chat_id}/chat', { content: 'first' }));
    fake.reset();

    await postChat(chatEvent('/{chat_id}/chat', { content: 'second' }));

    const sent = fake.requestsTo('/chat/completions')[0]?.body as {
      messages: { role: string; content: string }[];
    };
    expect(sent.messages.map((message) => [message.role, message.content])).toEqual([
      ['system', 'global rules'],
      ['system', 'chat rules'],
      ['user', 'first'],
      ['assistant', expect.stringContaining('first')],
      ['user', 'second'],
    ]);
  });

  it('keeps the same chat id of two tenants apart', async () => {
    await postChat(chatEvent('/{chat_id}/chat', { content: 'mine' }));
    const other = await getChat(apiEvent({ resource: '/{chat_id}/chat', chatId, apiKeyId: uniqueId('t') }));
    expect(body(other)).toEqual([]);
  });

  it.each([
    [500, 502, 'upstream_error'],
    [503, 502, 'upstream_error'],
    [401, 502, 'upstream_auth_failed'],
    [400, 400, 'upstream_rejected'],
  ])('maps an OpenAI %i to %i %s and stores nothing', async (upstream, status, code) => {
    fake.enqueue({ status: upstream, body: openAiError('boom') });
    const result = await postChat(chatEvent('/{chat_id}/chat', { content: 'Hello' }));
    expect(result.statusCode).toBe(status);
    expect(body(result)).toEqual({ error: { code, message: expect.any(String) } });
    expect(await tenantKeys(tenant)).toEqual([]);
  });

  it('returns 429 with Retry-After when OpenAI rate-limits, and stores nothing', async () => {
    fake.enqueue({
      status: 429,
      body: openAiError('slow down', 'rate_limit'),
      headers: { 'retry-after': '7' },
    });
    const result = await postChat(chatEvent('/{chat_id}/chat', { content: 'Hello' }));
    expect(result.statusCode).toBe(429);
    expect(result.headers?.['Retry-After']).toBe('7');
    expect(body(result)).toEqual({ error: { code: 'upstream_rate_limited', message: expect.any(String) } });
    expect(await tenantKeys(tenant)).toEqual([]);
  });

  it('returns 504 when OpenAI does not answer within the timeout, and stores nothing', async () => {
    fake.enqueue({ hang: true });
    const result = await postChat(chatEvent('/{chat_id}/chat', { content: 'Hello' }));
    expect(result.statusCode).toBe(504);
    expect(body(result)).toEqual({ error: { code: 'upstream_timeout', message: expect.any(String) } });
    expect(await tenantKeys(tenant)).toEqual([]);
  });

  it('returns 502 when OpenAI answers without choices', async () => {
    fake.enqueue({ body: { id: 'x', object: 'chat.completion', choices: [] } });
    const result = await postChat(chatEvent('/{chat_id}/chat', { content: 'Hello' }));
    expect(result.statusCode).toBe(502);
    expect(body(result)).toEqual({
      error: { code: 'upstream_invalid_response', message: expect.any(String) },
    });
  });

  it('returns 400 for content over the length limit before calling OpenAI', async () => {
    const result = await postChat(chatEvent('/{chat_id}/chat', { content: 'x'.repeat(100_001) }));
    expect(result.statusCode).toBe(400);
    expect(fake.requests).toEqual([]);
  });
});

describe('POST /{chat_id}/img', () => {
  it('sends a text part and an image_url part with the history, and stores the turn', async () => {
    await postChat(chatEvent('/{chat_id}/chat', { content: 'before' }));
    fake.reset();

    const result = await postImg(
      chatEvent('/{chat_id}/img', { content: "What's on this image?", url: 'https://example.com/cat.png' }),
    );

    expect(result.statusCode).toBe(200);
    expect(body(result)).toMatchObject({ role: 'assistant', tokens: { total_tokens: expect.any(Number) } });
    const sent = fake.requestsTo('/chat/completions')[0]?.body as { messages: unknown[] };
    expect(sent.messages).toHaveLength(3);
    expect(sent.messages[2]).toEqual({
      role: 'user',
      content: [
        { type: 'text', text: "What's on this image?" },
        { type: 'image_url', image_url: { url: 'https://example.com/cat.png' } },
      ],
    });
    expect(body(await getChat(chatEvent('/{chat_id}/chat')))).toHaveLength(4);
  });

  it.each([
    ['a missing url', { content: 'what?' }],
    ['a non-http url', { content: 'what?', url: 'ftp://example.com/a.png' }],
    ['a javascript url', { content: 'what?', url: 'javascript:alert(1)' }],
    ['a url that is not a string', { content: 'what?', url: ['https://example.com'] }],
  ])('returns 400 for %s without calling OpenAI', async (_, json) => {
    const result = await postImg(chatEvent('/{chat_id}/img', json));
    expect(result.statusCode).toBe(400);
    expect(body(result)).toEqual({ error: { code: expect.any(String), message: expect.any(String) } });
    expect(fake.requests).toEqual([]);
  });
});

describe('POST /{chat_id}/clear', () => {
  it('deletes the messages and keeps the chat system prompt', async () => {
    await postChatSystem(chatEvent('/{chat_id}/system', { content: 'keep me' }));
    await postChat(chatEvent('/{chat_id}/chat', { content: 'Hello' }));

    const result = await postClear(chatEvent('/{chat_id}/clear'));

    expect(result.statusCode).toBe(200);
    expect(body(result)).toEqual({});
    expect(body(await getChat(chatEvent('/{chat_id}/chat')))).toEqual([]);
    expect(body(await getChatSystem(chatEvent('/{chat_id}/system')))).toEqual({ content: 'keep me' });
  });
});

describe('Redis keys', () => {
  it('puts every key of a chat under one hash tag naming its tenant and chat', async () => {
    await postChatSystem(chatEvent('/{chat_id}/system', { content: 'p' }));
    await postChat(chatEvent('/{chat_id}/chat', { content: 'Hello' }));

    const keys = (await tenantKeys(chatId)).sort();

    expect(keys).toEqual([
      `chat-proxy:{c:${tenant}:${chatId}}:messages`,
      `chat-proxy:{c:${tenant}:${chatId}}:meta`,
      `chat-proxy:{c:${tenant}:${chatId}}:pairs`,
      `chat-proxy:{c:${tenant}:${chatId}}:system`,
    ]);
  });
});
