import { describe, expect, it, vi } from 'vitest';
import type { ScriptedResponse } from '../../local/openai-stand-in';
import { apiEvent } from '../support/events';
import { startFakeOpenAi } from '../support/fake-openai';
import { type Invoke, loadHandler } from '../support/handlers';

const TURNS = 2000;
const CONCURRENCY = 40;
const run = `${process.pid}-${Date.now().toString(36)}`;
const tenants = Array.from({ length: 4 }, (_, t) => `soak-${run}-t${t}`);
const chats = tenants.flatMap((tenant) =>
  Array.from({ length: 5 }, (_, c) => ({ tenant, chatId: `chat-${c}` })),
);

const fake = await startFakeOpenAi();
process.env.OPENAI_BASE_URL = fake.baseURL;
process.env.OPENAI_TIMEOUT_MS = '1000';

const lambdas: Invoke[] = [];
for (let i = 0; i < 3; i += 1) {
  vi.resetModules();
  lambdas.push(await loadHandler('post-chat'));
}
const getChat = await loadHandler('get-chat');

/** A seeded generator, so a failing soak can be replayed. */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state * 1_103_515_245 + 12_345) % 2 ** 31;
    return state / 2 ** 31;
  };
}

describe('a soak of 2,000 turns across 20 chats and 4 tenants with random faults', () => {
  it('keeps every chat as well-formed pairs holding exactly the turns that succeeded', async () => {
    const rand = random(Number(process.env.SOAK_SEED ?? 42));
    fake.respondWith((): ScriptedResponse | undefined => {
      const roll = rand();
      if (roll < 0.08) return { status: 500, body: { error: { message: 'injected' } } };
      if (roll < 0.12)
        return { status: 429, body: { error: { message: 'injected' } }, headers: { 'retry-after': '1' } };
      if (roll < 0.15) return { failAfterChunks: 1, chunkDelayMs: 2 };
      if (roll < 0.2) return { delayMs: 15 };
      return undefined;
    });

    const succeeded = new Map<string, string[]>(chats.map((chat) => [`${chat.tenant}/${chat.chatId}`, []]));
    const statuses = new Map<string, number>();
    let next = 0;
    const worker = async (lane: number) => {
      for (let i = next++; i < TURNS; i = next++) {
        const chat = chats[Math.floor(rand() * chats.length)] as (typeof chats)[number];
        const content = `turn ${i}`;
        const stream = rand() < 0.3;
        const idempotent = rand() < 0.1;
        const event = apiEvent({
          method: 'POST',
          resource: '/{chat_id}/chat',
          chatId: chat.chatId,
          apiKeyId: chat.tenant,
          json: { content, stream, ...(rand() < 0.5 ? { wait_ms: 2000 } : {}) },
          headers: idempotent ? { 'Idempotency-Key': `key-${i}` } : {},
        });
        const invoke = lambdas[lane % lambdas.length] as Invoke;
        const result = await invoke(event);
        const done = stream ? result.events.some((e) => e.event === 'done') : result.statusCode === 200;
        for (const failed of result.events.filter((e) => e.event === 'error')) {
          expect((failed.data as { error: { code: string } }).error.code).not.toBe('internal_error');
        }
        const outcome = done
          ? 'ok'
          : stream && result.statusCode === 200
            ? 'stream-error'
            : String(result.statusCode);
        statuses.set(outcome, (statuses.get(outcome) ?? 0) + 1);
        if (done) succeeded.get(`${chat.tenant}/${chat.chatId}`)?.push(content);
        if (done && idempotent) {
          const replay = await invoke(event);
          expect(replay.headers['Idempotent-Replayed']).toBe('true');
        }
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, (_, lane) => worker(lane)));

    expect(
      [...statuses.keys()].every((outcome) => ['ok', 'stream-error', '409', '429', '502'].includes(outcome)),
    ).toBe(true);
    expect(statuses.get('ok')).toBeGreaterThan(TURNS / 2);
    let stored = 0;
    for (const chat of chats) {
      const history = JSON.parse(
        (await getChat(apiEvent({ resource: '/{chat_id}/chat', chatId: chat.chatId, apiKeyId: chat.tenant })))
          .body,
      ) as { role: string; content: string }[];
      expect(history.length % 2).toBe(0);
      for (let i = 0; i < history.length; i += 2) {
        expect(history[i]?.role).toBe('user');
        expect(history[i + 1]?.role).toBe('assistant');
        expect(history[i + 1]?.content).toContain(`"${history[i]?.content}"`);
      }
      const asked = history.filter((message) => message.role === 'user').map((message) => message.content);
      expect(asked.sort()).toEqual([...(succeeded.get(`${chat.tenant}/${chat.chatId}`) ?? [])].sort());
      stored += asked.length;
    }
    expect(stored).toBe(statuses.get('ok'));
    await fake.close();
  }, 120_000);
});
