import { Cluster, Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { APP_USER_ACCESS_STRING } from '../../infra/store-access';
import { clearEvent } from '../support/chat-scope';
import { apiEvent, uniqueId } from '../support/events';
import { startFakeOpenAi } from '../support/fake-openai';
import { loadHandler } from '../support/handlers';
import type { StreamedResponse } from '../support/lambda-stream';
import { keysPerNode, spawnRedisCluster } from '../support/redis-cluster';

// The same handlers against a real three-node Redis Cluster, as on MemoryDB in cluster mode, and
// as the user the stack creates there: with its access string, so a command the functions need
// and the user may not send fails here first.
const cluster = await spawnRedisCluster();
const fake = await startFakeOpenAi();
const APP_USER = 'chatproxy-app';
const APP_PASSWORD = 'cluster-test-password';
for (const port of cluster.ports) {
  const admin = new Redis(port, '127.0.0.1');
  await admin.call(
    'ACL',
    'SETUSER',
    APP_USER,
    'reset',
    ...APP_USER_ACCESS_STRING.split(' '),
    `>${APP_PASSWORD}`,
  );
  admin.disconnect();
}
const appUrl = new URL(cluster.url);
appUrl.username = APP_USER;
appUrl.password = APP_PASSWORD;
process.env.REDIS_URL = appUrl.toString();
process.env.REDIS_CLUSTER = 'true';
process.env.OPENAI_BASE_URL = fake.baseURL;

const postSystem = await loadHandler('post-system');
const postChatSystem = await loadHandler('post-chat-system');
const postChat = await loadHandler('post-chat');
const getChat = await loadHandler('get-chat');
const postClear = await loadHandler('post-clear');
const listChats = await loadHandler('list-chats');
const deleteChat = await loadHandler('delete-chat');
const deleteChats = await loadHandler('delete-chats');
const getUsage = await loadHandler('get-usage');

afterAll(async () => {
  await fake.close();
  await cluster.dispose();
});

const tenant = uniqueId('t');
const turn = (chatId: string, json: Record<string, unknown>, headers: Record<string, string> = {}) =>
  postChat(
    apiEvent({ method: 'POST', resource: '/{chat_id}/chat', chatId, apiKeyId: tenant, json, headers }),
  );
const history = async (chatId: string) =>
  JSON.parse(
    (await getChat(apiEvent({ resource: '/{chat_id}/chat', chatId, apiKeyId: tenant }))).body,
  ) as unknown[];
const tenantCall = (invoke: typeof getUsage, method: string, resource: string) =>
  invoke(apiEvent({ method, resource, path: resource, apiKeyId: tenant }));
const setTenantPrompt = (headers: Record<string, string> = {}) =>
  postSystem(
    apiEvent({
      method: 'POST',
      resource: '/system',
      path: '/system',
      apiKeyId: tenant,
      json: { content: 'be brief' },
      headers,
    }),
  );

describe('on a Redis Cluster', () => {
  const chats = Array.from({ length: 12 }, (_, i) => `chat-${i}`);

  it('runs turns, streamed and buffered, with the tenant prompt from another slot', async () => {
    await setTenantPrompt();

    for (const [i, chatId] of chats.entries()) {
      expect((await turn(chatId, { content: `hello ${i}`, stream: i % 2 === 0 })).statusCode).toBe(200);
    }

    expect(fake.completions()[0]?.messages[0]).toEqual({ role: 'system', content: 'be brief' });
    expect(await history('chat-3')).toHaveLength(2);
    expect((await keysPerNode(cluster.ports)).filter((count) => count > 0).length).toBeGreaterThan(1);
  });

  it('keeps idempotency, clear, usage and the chat index right across slots', async () => {
    const key = { 'Idempotency-Key': uniqueId('k') };
    await turn('chat-0', { content: 'again' }, key);
    const replay = await turn('chat-0', { content: 'again' }, key);
    // A keyed clear keeps its answer in its script, in the chat's slot, and so do keyed system
    // prompts (the tenant's in the tenant's slot): each one's second send replays the first.
    const answeredThenReplayed = async (
      send: (headers: Record<string, string>) => Promise<StreamedResponse>,
    ) => {
      const headers = { 'Idempotency-Key': uniqueId('k') };
      expect((await send(headers)).statusCode).toBe(200);
      expect((await send(headers)).headers['Idempotent-Replayed']).toBe('true');
    };
    await answeredThenReplayed((headers) => postClear(clearEvent({ tenant, chatId: 'chat-1' }, headers)));
    await answeredThenReplayed(setTenantPrompt);
    await answeredThenReplayed((headers) =>
      postChatSystem(
        apiEvent({
          method: 'POST',
          resource: '/{chat_id}/system',
          chatId: 'chat-2',
          apiKeyId: tenant,
          json: { content: 'answer in French' },
          headers,
        }),
      ),
    );

    expect(replay.headers['Idempotent-Replayed']).toBe('true');
    expect(await history('chat-1')).toEqual([]);
    expect(JSON.parse((await tenantCall(getUsage, 'GET', '/usage')).body).turns).toBe(13);
    expect(JSON.parse((await tenantCall(listChats, 'GET', '/chats')).body).chats).toHaveLength(12);
  });

  it('deletes one chat, then erases the rest on every node', async () => {
    await deleteChat(
      apiEvent({ method: 'DELETE', resource: '/{chat_id}', chatId: 'chat-5', apiKeyId: tenant }),
    );

    const erased = JSON.parse((await tenantCall(deleteChats, 'DELETE', '/chats')).body);

    expect(erased).toEqual({ deleted: 11 });
    expect(JSON.parse((await tenantCall(listChats, 'GET', '/chats')).body).chats).toEqual([]);
  });

  it("gives the functions' user nothing beyond the commands they send, on the service's keys", async () => {
    const app = new Cluster([{ host: '127.0.0.1', port: cluster.ports[0] as number }], {
      redisOptions: { username: APP_USER, password: APP_PASSWORD },
    });
    try {
      expect(await app.set('chat-proxy:{t:acl}:probe', '1')).toBe('OK');
      for (const refused of [
        () => app.set('elsewhere:{t:acl}:probe', '1'),
        () => app.call('FLUSHALL'),
        () => app.call('CONFIG', 'GET', 'maxmemory'),
        () => app.call('KEYS', '*'),
        () => app.call('SCRIPT', 'FLUSH'),
        () => app.call('CLIENT', 'KILL', 'ID', '1'),
      ]) {
        await expect(refused()).rejects.toThrow(/NOPERM/);
      }
    } finally {
      app.disconnect();
    }
  });
});
