import { constants, type PerformanceEntry, PerformanceObserver } from 'node:perf_hooks';
import type { ChatMessageParam, complete, ModelOptions } from '../functions/shared/openai';
import { apiEvent } from '../test/support/events';
import type { Invoke } from '../test/support/handlers';
import type { AbSamples, GcPauses, SideGc } from './ab';
import { helperCpuMeter } from './busy';
import { type CompletionRequestBody, REPLY, type Upstream, USER_MESSAGE } from './fixture';
import { checkInterrupted } from './lifecycle';

/** The functions' OpenAI client call: `complete()` of functions/shared/openai.ts. */
export type Complete = typeof complete;

/**
 * B of a pair: the request A sent upstream, sent again through the functions' own OpenAI client
 * (`complete()`: the same agent settings, headers, timeout and retries) with the very messages, as
 * message objects, and the very model options.
 */
export async function directCall(client: Complete, sent: CompletionRequestBody): Promise<string> {
  const options: ModelOptions = {
    model: sent.model,
    temperature: typeof sent.temperature === 'number' ? sent.temperature : undefined,
    maxTokens: typeof sent.max_completion_tokens === 'number' ? sent.max_completion_tokens : undefined,
  };
  const { content } = await client(sent.messages as unknown as ChatMessageParam[], options);
  return content;
}

export interface TurnCase {
  readonly label: string;
  readonly chat: string;
  /** The chat id of pair `i`; warm-up pairs get negative `i`. */
  readonly chatId: (i: number) => string;
  /** Messages each request must send upstream (checked on every A). */
  readonly sentMessages: number;
  readonly pairs: number;
  readonly warmup: number;
}

export interface HandlerBench {
  readonly postChat: Invoke;
  /** B's client, loaded the way `postChat` was (both from bundles, or both from the source). */
  readonly complete: Complete;
  readonly upstream: Upstream;
  readonly tenant: string;
}

export function gc(): void {
  const collect = (globalThis as { gc?: () => void }).gc;
  collect?.();
  collect?.();
}

/**
 * One buffered turn through the handler (A) and the same request straight to the stand-in through
 * the handlers' OpenAI client (B), in either order. A first, B sends the request A just sent. B
 * first (`replay`: the request of the case's previous turn), B sends that, and A's own request must
 * then be the same, byte for byte, as every turn of a case sends the same messages: otherwise the
 * bench stops. Answers both times in ms, and the request A sent.
 */
async function pair(
  bench: HandlerBench,
  chatId: string,
  sentMessages: number,
  replay?: CompletionRequestBody,
): Promise<{ times: [a0: number, a1: number, b0: number, b1: number]; sent: CompletionRequestBody }> {
  const event = apiEvent({
    method: 'POST',
    resource: '/{chat_id}/chat',
    chatId,
    apiKeyId: bench.tenant,
    json: { content: USER_MESSAGE },
  });
  const before = replay === undefined ? undefined : await timedDirectCall(bench, replay);
  bench.upstream.capture();
  const a0 = performance.now();
  const result = await bench.postChat(event);
  const a1 = performance.now();
  const sent = bench.upstream.take();
  checkTurn(chatId, result.statusCode, result.body, sent, sentMessages);
  if (replay !== undefined) checkReplayed(chatId, JSON.stringify(sent), JSON.stringify(replay));
  const [b0, b1] = before ?? (await timedDirectCall(bench, sent));
  return { times: [a0, a1, b0, b1], sent };
}

/** B of a pair, timed: its start and end (`performance.now()`). */
async function timedDirectCall(
  bench: HandlerBench,
  request: CompletionRequestBody,
): Promise<[number, number]> {
  const b0 = performance.now();
  const direct = await directCall(bench.complete, request);
  const b1 = performance.now();
  if (direct !== REPLY) throw new Error('direct call: unexpected reply');
  return [b0, b1];
}

const YOUNG = constants.NODE_PERFORMANCE_GC_MINOR;

/**
 * Which calls a garbage collection pause fell in: each of V8's pauses on the main thread (Node's
 * `gc` performance entries: young-generation collections, and a full collection's marking steps
 * and its final pause) is given to the A or B call whose window it overlaps (A's first, should it
 * reach into both). A pause that overlaps neither, between the calls, is left out.
 */
function attributeGc(
  entries: readonly PerformanceEntry[],
  windows: readonly (readonly [number, number, number, number])[],
): GcPauses {
  type Tally = { -readonly [K in keyof SideGc]: SideGc[K] } & { calls: Set<number> };
  const side = (): Tally => ({
    young: 0,
    youngMs: 0,
    full: 0,
    fullMs: 0,
    callsHit: 0,
    calls: new Set<number>(),
  });
  const a = side();
  const b = side();
  const sorted = [...entries].sort((x, y) => x.startTime - y.startTime);
  let i = 0;
  for (const entry of sorted) {
    const start = entry.startTime;
    const end = start + entry.duration;
    while (i < windows.length && (windows[i]?.[3] ?? 0) < start) i += 1;
    const window = windows[i];
    if (window === undefined) break;
    const [a0, a1, b0, b1] = window;
    const hit = start <= a1 && end >= a0 ? a : start <= b1 && end >= b0 ? b : undefined;
    if (hit === undefined) continue;
    const kind = (entry as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind;
    if (kind === YOUNG) {
      hit.young += 1;
      hit.youngMs += entry.duration;
    } else {
      hit.full += 1;
      hit.fullMs += entry.duration;
    }
    hit.calls.add(i);
  }
  const done = ({ calls, ...rest }: Tally): SideGc => ({ ...rest, callsHit: calls.size });
  return { a: done(a), b: done(b), hitPairs: [...new Set([...a.calls, ...b.calls])] };
}

/** A turn that did not do what the bench measures makes the whole bench fail. */
export function checkTurn(
  chatId: string,
  status: number,
  body: string,
  sent: CompletionRequestBody | undefined,
  sentMessages: number,
): asserts sent is CompletionRequestBody {
  if (status !== 200) throw new Error(`turn on ${chatId}: status ${status}: ${body.slice(0, 300)}`);
  const reply = JSON.parse(body) as { content?: string };
  if (reply.content !== REPLY) throw new Error(`turn on ${chatId}: unexpected reply ${body.slice(0, 200)}`);
  if (sent === undefined) throw new Error(`turn on ${chatId}: the stand-in saw no completion request`);
  if (sent.messages.length !== sentMessages) {
    throw new Error(
      `turn on ${chatId}: sent ${sent.messages.length} messages upstream, expected ${sentMessages} ` +
        '(the chat was not seeded as the bench assumes, or the context budget changed)',
    );
  }
}

/**
 * Whether pair `i` runs B first, replaying the previous turn's request: every other pair, as each
 * call is faster after one of its own kind, so a fixed order would measure one mixture of the two.
 */
export function runsBFirst(i: number): boolean {
  return i % 2 !== 0;
}

/** A turn that sent another request than the one B replayed before it makes the whole bench fail. */
export function checkReplayed(chatId: string, sent: string, replayed: string): void {
  if (sent !== replayed) {
    throw new Error(`turn on ${chatId}: sent another request than the turn before it, which B replayed`);
  }
}

/** Interleaved A/B pairs for one chat size, after its own warm-up. */
export async function measureCase(bench: HandlerBench, turnCase: TurnCase): Promise<AbSamples> {
  // Collected before the warm-up, not after it: a full collection throws away optimized code whose
  // maps died (V8's "weak objects" deoptimizations, about a hundred functions of node's streams,
  // http and net at a time), and the recompiles that follow keep a core busy for a second or more.
  // After the warm-up they fell in the measured pairs.
  gc();
  let previous: CompletionRequestBody | undefined;
  for (let i = 1; i <= turnCase.warmup; i += 1) {
    checkInterrupted();
    const replay = runsBFirst(i) ? previous : undefined;
    previous = (await pair(bench, turnCase.chatId(-i), turnCase.sentMessages, replay)).sent;
  }
  const a: number[] = [];
  const b: number[] = [];
  const bFirst: boolean[] = [];
  const windows: [number, number, number, number][] = [];
  const pauses: PerformanceEntry[] = [];
  const observer = new PerformanceObserver((list) => {
    pauses.push(...list.getEntries());
  });
  observer.observe({ entryTypes: ['gc'] });
  const helperMs = helperCpuMeter();
  try {
    for (let i = 0; i < turnCase.pairs; i += 1) {
      if (i % 100 === 0) checkInterrupted();
      const replay = runsBFirst(i) ? previous : undefined;
      const { times, sent } = await pair(bench, turnCase.chatId(i), turnCase.sentMessages, replay);
      previous = sent;
      windows.push(times);
      a.push(times[1] - times[0]);
      b.push(times[3] - times[2]);
      bFirst.push(replay !== undefined);
    }
  } finally {
    // Node queues a pause's entry in a setImmediate after the collection: the last pair's too.
    await new Promise((resolve) => setImmediate(resolve));
    pauses.push(...observer.takeRecords());
    observer.disconnect();
  }
  return {
    label: turnCase.label,
    chat: turnCase.chat,
    sentMessages: turnCase.sentMessages,
    a,
    b,
    bFirst,
    gc: attributeGc(pauses, windows),
    ...(helperMs === undefined || turnCase.pairs === 0
      ? {}
      : { helperCpuMsPerPair: helperMs() / turnCase.pairs }),
  };
}
