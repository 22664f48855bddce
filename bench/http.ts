import { createHash, randomBytes } from 'node:crypto';
import { type DevServer, startDevServer } from '../test/support/dev-server';
import type { AbSamples } from './ab';
import { DIRECT_API_KEY, type RemoteUpstream, USER_MESSAGE } from './fixture';
import { checkInterrupted, onCleanup } from './lifecycle';
import { cpuSeconds, ownCpuSeconds } from './procs';
import { percentile } from './stats';
import { checkReplayed, checkTurn, runsBFirst } from './turn-overhead';

export interface BenchDevServer {
  readonly server: DevServer;
  readonly apiKey: string;
  /** The tenant the dev server derives from the key (as API Gateway's key id). */
  readonly tenant: string;
}

/** A fresh API key for the dev server. */
export function newApiKey(): string {
  return `bench_${randomBytes(12).toString('hex')}`;
}

/**
 * The tenant local/dev.ts derives from a key (API Gateway's key id). A mismatch would show as
 * chats that were not seeded, which every measured turn checks (the messages sent upstream).
 */
export function tenantForKey(apiKey: string): string {
  return `local-${createHash('sha256').update(apiKey).digest('hex').slice(0, 16)}`;
}

/** `npm run dev`'s server as a child process, on the bench's Redis and stand-in. */
export async function startBenchDevServer(
  env: Record<string, string>,
  dataDir: string,
  apiKey: string,
): Promise<BenchDevServer> {
  const server = await startDevServer({
    env: { ...env, CHAT_PROXY_API_KEYS: apiKey, CHAT_PROXY_DATA_DIR: dataDir },
  });
  onCleanup('stop the dev server', async () => {
    await server.stop();
  });
  return { server, apiKey, tenant: tenantForKey(apiKey) };
}

/** One turn through the dev server; answers its status and body. */
async function turn(dev: BenchDevServer, chatId: string, body: string): Promise<[number, string]> {
  const response = await fetch(`${dev.server.url}/${chatId}/chat`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': dev.apiKey },
    body,
  });
  return [response.status, await response.text()];
}

/**
 * Interleaved pairs: a turn through the dev server (A), then the very request it sent upstream,
 * straight to the stand-in with fetch (B), both from this process with the same HTTP client. The
 * stand-in runs in a process of its own, so B crosses a process boundary as A's upstream call does.
 */
export async function measureHttpOverhead(
  dev: BenchDevServer,
  upstream: RemoteUpstream,
  options: {
    label: string;
    chat: string;
    chatId: (i: number) => string;
    sentMessages: number;
    pairs: number;
    warmup: number;
  },
): Promise<AbSamples> {
  const body = JSON.stringify({ content: USER_MESSAGE });
  const direct = `${upstream.baseURL}/chat/completions`;
  const directHeaders = { 'content-type': 'application/json', authorization: `Bearer ${DIRECT_API_KEY}` };
  const a: number[] = [];
  const b: number[] = [];
  const bFirst: boolean[] = [];
  const directCall = async (request: string): Promise<[b0: number, b1: number]> => {
    const b0 = performance.now();
    const response = await fetch(direct, { method: 'POST', headers: directHeaders, body: request });
    await response.text();
    const b1 = performance.now();
    if (response.status !== 200) throw new Error(`direct call: status ${response.status}`);
    return [b0, b1];
  };
  // As in process (bench/turn-overhead.ts), every other pair runs B first, with the previous turn's
  // request, which the turn's own must then match.
  let previous: string | undefined;
  for (let i = -options.warmup; i < options.pairs; i += 1) {
    if (i % 100 === 0) checkInterrupted();
    const chatId = options.chatId(i);
    const replay = runsBFirst(i) ? previous : undefined;
    const before = replay === undefined ? undefined : await directCall(replay);
    const a0 = performance.now();
    const [status, text] = await turn(dev, chatId, body);
    const a1 = performance.now();
    const sent = await upstream.take();
    checkTurn(chatId, status, text, sent, options.sentMessages);
    const request = JSON.stringify(sent);
    if (replay !== undefined) checkReplayed(chatId, request, replay);
    const [b0, b1] = before ?? (await directCall(request));
    previous = request;
    if (i >= 0) {
      a.push(a1 - a0);
      b.push(b1 - b0);
      bFirst.push(replay !== undefined);
    }
  }
  return { label: options.label, chat: options.chat, sentMessages: options.sentMessages, a, b, bFirst };
}

export interface ThroughputResult {
  readonly concurrency: number;
  readonly seconds: number;
  readonly turns: number;
  readonly turnsPerSecond: number;
  readonly p50: number;
  readonly p99: number;
  readonly errors: number;
  /** CPU used in the measured window, as a share of one core. */
  readonly cpu: { devServer?: number; bench: number; upstream?: number; redis?: number };
}

/**
 * Turns per second through the dev server: `concurrency` workers, each on its own chat, each
 * sending its next turn as soon as the last one answered. Turns that complete within the
 * measured window (after the warm-up) are counted.
 */
export async function measureThroughput(
  dev: BenchDevServer,
  options: {
    concurrency: number;
    chatId: (worker: number) => string;
    warmupSeconds: number;
    seconds: number;
    redisPid?: number;
    upstreamPid?: number;
  },
): Promise<ThroughputResult> {
  const body = JSON.stringify({ content: USER_MESSAGE });
  const begin = performance.now();
  const windowStart = begin + options.warmupSeconds * 1000;
  const windowEnd = windowStart + options.seconds * 1000;
  const latencies: number[] = [];
  let errors = 0;
  const sample = () => ({
    at: performance.now(),
    dev: cpuSeconds(dev.server.pid),
    bench: ownCpuSeconds(),
    redis: options.redisPid === undefined ? undefined : cpuSeconds(options.redisPid),
    upstream: options.upstreamPid === undefined ? undefined : cpuSeconds(options.upstreamPid),
  });
  let cpuAtStart: ReturnType<typeof sample> | undefined;
  let cpuAtEnd: ReturnType<typeof sample> | undefined;
  const markStart = setTimeout(
    () => {
      cpuAtStart = sample();
    },
    Math.max(0, windowStart - performance.now()),
  );
  const markEnd = setTimeout(
    () => {
      cpuAtEnd = sample();
    },
    Math.max(0, windowEnd - performance.now()),
  );
  const worker = async (index: number) => {
    const chatId = options.chatId(index);
    while (performance.now() < windowEnd) {
      checkInterrupted();
      const started = performance.now();
      const [status, text] = await turn(dev, chatId, body);
      const ended = performance.now();
      if (status !== 200) {
        errors += 1;
        if (errors === 1)
          console.error(`throughput: turn on ${chatId}: status ${status}: ${text.slice(0, 200)}`);
      }
      if (ended >= windowStart && ended <= windowEnd && status === 200) latencies.push(ended - started);
    }
  };
  try {
    await Promise.all(Array.from({ length: options.concurrency }, (_, i) => worker(i)));
  } finally {
    clearTimeout(markStart);
    clearTimeout(markEnd);
  }
  // The last turns can end the run before the end-of-window timer had its turn.
  cpuAtEnd ??= sample();
  const elapsed = cpuAtStart && cpuAtEnd ? (cpuAtEnd.at - cpuAtStart.at) / 1000 : Number.NaN;
  const share = (start: number | undefined, end: number | undefined) =>
    start === undefined || end === undefined ? undefined : (end - start) / elapsed;
  return {
    concurrency: options.concurrency,
    seconds: options.seconds,
    turns: latencies.length,
    turnsPerSecond: latencies.length / options.seconds,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    errors,
    cpu: {
      devServer: share(cpuAtStart?.dev, cpuAtEnd?.dev),
      bench: share(cpuAtStart?.bench, cpuAtEnd?.bench) ?? Number.NaN,
      redis: share(cpuAtStart?.redis, cpuAtEnd?.redis),
      upstream: share(cpuAtStart?.upstream, cpuAtEnd?.upstream),
    },
  };
}
