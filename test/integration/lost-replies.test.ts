import { createHash } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clearEvent, freshChatPerTest, historyOf, turnEvent, warmUpTurn } from '../support/chat-scope';
import { apiEvent, uniqueId } from '../support/events';
import { startFakeOpenAi } from '../support/fake-openai';
import { loadHandler } from '../support/handlers';
import { startRedisProxy } from '../support/redis-proxy';

// The handlers reach Redis through a proxy that can lose or delay the reply to one command, as a
// network can: the command ran, the turn does not know. A delay well past the command timeout
// makes a timed-out command; the timeout leaves a lost reply's re-send ample time on a busy machine.
const direct = new URL(process.env.REDIS_URL as string);
const proxy = await startRedisProxy({ host: direct.hostname, port: Number(direct.port || 6379) });
const fake = await startFakeOpenAi();
process.env.REDIS_URL = proxy.url;
process.env.REDIS_COMMAND_TIMEOUT_MS = '1000';
const LATE_MS = 2500;
process.env.OPENAI_BASE_URL = fake.baseURL;
const { keys, RedisChatRepository } = await import('../../functions/shared/chat-repository');
const { scripts } = await import('../../functions/shared/redis-scripts');

const postChat = await loadHandler('post-chat');
const getChat = await loadHandler('get-chat');
const getUsage = await loadHandler('get-usage');
const postClear = await loadHandler('post-clear');
const postChatSystem = await loadHandler('post-chat-system');
const getChatSystem = await loadHandler('get-chat-system');
const postSystem = await loadHandler('post-system');
const getSystem = await loadHandler('get-system');
const redis = new Redis(direct.toString());

// No fault is armed for the first turn, which loads the tokenizer.
beforeAll(() => warmUpTurn(postChat));

afterAll(async () => {
  redis.disconnect();
  await proxy.close();
  await fake.close();
});

const scope = freshChatPerTest(fake);
const turn = (json: Record<string, unknown>, headers: Record<string, string> = {}) =>
  turnEvent(scope, json, headers);
const history = () => historyOf(getChat, scope);
const usage = async () =>
  JSON.parse(
    (await getUsage(apiEvent({ resource: '/usage', path: '/usage', apiKeyId: scope.tenant }))).body,
  ) as {
    turns: number;
  };

describe('a turn whose commit ran but whose reply was lost', () => {
  it('answers 200 once the re-sent commit finds its own turn stored, and stores it once', async () => {
    // Only the commit carries the message itself; the lease script and the read do not.
    const content = uniqueId('lost reply');
    proxy.loseReplyTo(content);

    const result = await postChat(turn({ content }));

    expect(proxy.triggered).toBe(true);
    expect(result.statusCode).toBe(200);
    expect(JSON.parse(result.body).content).toContain(content);
    expect((await history()).map((message) => message.role)).toEqual(['user', 'assistant']);
    expect((await usage()).turns).toBe(1);
    expect(fake.requestsTo('/chat/completions')).toHaveLength(1);
  });

  it('ends a streamed turn with its done event, stored once', async () => {
    const content = uniqueId('lost streamed reply');
    proxy.loseReplyTo(content);

    const result = await postChat(turn({ content, stream: true }));

    expect(proxy.triggered).toBe(true);
    expect(result.events.map((event) => event.event).at(-1)).toBe('done');
    expect(await history()).toHaveLength(2);
  });
});

describe('a commit sent twice (the repository)', () => {
  const repository = new RedisChatRepository({ maxPageBytes: 1 << 20 }, (operation) => operation(redis));
  const record = (content: string) => ({
    user: { role: 'user' as const, content },
    userTokens: 5,
    assistant: { role: 'assistant' as const, content: `re: ${content}` },
    assistantTokens: 6,
    usage: { prompt_tokens: 5, completion_tokens: 6, total_tokens: 11 },
  });
  /**
   * A claimed idempotency record of the chat, with the keys a keyed chat script takes (the chat's
   * seven, then the record) and the arguments that keep its answer (response, keepSeconds,
   * fingerprint): what the repository sends, to send again as ioredis would.
   */
  const claimed = async (chat: { tenant: string; chatId: string }) => {
    const id = uniqueId('record').replace(/[^A-Za-z0-9_-]/g, '-');
    await repository.claimIdempotency(chat, id, 'body', 60_000);
    const k = keys.chat(chat);
    return {
      scriptKeys: [
        k.meta,
        k.messages,
        k.pairs,
        k.system,
        k.settings,
        k.lease,
        k.idempotencySet,
        k.idempotency(id),
      ],
      kept: [JSON.stringify({ statusCode: 200, headers: {}, body: '{}' }), 60, 'body'],
    };
  };
  const begin = async () => {
    const begun = await repository.beginTurn({ ...scope }, 10_000);
    if (!begun.acquired) throw new Error('the chat is busy');
    return begun.lease;
  };

  it('answers stored again without storing again or counting the usage twice', async () => {
    const chat = { ...scope };
    const lease = await begin();

    expect(await repository.commitTurn(chat, lease, record('once'))).toBe('stored');
    expect(await repository.commitTurn(chat, lease, record('once'))).toBe('stored');

    expect((await repository.getMessages(chat, {})).messages).toHaveLength(2);
    expect((await repository.getUsage(scope.tenant)).turns).toBe(1);
    expect((await repository.getChatInfo(chat))?.usage.turns).toBe(1);
  });

  it('answers stored again while the next turn already holds the chat', async () => {
    const chat = { ...scope };
    const first = await begin();
    expect(await repository.commitTurn(chat, first, record('first'))).toBe('stored');
    const next = await begin();

    expect(await repository.commitTurn(chat, first, record('first'))).toBe('stored');
    expect(await repository.commitTurn(chat, next, record('next'))).toBe('stored');
    expect((await repository.getMessages(chat, {})).messages).toHaveLength(4);
  });

  it('answers cleared again to a commit refused for a clear', async () => {
    const chat = { ...scope };
    const lease = await begin();
    await repository.clearMessages(chat);

    expect(await repository.commitTurn(chat, lease, record('gone'))).toBe('cleared');
    expect(await repository.commitTurn(chat, lease, record('gone'))).toBe('cleared');
    expect((await repository.getMessages(chat, {})).messages).toEqual([]);
  });

  it('does not clear again when a keyed clear arrives again after another clear and a turn', async () => {
    // The script sent twice with the same arguments, as ioredis re-sends it (or as a copy held up
    // past its timeout arrives): another clear and a turn came in between.
    const chat = { ...scope };
    const { scriptKeys, kept } = await claimed(chat);
    const clearA = () =>
      redis.eval(scripts.clearMessages, 8, ...scriptKeys, Date.now(), 0, ...kept, 'token-a');
    await clearA();
    await repository.clearMessages(chat);
    expect(await repository.commitTurn(chat, await begin(), record('after the clears'))).toBe('stored');

    await clearA();

    expect((await repository.getMessages(chat, {})).messages).toHaveLength(2);
  });

  it('does not set a keyed chat prompt again when its script arrives again after a later prompt', async () => {
    const chat = { ...scope };
    const { scriptKeys, kept } = await claimed(chat);
    const setFirst = () => redis.eval(scripts.setSystem, 8, ...scriptKeys, 'first', Date.now(), 0, ...kept);
    await setFirst();
    await repository.setChatSystemPrompt(chat, 'later');

    await setFirst();

    expect(await repository.getChatSystemPrompt(chat)).toBe('later');
  });

  it('still refuses an earlier turn once a later one was stored', async () => {
    const chat = { ...scope };
    const early = await begin();
    await redis.del(keys.chat(chat).lease); // as if its lease expired
    const late = await begin();
    expect(await repository.commitTurn(chat, late, record('late'))).toBe('stored');

    expect(await repository.commitTurn(chat, early, record('early'))).toBe('lease_lost');
    expect((await repository.getMessages(chat, {})).messages.map((message) => message.content)).toEqual([
      'late',
      're: late',
    ]);
  });
});

describe('an idempotency record (the repository)', () => {
  const repository = new RedisChatRepository({ maxPageBytes: 1 << 20 }, (operation) => operation(redis));
  const answer = { statusCode: 200, headers: {}, body: '{}' };

  it('is kept anew when its claim ran out while the request ran', async () => {
    await repository.claimIdempotency(scope, 'a'.repeat(64), 'body', 1);
    await new Promise((resolve) => setTimeout(resolve, 20));

    await repository.completeIdempotency(scope, 'a'.repeat(64), 'body', answer, 60);

    expect(await repository.claimIdempotency(scope, 'a'.repeat(64), 'body', 1000)).toEqual({
      state: 'done',
      response: answer,
    });
  });

  it('is not brought back when its chat was deleted while the request ran', async () => {
    await repository.claimIdempotency(scope, 'b'.repeat(64), 'body', 60_000);
    await repository.deleteChat(scope);

    await repository.completeIdempotency(scope, 'b'.repeat(64), 'body', answer, 60);

    expect(await redis.keys(`*${scope.chatId}*`)).toEqual([]);
  });

  it('is claimed again by the same request sent twice, and not by another with the same body', async () => {
    const id = 'e'.repeat(64);
    expect(await repository.claimIdempotency(scope, id, 'body', 60_000, 'token-1')).toEqual({
      state: 'claimed',
    });

    expect(await repository.claimIdempotency(scope, id, 'body', 60_000, 'token-1')).toEqual({
      state: 'claimed',
    });
    expect(await repository.claimIdempotency(scope, id, 'body', 60_000, 'token-2')).toEqual({
      state: 'running',
    });
  });

  it("is left to another body's claim", async () => {
    await repository.claimIdempotency(scope, 'c'.repeat(64), 'other body', 60_000);

    await repository.completeIdempotency(scope, 'c'.repeat(64), 'body', answer, 60);

    expect(await repository.claimIdempotency(scope, 'c'.repeat(64), 'other body', 1000)).toEqual({
      state: 'running',
    });
  });
});

describe('an idempotent turn whose commit timed out after it ran', () => {
  it('fails, and its retry replays the stored answer instead of running the turn again', async () => {
    const headers = { 'Idempotency-Key': uniqueId('idem') };
    const content = uniqueId('slow commit');
    proxy.delayReplyTo(content, LATE_MS);

    const first = await postChat(turn({ content }, headers));
    expect(proxy.triggered).toBe(true);
    expect(first.statusCode).toBe(503);
    // Once the late reply is through, the connection is in step again.
    await proxy.settled();

    const retry = await postChat(turn({ content }, headers));

    expect(retry.statusCode).toBe(200);
    expect(retry.headers['Idempotent-Replayed']).toBe('true');
    expect(JSON.parse(retry.body).content).toContain(content);
    expect(fake.requestsTo('/chat/completions')).toHaveLength(1);
    expect(await history()).toHaveLength(2);
    expect((await usage()).turns).toBe(1);
  });

  it('streamed: the first attempt ends with an error event, the retry replays the stored answer', async () => {
    const headers = { 'Idempotency-Key': uniqueId('idem') };
    const content = uniqueId('slow streamed commit');
    proxy.delayReplyTo(content, LATE_MS);

    const first = await postChat(turn({ content, stream: true }, headers));
    expect(proxy.triggered).toBe(true);
    expect(first.events.at(-1)?.event).toBe('error');
    await proxy.settled();

    const retry = await postChat(turn({ content, stream: true }, headers));

    expect(retry.headers['Idempotent-Replayed']).toBe('true');
    expect(retry.events.map((event) => event.event)).toEqual(['delta', 'done']);
    expect(JSON.stringify(retry.events.at(-1)?.data)).toContain(content);
    expect(fake.requestsTo('/chat/completions')).toHaveLength(1);
    expect(await history()).toHaveLength(2);
  });
});

describe('a clear whose reply was lost', () => {
  const generation = async () => Number((await redis.hget(keys.chat(scope).meta, 'gen')) ?? 0);

  for (const keyed of [false, true]) {
    it(`clears once when ioredis sends it again${keyed ? ' (with an Idempotency-Key)' : ''}`, async () => {
      expect((await postChat(turn({ content: 'before the clear' }))).statusCode).toBe(200);
      const before = await generation();
      // The clear script itself, as EVAL (its body) or EVALSHA: it runs, its reply is lost with the
      // connection, and ioredis sends it again on the next one.
      const clearScript = scripts.clearMessages;
      proxy.loseReplyTo([clearScript, createHash('sha1').update(clearScript).digest('hex')]);

      const result = await postClear(clearEvent(scope, keyed ? { 'Idempotency-Key': uniqueId('idem') } : {}));

      expect(proxy.triggered).toBe(true);
      expect(result.statusCode).toBe(200);
      expect(await generation()).toBe(before + 1);
      expect(await history()).toEqual([]);
    });
  }
});

describe('an idempotent clear whose reply was late', () => {
  it('fails, and its retry replays the answer instead of clearing what the chat gained since', async () => {
    const headers = { 'Idempotency-Key': uniqueId('idem') };
    const clear = () => postClear(clearEvent(scope, headers));
    // The clear script itself, as EVAL (its body) or EVALSHA: it runs, its reply comes late.
    const clearScript = scripts.clearMessages;
    proxy.delayReplyTo([clearScript, createHash('sha1').update(clearScript).digest('hex')], LATE_MS);

    const first = await clear();
    expect(proxy.triggered).toBe(true);
    expect(first.statusCode).toBe(503);
    await proxy.settled();
    expect((await postChat(turn({ content: 'after the clear' }))).statusCode).toBe(200);

    const retry = await clear();

    expect(retry.statusCode).toBe(200);
    expect(retry.headers['Idempotent-Replayed']).toBe('true');
    expect((await history()).map((message) => message.content)).toEqual([
      'after the clear',
      expect.stringContaining('after the clear'),
    ]);
  });
});

describe('an idempotent system prompt whose reply was late', () => {
  /** The tenant's prompt or the chat's: where it is set and read, and the script that sets it. */
  const prompts = [
    {
      whose: "the chat's",
      post: postChatSystem,
      get: getChatSystem,
      script: () => scripts.setSystem,
      event: (input: Parameters<typeof apiEvent>[0]) =>
        apiEvent({ resource: '/{chat_id}/system', chatId: scope.chatId, apiKeyId: scope.tenant, ...input }),
    },
    {
      whose: "the tenant's",
      post: postSystem,
      get: getSystem,
      script: () => scripts.setTenantSystem,
      event: (input: Parameters<typeof apiEvent>[0]) =>
        apiEvent({ resource: '/system', path: '/system', apiKeyId: scope.tenant, ...input }),
    },
  ];

  for (const { whose, post, get, script, event } of prompts) {
    it(`fails, and its retry replays the answer instead of setting ${whose} prompt again over a later one`, async () => {
      const set = (content: string, headers: Record<string, string> = {}) =>
        post(event({ method: 'POST', json: { content }, headers }));
      const headers = { 'Idempotency-Key': uniqueId('idem') };
      // The script's body (sent by EVAL) or its SHA-1 (sent by EVALSHA): it runs, its reply comes late.
      proxy.delayReplyTo([script(), createHash('sha1').update(script()).digest('hex')], LATE_MS);

      const first = await set('first', headers);
      expect(proxy.triggered).toBe(true);
      expect(first.statusCode).toBe(503);
      await proxy.settled();
      expect((await set('later')).statusCode).toBe(200);

      const retry = await set('first', headers);

      expect(retry.statusCode).toBe(200);
      expect(retry.headers['Idempotent-Replayed']).toBe('true');
      expect(JSON.parse((await get(event({}))).body)).toEqual({ content: 'later' });
    });
  }
});

describe('an idempotent turn whose claim ran but whose reply was lost', () => {
  it('is claimed again when ioredis sends the claim again, and runs once', async () => {
    const content = uniqueId('lost claim');
    const event = turn({ content }, { 'Idempotency-Key': uniqueId('idem') });
    // Only the claim carries the body's fingerprint.
    proxy.loseReplyTo(createHash('sha256').update(String(event.body)).digest('hex'));

    const result = await postChat(event);

    expect(proxy.triggered).toBe(true);
    expect(result.statusCode).toBe(200);
    expect(await history()).toHaveLength(2);
    expect(fake.requestsTo('/chat/completions')).toHaveLength(1);
  });
});
