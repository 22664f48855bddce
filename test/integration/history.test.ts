import { encodeChat } from 'gpt-tokenizer/encoding/o200k_base';
import { Redis } from 'ioredis';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { apiEvent, uniqueId } from '../support/events';
import { startFakeOpenAi } from '../support/fake-openai';
import { loadHandler } from '../support/handlers';

const BUDGET = 2000;
const fake = await startFakeOpenAi();
process.env.OPENAI_BASE_URL = fake.baseURL;
process.env.MAX_CONTEXT_TOKENS = String(BUDGET);
process.env.OPENAI_MODELS = 'gpt-4.1-mini,gpt-4o-mini';

const { keys, RedisChatRepository } = await import('../../functions/shared/chat-repository');
const { messageTokens, REPLY_PRIMING_TOKENS } = await import('../../functions/shared/tokens');
const postChat = await loadHandler('post-chat');
const getChat = await loadHandler('get-chat');
const redis = new Redis(process.env.REDIS_URL as string);

afterAll(async () => {
  redis.disconnect();
  await fake.close();
});

beforeEach(() => fake.reset());

/** Stores `pairs` turns through the repository itself, much faster than through the handler. */
async function seed(tenant: string, chatId: string, pairs: number): Promise<void> {
  const repository = new RedisChatRepository({ maxPageBytes: 1 << 20 }, (operation) => operation(redis));
  for (let i = 0; i < pairs; i += 1) {
    const begun = await repository.beginTurn({ tenant, chatId }, 10_000);
    if (!begun.acquired) throw new Error('seed: chat busy');
    const user = { role: 'user', content: `question ${i}` } as const;
    const assistant = { role: 'assistant', content: `answer ${i} ${'word '.repeat(i % 7)}` } as const;
    await repository.commitTurn({ tenant, chatId }, begun.lease, {
      user,
      userTokens: messageTokens(user.content),
      assistant,
      assistantTokens: messageTokens(assistant.content),
      usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
    });
  }
}

type Message = { id: number; role: string; content: string; created_at: string };
const page = async (tenant: string, chatId: string, query: Record<string, string>) => {
  const result = await getChat(
    apiEvent({ resource: '/{chat_id}/chat', chatId, apiKeyId: tenant, queryStringParameters: query }),
  );
  return {
    status: result.statusCode,
    messages: JSON.parse(result.body) as Message[],
    link: result.headers.Link,
  };
};
const cursorOf = (link: string | undefined, rel: string): Record<string, string> | undefined => {
  const match = link?.split(', ').find((part) => part.endsWith(`rel="${rel}"`));
  const query = match && /^<\?([^>]*)>/.exec(match)?.[1];
  return query === undefined ? undefined : Object.fromEntries(new URLSearchParams(query));
};

/** One turn on a chat, as a client sends it. */
const sendTurn = (tenant: string, chatId: string, content: string) =>
  postChat(
    apiEvent({ method: 'POST', resource: '/{chat_id}/chat', chatId, apiKeyId: tenant, json: { content } }),
  );

describe('a chat with 10,000 stored messages', () => {
  const tenant = uniqueId('t');
  const chatId = uniqueId('long');
  const seeded = seed(tenant, chatId, 5000);

  it('sends OpenAI only the newest whole pairs that fit the token budget', async () => {
    await seeded;

    const result = await sendTurn(tenant, chatId, 'and now?');

    expect(result.statusCode).toBe(200);
    const sent = fake.completions()[0]?.messages ?? [];
    const history = sent.slice(0, -1);
    expect(history.length).toBeGreaterThan(2 * 64); // more than the lease's first read holds
    expect(history.length % 2).toBe(0);
    for (const message of sent) expect(Object.keys(message)).toEqual(['role', 'content']);
    expect(history[0]?.role).toBe('user');
    expect(String(history.at(-1)?.content)).toMatch(/^answer 4999 /);
    const used =
      sent.reduce((sum, message) => sum + messageTokens(String(message.content)), 0) + REPLY_PRIMING_TOKENS;
    expect(used).toBeLessThanOrEqual(BUDGET);
    const oldestSent = Number(/question (\d+)/.exec(String(history[0]?.content))?.[1]);
    const nextOlderPair =
      messageTokens(`question ${oldestSent - 1}`) +
      messageTokens(`answer ${oldestSent - 1} ${'word '.repeat((oldestSent - 1) % 7)}`);
    expect(used + nextOlderPair).toBeGreaterThan(BUDGET);
  });

  it('pages back through every message with limit=50, with no gap or repeat', async () => {
    await seeded;
    const seen: number[] = [];
    let query: Record<string, string> | undefined = { limit: '50' };
    let pages = 0;
    while (query) {
      const result = await page(tenant, chatId, query);
      expect(result.status).toBe(200);
      expect(result.messages.length).toBeLessThanOrEqual(50);
      seen.unshift(...result.messages.map((message) => message.id));
      query = cursorOf(result.link, 'next');
      pages += 1;
    }
    expect(pages).toBe(201);
    expect(seen).toEqual(Array.from({ length: 10_002 }, (_, i) => i));
  });

  it('pages forward from a cursor with after=, and links back with prev', async () => {
    await seeded;

    const result = await page(tenant, chatId, { after: '99', limit: '10' });

    expect(result.messages.map((message) => message.id)).toEqual(
      Array.from({ length: 10 }, (_, i) => 100 + i),
    );
    expect(cursorOf(result.link, 'next')).toEqual({ after: '109', limit: '10' });
    expect(cursorOf(result.link, 'prev')).toEqual({ before: '100', limit: '10' });
  });

  it('answers the newest page that fits the size limit when no limit is given', async () => {
    await seeded;

    const result = await page(tenant, chatId, {});

    expect(result.messages.length).toBe(1000);
    expect(result.messages.at(-1)?.id).toBe(10_001);
    expect(cursorOf(result.link, 'next')).toEqual({ before: String(result.messages[0]?.id) });
  });

  it.each([
    [{ limit: '0' }],
    [{ limit: '1001' }],
    [{ limit: 'ten' }],
    [{ before: '-1' }],
    [{ before: '5', after: '1' }],
  ])('returns 400 invalid_query for %j', async (query) => {
    const result = await getChat(
      apiEvent({ resource: '/{chat_id}/chat', chatId, apiKeyId: tenant, queryStringParameters: query }),
    );
    expect(result.statusCode).toBe(400);
    expect(JSON.parse(result.body).error.code).toBe('invalid_query');
  });
});

describe('token counting', () => {
  it.each([
    [[{ role: 'user', content: 'Hello there, how are you?' }]],
    [
      [
        { role: 'system', content: 'You are a terse assistant. Answer in French.' },
        { role: 'user', content: 'What is the capital of Australia? Explain briefly.' },
        { role: 'assistant', content: 'Canberra — choisie comme compromis entre Sydney et Melbourne.' },
        { role: 'user', content: '日本の首都はどこですか? 🙂' },
      ],
    ],
  ])('matches the tokenizer on a fixed sample', (messages) => {
    const ours =
      messages.reduce((sum, message) => sum + messageTokens(message.content), 0) + REPLY_PRIMING_TOKENS;

    expect(ours).toBe(encodeChat(messages as Parameters<typeof encodeChat>[0], 'gpt-4o').length);
  });

  it('sends stored messages as OpenAI takes them, whatever their stored shape', async () => {
    const tenant = uniqueId('t');
    const chatId = uniqueId('c');
    await seed(tenant, chatId, 3);
    const stored = keys.chat({ tenant, chatId }).messages;
    // A message written without an id or the fields after the content, and one whose content
    // holds the text the fast path looks for.
    await redis.lset(stored, 0, JSON.stringify({ role: 'user', content: 'an older shape' }));
    await redis.lset(
      stored,
      2,
      JSON.stringify({
        id: 2,
        role: 'user',
        content: 'quoted: ,"created_at":1,"role":"x"',
        created_at: 1,
        tokens: 20,
      }),
    );

    const result = await sendTurn(tenant, chatId, 'next');

    expect(result.statusCode).toBe(200);
    expect(fake.completions()[0]?.messages.slice(0, 3)).toEqual([
      { role: 'user', content: 'an older shape' },
      { role: 'assistant', content: 'answer 0 ' },
      { role: 'user', content: 'quoted: ,"created_at":1,"role":"x"' },
    ]);
  });

  it('sends history stored before messages carried token counts, sizing each by its bytes', async () => {
    const tenant = uniqueId('t');
    const chatId = uniqueId('c');
    await seed(tenant, chatId, 3);
    const chatKeys = keys.chat({ tenant, chatId });
    await redis.del(chatKeys.pairs);
    const stored = await redis.lrange(chatKeys.messages, 0, -1);
    for (const [index, raw] of stored.entries()) {
      const { role, content } = JSON.parse(raw) as { role: string; content: string };
      await redis.lset(chatKeys.messages, index, JSON.stringify({ role, content }));
    }

    const result = await sendTurn(tenant, chatId, 'next');

    expect(result.statusCode).toBe(200);
    expect(fake.completions()[0]?.messages.map((message) => message.content)).toEqual([
      'question 0',
      'answer 0 ',
      'question 1',
      'answer 1 word ',
      'question 2',
      'answer 2 word word ',
      'next',
    ]);
  });

  it("counts the tokenizer's special tokens in a message as the plain text they are to OpenAI", async () => {
    const content = 'Why does my log show <|endoftext|> and <|im_start|>?';

    const result = await sendTurn(uniqueId('t'), uniqueId('c'), content);

    expect(result.statusCode).toBe(200);
    expect(messageTokens(content)).toBeGreaterThan(10);
  });

  it('refuses a message that cannot fit the budget even alone, before calling OpenAI', async () => {
    const tenant = uniqueId('t');
    const chatId = uniqueId('c');
    const result = await sendTurn(tenant, chatId, 'lorem ipsum '.repeat(2000));

    expect(result.statusCode).toBe(400);
    expect(JSON.parse(result.body).error.code).toBe('message_too_large');
    expect(fake.requests).toEqual([]);
    expect((await sendTurn(tenant, chatId, 'short')).statusCode).toBe(200);
  });
});

describe("a stored reply's size", () => {
  const content = 'The answer is forty-two, as everyone knows by now.';
  const completion = (usage: unknown) => ({
    body: {
      id: 'chatcmpl-size',
      object: 'chat.completion',
      model: 'gpt-4.1-mini',
      choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }],
      ...(usage === undefined ? {} : { usage }),
    },
  });
  const storedReplyTokens = async (usage: unknown): Promise<number> => {
    const tenant = uniqueId('t');
    const chatId = uniqueId('c');
    fake.enqueue(completion(usage));
    const result = await sendTurn(tenant, chatId, 'hi');
    expect(result.statusCode).toBe(200);
    const [, reply] = await redis.lrange(keys.chat({ tenant, chatId }).messages, 0, -1);
    return (JSON.parse(reply ?? '{}') as { tokens: number }).tokens;
  };

  it('is what OpenAI counted for it, less the hidden reasoning tokens, plus the chat format', async () => {
    const reported = messageTokens(content) - 4 + 1; // a figure the tokenizer would not give

    const tokens = await storedReplyTokens({
      prompt_tokens: 9,
      completion_tokens: reported + 300,
      total_tokens: reported + 309,
      completion_tokens_details: { reasoning_tokens: 300 },
    });

    expect(tokens).toBe(reported + 4);
  });

  it('is counted by the tokenizer when OpenAI reports no usage', async () => {
    expect(await storedReplyTokens(undefined)).toBe(messageTokens(content));
  });

  it('is counted by the tokenizer when the reported figure cannot be right', async () => {
    const usage = (completion: number) => ({
      prompt_tokens: 9,
      completion_tokens: completion,
      total_tokens: 9 + completion,
    });

    expect(await storedReplyTokens(usage(1))).toBe(messageTokens(content));
    expect(await storedReplyTokens(usage(content.length + 1))).toBe(messageTokens(content));
  });
});
