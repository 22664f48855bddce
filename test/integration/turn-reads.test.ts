import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { uniqueId } from '../support/events';
import { freeClusterPort } from '../support/redis-cluster';

const { keys, RedisChatRepository } = await import('../../functions/shared/chat-repository');
const { CHAT_KEY_COUNT, scripts } = await import('../../functions/shared/redis-scripts');

const redis = new Redis(process.env.REDIS_URL as string);
const repositoryOn = (client: Redis) =>
  new RedisChatRepository({ maxPageBytes: 1 << 20 }, (operation) => operation(client));
const repository = repositoryOn(redis);

afterAll(() => {
  redis.disconnect();
});

const chatKeys = (chat: { tenant: string; chatId: string }) => {
  const k = keys.chat(chat);
  return [k.meta, k.messages, k.pairs, k.system, k.settings, k.lease, k.idempotencySet];
};

const turn = {
  user: { role: 'user', content: 'hi' },
  userTokens: 5,
  assistant: { role: 'assistant', content: 'hello' },
  assistantTokens: 5,
  usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 },
} as const;

describe('taking a chat for a turn', () => {
  it('takes the lease again for the token that holds it (a command re-sent after a dropped connection)', async () => {
    redis.defineCommand('beginTurnScript', { numberOfKeys: CHAT_KEY_COUNT, lua: scripts.beginTurn });
    const script = (...args: unknown[]) =>
      (redis as unknown as { beginTurnScript: (...args: unknown[]) => Promise<unknown[]> }).beginTurnScript(
        ...args,
      );
    const chat = { tenant: uniqueId('t'), chatId: uniqueId('c') };

    const first = await script(...chatKeys(chat), 'token-a', 10_000);
    const again = await script(...chatKeys(chat), 'token-a', 10_000);
    const other = await script(...chatKeys(chat), 'token-b', 10_000);

    expect(first[0]).toBe(1);
    expect(again[0]).toBe(1);
    expect(other[0]).toBe(0);
  });

  it("gives the lease back when the chat's data cannot be read after the lease was taken", async () => {
    const chat = { tenant: uniqueId('t'), chatId: uniqueId('c') };
    // A messages key of the wrong type fails the script after its SET (WRONGTYPE), and the read.
    await redis.set(keys.chat(chat).messages, 'not a list');

    await expect(repository.beginTurn(chat, 10_000)).rejects.toThrow(/WRONGTYPE/);

    expect(await redis.exists(keys.chat(chat).lease)).toBe(0);
  });

  it('sends a stored message that is not JSON as an empty one, keeping its pair whole', async () => {
    const chat = { tenant: uniqueId('t'), chatId: uniqueId('c') };
    const begun = await repository.beginTurn(chat, 10_000);
    if (!begun.acquired) throw new Error('busy');
    await repository.commitTurn(chat, begun.lease, turn);
    await redis.lset(keys.chat(chat).messages, -1, 'garbled{');

    const next = await repository.beginTurn(chat, 10_000);

    expect(next.acquired).toBe(true);
    if (!next.acquired) return;
    expect(next.lease.context.history.messages.map((message) => JSON.parse(String(message)))).toEqual([
      { role: 'user', content: 'hi' },
      { role: 'assistant', content: '' },
    ]);
  });

  it('reads the history only once the lease is held when asked not to read ahead', async () => {
    const chat = { tenant: uniqueId('t'), chatId: uniqueId('c') };
    const begun = await repository.beginTurn(chat, 10_000);
    if (!begun.acquired) throw new Error('busy');
    await repository.commitTurn(chat, begun.lease, turn);

    const held = await repository.beginTurn(chat, 10_000, { readAhead: false });
    const busy = await repository.beginTurn(chat, 10_000, { readAhead: false });

    expect(held.acquired && held.lease.context.history.messages.length).toBe(2);
    expect(busy.acquired).toBe(false);
  });
});

describe('on a single node in cluster mode, used without REDIS_CLUSTER', () => {
  let node: { redis: Redis; dispose: () => Promise<void> };

  afterAll(async () => {
    await node?.dispose();
  });

  it('falls back to scripts that keep to one slot, and stores the turn with its usage', async () => {
    node = await singleShardCluster();
    const clustered = repositoryOn(node.redis);
    const chat = { tenant: uniqueId('t'), chatId: uniqueId('c') };
    await node.redis.set(keys.tenant(chat.tenant).system, 'Be brief.');

    const begun = await clustered.beginTurn(chat, 10_000);
    if (!begun.acquired) throw new Error('busy');
    const stored = await clustered.commitTurn(chat, begun.lease, turn);

    expect(begun.lease.context.globalSystemPrompt).toBe('Be brief.');
    expect(stored).toBe('stored');
    expect(await clustered.getUsage(chat.tenant)).toEqual({
      prompt_tokens: 3,
      completion_tokens: 2,
      total_tokens: 5,
      turns: 1,
    });
  });

  it('adds the usage of a commit sent twice to the tenant once, and takes back only what it added', async () => {
    const clustered = repositoryOn(node.redis);
    const chat = { tenant: uniqueId('t'), chatId: uniqueId('c') };
    const begun = await clustered.beginTurn(chat, 10_000);
    if (!begun.acquired) throw new Error('busy');

    expect(await clustered.commitTurn(chat, begun.lease, turn)).toBe('stored');
    expect(await clustered.commitTurn(chat, begun.lease, turn)).toBe('stored');
    expect((await clustered.getUsage(chat.tenant)).turns).toBe(1);

    // A turn refused (its lease gone) takes back the usage it added beside the commit.
    const late = await clustered.beginTurn(chat, 10_000);
    if (!late.acquired) throw new Error('busy');
    await node.redis.del(keys.chat(chat).lease);
    expect(await clustered.commitTurn(chat, late.lease, turn)).toBe('lease_lost');
    expect((await clustered.getUsage(chat.tenant)).turns).toBe(1);
  });

  it("adds a turn's usage to its tenant once however often it is sent, and takes back only that", async () => {
    const tenant = keys.tenant(uniqueId('t'));
    const marker = tenant.counted('00000000-0000-4000-8000-000000000000');
    node.redis.defineCommand('tenantTurnScript', { numberOfKeys: 3, lua: scripts.tenantTurn });
    const send = (sign: 1 | -1) =>
      (node.redis as unknown as Record<string, (...args: unknown[]) => Promise<number>>).tenantTurnScript?.(
        tenant.usage,
        tenant.chats,
        marker,
        sign * 3,
        sign * 2,
        sign * 5,
        sign,
        Date.now(),
        '',
        60_000,
      );

    expect([await send(1), await send(1)]).toEqual([1, 0]);
    expect(await node.redis.hget(tenant.usage, 'turns')).toBe('1');
    expect([await send(-1), await send(-1)]).toEqual([1, 0]);
    expect(await node.redis.hget(tenant.usage, 'turns')).toBe('0');
  });
});

/** A redis-server in cluster mode serving every slot alone: a one-shard cluster. */
async function singleShardCluster(): Promise<{ redis: Redis; dispose: () => Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'chat-proxy-shard-'));
  const port = await freeClusterPort();
  const child: ChildProcess = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--dir', dir, '--save', ''],
    { stdio: 'ignore' },
  );
  const client = new Redis(port, '127.0.0.1', { retryStrategy: (attempt) => (attempt > 50 ? null : 100) });
  client.on('error', () => undefined);
  const dispose = async () => {
    client.disconnect();
    await new Promise<void>((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
    });
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await client.call('CLUSTER', 'ADDSLOTSRANGE', '0', '16383');
    const deadline = Date.now() + 10_000;
    while (!String(await client.call('CLUSTER', 'INFO')).includes('cluster_state:ok')) {
      if (Date.now() > deadline) throw new Error('the one-shard cluster did not come up');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } catch (error) {
    await dispose();
    throw error;
  }
  return { redis: client, dispose };
}
