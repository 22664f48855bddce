import { afterAll, describe, expect, it } from 'vitest';
import { apiEvent, uniqueId } from '../support/events';
import { startFakeOpenAi } from '../support/fake-openai';
import { loadHandler } from '../support/handlers';
import { spawnRedisServer } from '../support/redis-server';

// This file owns its Redis, so it can stop and restart it under the handlers.
const redisServer = await spawnRedisServer();
const fake = await startFakeOpenAi();
process.env.REDIS_URL = redisServer.url;
process.env.OPENAI_BASE_URL = fake.baseURL;

const getSystem = await loadHandler('get-system');
const postChat = await loadHandler('post-chat');
const getChat = await loadHandler('get-chat');

afterAll(async () => {
  await redisServer.dispose();
  await fake.close();
});

const tenant = uniqueId('t');
const chatId = uniqueId('c');
const systemEvent = apiEvent({ resource: '/system', path: '/system', apiKeyId: tenant });
const chatEvent = (json?: unknown) =>
  apiEvent({ method: json ? 'POST' : 'GET', resource: '/{chat_id}/chat', chatId, apiKeyId: tenant, json });

describe('when Redis goes down and comes back', () => {
  it('answers 503 storage_unavailable while it is down, then serves again without a restart', async () => {
    expect((await getSystem(systemEvent)).statusCode).toBe(200);

    await redisServer.stop();
    const down = await getSystem(systemEvent);
    expect(down.statusCode).toBe(503);
    expect(JSON.parse(down.body)).toEqual({
      error: { code: 'storage_unavailable', message: expect.any(String) },
    });

    const turn = await postChat(chatEvent({ content: 'during the outage' }));
    expect(turn.statusCode).toBe(503);
    expect(fake.requests).toEqual([]);

    await redisServer.start();
    await expect.poll(async () => (await getSystem(systemEvent)).statusCode, { timeout: 10_000 }).toBe(200);
    expect((await postChat(chatEvent({ content: 'after' }))).statusCode).toBe(200);
    expect(JSON.parse((await getChat(chatEvent())).body)).toHaveLength(2);
  });
});
