import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { apiEvent, uniqueId } from '../support/events';
import { startFakeOpenAi } from '../support/fake-openai';
import { loadHandler } from '../support/handlers';

// A deployment TTL of about two seconds (CHAT_TTL_DAYS takes fractions), so expiry happens in the test.
const fake = await startFakeOpenAi();
process.env.OPENAI_BASE_URL = fake.baseURL;
process.env.CHAT_TTL_DAYS = String(2 / 86_400);

const { RedisChatRepository } = await import('../../functions/shared/chat-repository');
const postChat = await loadHandler('post-chat');
const postSettings = await loadHandler('post-settings');
const getInfo = await loadHandler('get-chat-info');
const listChats = await loadHandler('list-chats');
const redis = new Redis(process.env.REDIS_URL as string);

afterAll(async () => {
  redis.disconnect();
  await fake.close();
});

const tenant = uniqueId('t');
const turn = (chatId: string) =>
  postChat(
    apiEvent({
      method: 'POST',
      resource: '/{chat_id}/chat',
      chatId,
      apiKeyId: tenant,
      json: { content: 'hi' },
    }),
  );
const listed = async () =>
  (
    JSON.parse((await listChats(apiEvent({ resource: '/chats', path: '/chats', apiKeyId: tenant }))).body)
      .chats as {
      id: string;
    }[]
  ).map((chat) => chat.id);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('retention', () => {
  it('expires a chat after the deployment TTL, sliding on each write, and drops it from GET /chats', async () => {
    const chatId = uniqueId('c');
    await turn(chatId);
    await sleep(1200);
    await turn(chatId);
    await sleep(1200);

    expect((await getInfo(apiEvent({ resource: '/{chat_id}', chatId, apiKeyId: tenant }))).statusCode).toBe(
      200,
    );
    expect(await listed()).toEqual([chatId]);

    await sleep(1500);

    expect((await getInfo(apiEvent({ resource: '/{chat_id}', chatId, apiKeyId: tenant }))).statusCode).toBe(
      404,
    );
    expect(await redis.keys(`*{c:${tenant}:${chatId}}*`)).toEqual([]);
    expect(await listed()).toEqual([]);
    expect(await redis.zcard(`chat-proxy:{t:${tenant}}:chats`)).toBe(0);
  }, 20_000);

  it("lets a chat's ttl_days override the deployment's", async () => {
    const chatId = uniqueId('c');
    await postSettings(
      apiEvent({
        method: 'POST',
        resource: '/{chat_id}/settings',
        chatId,
        apiKeyId: tenant,
        json: { ttl_days: 3 },
      }),
    );
    await turn(chatId);

    const ttls = await Promise.all(
      ['meta', 'messages', 'pairs', 'settings'].map((name) =>
        redis.ttl(`chat-proxy:{c:${tenant}:${chatId}}:${name}`),
      ),
    );

    for (const ttl of ttls) {
      expect(ttl).toBeGreaterThan(3 * 86_400 - 10);
      expect(ttl).toBeLessThanOrEqual(3 * 86_400);
    }
  });
});

describe('retention without a deployment TTL', () => {
  const repository = new RedisChatRepository({ maxPageBytes: 1 << 20 }, (operation) => operation(redis));
  const chatKeyTtls = async (chatId: string) =>
    Promise.all(
      ['meta', 'messages', 'pairs', 'settings'].map((name) =>
        redis.ttl(`chat-proxy:{c:${tenant}:${chatId}}:${name}`),
      ),
    );
  const storeTurn = async (chatId: string) => {
    const begun = await repository.beginTurn({ tenant, chatId }, 10_000);
    if (!begun.acquired) throw new Error('chat busy');
    await repository.commitTurn({ tenant, chatId }, begun.lease, {
      user: { role: 'user', content: 'hi' },
      userTokens: 5,
      assistant: { role: 'assistant', content: 'hello' },
      assistantTokens: 5,
      usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
    });
  };

  it('keeps every key of a chat once its ttl_days is unset, and through later turns', async () => {
    const chatId = uniqueId('c');
    await repository.updateSettings({ tenant, chatId }, { ttl_days: 1 });
    await storeTurn(chatId);
    for (const ttl of await chatKeyTtls(chatId)) expect(ttl).toBeGreaterThan(86_000);

    await repository.updateSettings({ tenant, chatId }, { ttl_days: null });
    await storeTurn(chatId);

    // The settings hash is gone with its last field (-2); every other key is kept (-1).
    expect(await chatKeyTtls(chatId)).toEqual([-1, -1, -1, -2]);
  });
});
