import { apiEvent } from '../test/support/events';
import type { Invoke } from '../test/support/handlers';
import { USER_MESSAGE } from './fixture';
import { checkInterrupted } from './lifecycle';
import { slope } from './stats';

export interface MemoryCheckpoint {
  /** Measured turns done when it was read (0 = after the warm-up). */
  readonly turns: number;
  /** Read after a pause with no turn running, once every timer the turns armed had fired. */
  readonly quiet: boolean;
  readonly rss: number;
  readonly heapUsed: number;
  readonly external: number;
  /** Buffers and array buffers outside the heap (sockets, HTTP bodies): where a native leak would show. */
  readonly arrayBuffers: number;
}

export interface MemoryResult {
  readonly chats: number;
  readonly warmup: number;
  readonly turns: number;
  /** The pause before each quiet reading, in ms. */
  readonly quietMs: number;
  readonly checkpoints: MemoryCheckpoint[];
  /** Quiet after the turns minus quiet after the warm-up: what the turns left behind. */
  readonly rssGrowth: number;
  readonly heapGrowth: number;
  /** Right after the last turn minus quiet after the warm-up: what was still held while running. */
  readonly heapHeldWhileRunning: number;
  /** Least-squares slope of heapUsed over the readings taken while running, in bytes per turn. */
  readonly heapSlopePerTurn: number;
  readonly seconds: number;
  readonly turnsPerSecond: number;
}

/** Full collections until the heap stops shrinking (a weak ref or finalizer can free more). */
async function settle(turns: number, quiet: boolean): Promise<MemoryCheckpoint> {
  const collect = (globalThis as { gc?: () => void }).gc;
  if (collect === undefined) throw new Error('memory: global.gc is missing (run with --expose-gc)');
  let previous = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 5; i += 1) {
    collect();
    await new Promise((resolve) => setImmediate(resolve));
    const { heapUsed } = process.memoryUsage();
    if (heapUsed >= previous) break;
    previous = heapUsed;
  }
  const usage = process.memoryUsage();
  return {
    turns,
    quiet,
    rss: usage.rss,
    heapUsed: usage.heapUsed,
    external: usage.external,
    arrayBuffers: usage.arrayBuffers,
  };
}

/**
 * RSS and heap of this process (the handlers, their Redis and OpenAI clients, and the stand-in),
 * each read after full garbage collections: after the warm-up and a quiet pause, every `every`
 * turns while running, right after the last turn, and after another quiet pause. The pauses last
 * longer than any timer a turn arms (the upstream deadline), so what a turn still holds through
 * such a timer is released by then: growth between the two quiet readings is what stays.
 */
export async function measureMemory(
  postChat: Invoke,
  tenant: string,
  options: { chats: number; warmup: number; turns: number; every: number; quietMs: number },
): Promise<MemoryResult> {
  const chatIds = Array.from({ length: options.chats }, (_, i) => `mem-${i}`);
  let done = 0;
  const turn = async () => {
    const chatId = chatIds[done % chatIds.length] ?? 'mem-0';
    done += 1;
    const result = await postChat(
      apiEvent({
        method: 'POST',
        resource: '/{chat_id}/chat',
        chatId,
        apiKeyId: tenant,
        json: { content: USER_MESSAGE },
      }),
    );
    if (result.statusCode !== 200) {
      throw new Error(`memory: turn on ${chatId}: status ${result.statusCode}: ${result.body.slice(0, 300)}`);
    }
  };
  for (let i = 0; i < options.warmup; i += 1) {
    if (i % 100 === 0) checkInterrupted();
    await turn();
  }
  await pause(options.quietMs);
  const before = await settle(0, true);
  const running: MemoryCheckpoint[] = [];
  const started = performance.now();
  let busy = 0;
  for (let i = 1; i <= options.turns; i += 1) {
    if (i % 100 === 0) checkInterrupted();
    const t0 = performance.now();
    await turn();
    busy += performance.now() - t0;
    if (i % options.every === 0 || i === options.turns) running.push(await settle(i, false));
  }
  const seconds = (performance.now() - started) / 1000;
  await pause(options.quietMs);
  const after = await settle(options.turns, true);
  const last = running.at(-1) ?? after;
  return {
    chats: options.chats,
    warmup: options.warmup,
    turns: options.turns,
    quietMs: options.quietMs,
    checkpoints: [before, ...running, after],
    rssGrowth: after.rss - before.rss,
    heapGrowth: after.heapUsed - before.heapUsed,
    heapHeldWhileRunning: last.heapUsed - before.heapUsed,
    heapSlopePerTurn: slope(
      running.map((point) => point.turns),
      running.map((point) => point.heapUsed),
    ),
    seconds,
    turnsPerSecond: options.turns / (busy / 1000),
  };
}

async function pause(ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    checkInterrupted();
    await new Promise((resolve) => setTimeout(resolve, Math.min(500, end - Date.now())));
  }
}
