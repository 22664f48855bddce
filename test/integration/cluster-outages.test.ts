import { type Cluster, Redis } from 'ioredis';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { apiEvent, uniqueId } from '../support/events';
import { startFakeOpenAi } from '../support/fake-openai';
import { reply, startFakeSecretsManager } from '../support/fake-secrets-manager';
import { type Invoke, loadHandler } from '../support/handlers';
import { spawnRedisCluster } from '../support/redis-cluster';
import { freePort } from '../support/redis-server';

// outages.test.ts for a cluster (provisioned storage is one): an unreachable cluster must answer
// 503 as fast as a single node does, not leave requests waiting for it until the Lambda times out.
const cluster = await spawnRedisCluster();
const fake = await startFakeOpenAi();
process.env.REDIS_CLUSTER = 'true';
process.env.OPENAI_BASE_URL = fake.baseURL;

afterAll(async () => {
  await fake.close();
  await cluster.dispose();
});

const tenant = uniqueId('t');
const systemEvent = apiEvent({ resource: '/system', path: '/system', apiKeyId: tenant });
const turnEvent = (content: string) =>
  apiEvent({ method: 'POST', resource: '/{chat_id}/chat', chatId: 'c', apiKeyId: tenant, json: { content } });

/** The answer and how long it took. */
async function timed(invoke: Invoke, event: ReturnType<typeof apiEvent>) {
  const started = Date.now();
  const result = await invoke(event);
  return {
    status: result.statusCode,
    code: JSON.parse(result.body || '{}').error?.code,
    ms: Date.now() - started,
  };
}

describe('when the Redis Cluster is unreachable', () => {
  it('answers 503 storage_unavailable within a few seconds from a cold start', async () => {
    process.env.REDIS_URL = `redis://127.0.0.1:${await freePort()}`;
    vi.resetModules();
    const getSystem = await loadHandler('get-system');

    const first = await timed(getSystem, systemEvent);
    const second = await timed(getSystem, systemEvent);

    expect(first).toMatchObject({ status: 503, code: 'storage_unavailable' });
    expect(second).toMatchObject({ status: 503, code: 'storage_unavailable' });
    expect(first.ms).toBeLessThan(5000);
    expect(second.ms).toBeLessThan(5000);
  });
});

describe('when the Redis Cluster goes down and comes back', () => {
  it('answers 503 fast while it is down, then serves again without a restart', async () => {
    process.env.REDIS_URL = cluster.url;
    vi.resetModules();
    const getSystem = await loadHandler('get-system');
    const postChat = await loadHandler('post-chat');
    expect((await getSystem(systemEvent)).statusCode).toBe(200);

    await cluster.stop();
    const down = await timed(getSystem, systemEvent);
    const turn = await timed(postChat, turnEvent('during the outage'));

    expect(down).toMatchObject({ status: 503, code: 'storage_unavailable' });
    expect(turn).toMatchObject({ status: 503, code: 'storage_unavailable' });
    expect(down.ms).toBeLessThan(5000);
    expect(turn.ms).toBeLessThan(5000);
    expect(fake.requests).toEqual([]);

    await cluster.start();
    await expect.poll(async () => (await getSystem(systemEvent)).statusCode, { timeout: 15_000 }).toBe(200);
    expect((await postChat(turnEvent('after'))).statusCode).toBe(200);
  }, 60_000);

  it('rides out a reconnect: a request while every connection of the client is being re-made is served', async () => {
    process.env.REDIS_URL = cluster.url;
    vi.resetModules();
    const getSystem = await loadHandler('get-system');
    const postChat = await loadHandler('post-chat');
    const { getRedis } = await import('../../functions/shared/redis');
    expect((await getSystem(systemEvent)).statusCode).toBe(200);
    const client = (await getRedis()) as Cluster;
    // Ready means every primary connected, not only the one asked for the layout: a shard's
    // first commands would otherwise bounce while its connection opens.
    expect(client.nodes('master').map((node) => node.status)).toEqual(['ready', 'ready', 'ready']);

    // As when a server's idle timeout closes a frozen Lambda's connections, or on a failover: the
    // client drops its layout and makes it again, which takes it out of "ready" for a moment.
    for (const port of cluster.ports) {
      const admin = new Redis(port, '127.0.0.1');
      await admin.call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
      admin.disconnect();
    }
    await expect.poll(() => client.status, { interval: 1, timeout: 2000 }).not.toBe('ready');

    const warnings: string[] = [];
    const warned = (warning: Error) => warnings.push(warning.name);
    process.on('warning', warned);
    // Many at once (as through the dev server): they share one wait for the cluster.
    const [turn, ...systems] = await Promise.all([
      postChat(turnEvent('during a reconnect')),
      ...Array.from({ length: 15 }, () => getSystem(systemEvent)),
    ]);
    process.off('warning', warned);

    expect(turn?.statusCode).toBe(200);
    expect(systems.map((system) => system.statusCode)).toEqual(Array(15).fill(200));
    expect(warnings).toEqual([]);
  });
});

describe('when the Redis Cluster refuses the password', () => {
  it('answers 503, then reads the secret again and serves with the rotated password', async () => {
    const arn = 'arn:aws:secretsmanager:us-east-1:000000000000:secret:redis-url-AbCdEf';
    for (const port of cluster.ports) {
      const admin = new Redis(port, '127.0.0.1');
      await admin.call('ACL', 'SETUSER', 'app', 'reset', 'on', '~*', '+@all', '>rotated-password');
      admin.disconnect();
    }
    const secretsManager = await startFakeSecretsManager();
    try {
      Object.assign(process.env, secretsManager.env);
      process.env.REDIS_SECRET_ARN = arn;
      delete process.env.REDIS_URL;
      const url = (password: string) => cluster.url.replace('redis://', `redis://app:${password}@`);
      secretsManager.enqueue(arn, reply.secret(url('old-password')));
      secretsManager.put(arn, url('rotated-password'));
      vi.resetModules();
      const getSystem = await loadHandler('get-system');

      const refused = await timed(getSystem, systemEvent);
      const served = await timed(getSystem, systemEvent);

      expect(refused).toMatchObject({ status: 503, code: 'storage_unavailable' });
      expect(refused.ms).toBeLessThan(5000);
      expect(served.status).toBe(200);
      expect(secretsManager.readsOf(arn)).toBe(2);
    } finally {
      delete process.env.REDIS_SECRET_ARN;
      await secretsManager.close();
    }
  });
});
