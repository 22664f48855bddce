import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { leanIoredis } from '../local/lean-ioredis';
import { spawnRedisServer } from '../test/support/redis-server';
import { type AbSamples, summarize } from './ab';
import { loadDeployedTurn } from './bundles';
import { canMeasureBusy, measureBusy } from './busy';
import { measureColdStart } from './cold-start';
import {
  type CompletionRequestBody,
  contextBudget,
  FULL_CHAT_MESSAGES,
  LONG_CHAT_MESSAGES,
  REPLY,
  startUpstream,
  startUpstreamProcess,
  USER_MESSAGE,
} from './fixture';
import { cleanUp, Interrupted, installSignalHandlers, onCleanup, tempDir } from './lifecycle';
import { LoadTracker } from './load';
import { repoRoot } from './paths';
import { redisServerPid } from './procs';
import { type BenchResults, type ConsoleWrites, machineInfo, renderReport } from './report';
import { median } from './stats';
import { measureWakeUp } from './wake-up';

/**
 * `npm run bench`: see issue 7's "Deliver" section and bench/RESULTS.md. Everything runs in this
 * one process except redis-server, the dev server (a child, as `npm run dev` runs), `cdk synth`
 * and the fresh processes that time each bundle's import.
 */

interface Sizes {
  readonly pairs: number;
  readonly longPairs: number;
  /**
   * Pairs on full chats before the first in-process case: until V8 has compiled the turn's code,
   * its optimizing compiler keeps a second core busy for milliseconds at a time, and redis-server,
   * which shares the machine's cores, waits for one (bench/ANALYSIS.md).
   */
  readonly firstWarmup: number;
  /** Pairs before each case's own. */
  readonly warmup: number;
  readonly httpPairs: number;
  readonly memory: { chats: number; warmup: number; turns: number; every: number };
  readonly throughput: { levels: number[]; warmupSeconds: number; seconds: number };
  readonly importRuns: number;
  readonly packageRuns: number;
  readonly diagnosticTurns: number;
  readonly wakeUpPings: number;
}

const FULL: Sizes = {
  pairs: 2000,
  longPairs: 500,
  firstWarmup: 3000,
  warmup: 500,
  httpPairs: 2000,
  memory: { chats: 50, warmup: 1000, turns: 10_000, every: 1000 },
  throughput: { levels: [1, 8, 32], warmupSeconds: 1, seconds: 5 },
  importRuns: 7,
  packageRuns: 5,
  diagnosticTurns: 500,
  wakeUpPings: 2000,
};

const QUICK: Sizes = {
  pairs: 200,
  longPairs: 50,
  firstWarmup: 300,
  warmup: 50,
  httpPairs: 200,
  memory: { chats: 50, warmup: 200, turns: 1000, every: 250 },
  throughput: { levels: [1, 8, 32], warmupSeconds: 0.5, seconds: 1 },
  importRuns: 3,
  packageRuns: 2,
  diagnosticTurns: 100,
  wakeUpPings: 500,
};

/** Variables the functions read; cleared so the caller's shell cannot change what is measured. */
const FUNCTION_ENV =
  /^(REDIS_|OPENAI_|MAX_|CHAT_|TURN_|IDEMPOTENCY_|STREAM_|SECRET_|REPLY_|POWERTOOLS_|CORS_|AWS_LAMBDA_)|^(LOG_CONTENT|AWS_SAM_LOCAL)$/;

function log(message: string): void {
  console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}`);
}

/** Counts what `work` writes to stdout and stderr (the handlers should write nothing there). */
async function countWrites(iterations: number, work: () => Promise<void>): Promise<ConsoleWrites> {
  const streams = { stdout: process.stdout, stderr: process.stderr } as const;
  const counts = { stdout: 0, stderr: 0 };
  const samples = new Set<string>();
  const originals = { stdout: streams.stdout.write, stderr: streams.stderr.write };
  for (const name of ['stdout', 'stderr'] as const) {
    streams[name].write = ((chunk: unknown, ...rest: unknown[]) => {
      counts[name] += 1;
      if (samples.size < 3) samples.add(`${name}: ${String(chunk).trim().slice(0, 160)}`);
      return (originals[name] as (...args: unknown[]) => boolean).call(streams[name], chunk, ...rest);
    }) as typeof process.stdout.write;
  }
  try {
    for (let i = 0; i < iterations; i += 1) await work();
  } finally {
    streams.stdout.write = originals.stdout;
    streams.stderr.write = originals.stderr;
  }
  return {
    perTurn: { stdout: counts.stdout / iterations, stderr: counts.stderr / iterations },
    samples: [...samples],
  };
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const unknown = args.filter((arg) => arg !== '--quick' && arg !== '--no-synth');
  if (unknown.length > 0) throw new Error(`unknown option(s) ${unknown.join(' ')}; use --quick, --no-synth`);
  const quick = args.includes('--quick');
  const skipSynth = args.includes('--no-synth');
  const sizes = quick ? QUICK : FULL;
  const synthEnv = { ...process.env };
  const startedAt = new Date();
  const clock = performance.now();
  const load = new LoadTracker();

  log('starting redis-server and the OpenAI stand-in');
  const redis = await spawnRedisServer();
  onCleanup('stop redis-server', () => redis.dispose());
  load.watch(redisServerPid(redis.port));
  const upstream = await startUpstream();

  const { loadMessageTokens } = await import('./tokens');
  const messageTokens = await loadMessageTokens();
  const budget = contextBudget(messageTokens);
  for (const name of Object.keys(process.env)) if (FUNCTION_ENV.test(name)) delete process.env[name];
  const functionEnv: Record<string, string> = {
    REDIS_URL: redis.url,
    OPENAI_BASE_URL: upstream.baseURL,
    OPENAI_API_KEY: 'sk-bench',
    POWERTOOLS_LOG_LEVEL: 'SILENT',
    POWERTOOLS_METRICS_DISABLED: 'true',
    MAX_CONTEXT_TOKENS: String(budget),
    AWS_REGION: 'us-east-1',
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
  };
  // The handlers in this process run one invocation at a time, as in Lambda's default mode, which
  // the runtime tells them by this variable (functions/shared/observability.ts keeps the request's
  // record in a variable then). The dev server, a process of its own, serves requests side by side.
  Object.assign(process.env, functionEnv, { AWS_LAMBDA_FUNCTION_NAME: 'chat-proxy-bench' });

  // The functions' modules are imported (and their bundles loaded) only now: they read their
  // configuration when first imported. The redis module is imported the way the source handlers
  // import it, so it is the same instance (one client).
  const { loadHandler } = await import('../test/support/handlers');
  const postChat = await loadHandler('post-chat');
  const getChat = await loadHandler('get-chat');
  const getSystem = await loadHandler('get-system');
  const { getRedis } = await import('../functions/shared/redis');
  const { openAiConfig, complete } = await import('../functions/shared/openai');
  log('building POST /{chat_id}/chat and the OpenAI client as the stack bundles them');
  const deployed = await loadDeployedTurn();
  const handlersRedis = await getRedis();
  onCleanup('close the handlers’ Redis connection', () => {
    handlersRedis.disconnect();
  });
  const { instrument } = await import('./redis-counter');
  const counter = instrument(handlersRedis);
  const { Seeder } = await import('./seed');
  const seeder = new Seeder(redis.url, messageTokens);
  const { newApiKey, tenantForKey, startBenchDevServer, measureHttpOverhead, measureThroughput } =
    await import('./http');
  const { measureCase, directCall, gc } = await import('./turn-overhead');
  const { countRoundTrips, describeBatches } = await import('./round-trips');
  const { measureMemory } = await import('./memory');
  const { profile } = await import('./profile');
  const { apiEvent } = await import('../test/support/events');

  const tenant = 'bench';
  const memoryTenant = 'bench-memory';
  const apiKey = newApiKey();
  const devTenant = tenantForKey(apiKey);
  const seedPairs = FULL_CHAT_MESSAGES / 2;
  const warmPool = 10;
  const ids = (prefix: string, count: number) => Array.from({ length: count }, (_, i) => `${prefix}-${i}`);

  await load.phase('seeding', async () => {
    log(
      `seeding ${sizes.pairs + sizes.httpPairs} chats of ${FULL_CHAT_MESSAGES} messages and one of ${LONG_CHAT_MESSAGES}`,
    );
    await seeder.seedChats(
      [
        ...[...ids('full', sizes.pairs), ...ids('warm', warmPool), 'rt'].map((chatId) => ({
          tenant,
          chatId,
        })),
        ...ids('mem', sizes.memory.chats).map((chatId) => ({ tenant: memoryTenant, chatId })),
        ...[...ids('full', sizes.httpPairs), ...ids('warm', warmPool)].map((chatId) => ({
          tenant: devTenant,
          chatId,
        })),
        ...sizes.throughput.levels.flatMap((level) =>
          ids(`tp${level}`, level).map((chatId) => ({ tenant: devTenant, chatId })),
        ),
      ],
      seedPairs,
    );
    await seeder.seedChat({ tenant, chatId: 'long' }, LONG_CHAT_MESSAGES / 2);
    const longCount = await seeder.messageCount({ tenant, chatId: 'long' });
    if (longCount !== LONG_CHAT_MESSAGES) throw new Error(`seed: the long chat holds ${longCount} messages`);
  });

  // 2. Round trips, first: they warm the scripts up, and nothing before them can change a count.
  log('counting Redis round trips');
  const roundTrips = await load.phase('Redis round trips', () =>
    countRoundTrips(counter, { postChat, getChat, getSystem }, tenant, 'rt'),
  );

  // 1. Turn overhead, in process.
  const sent = FULL_CHAT_MESSAGES + 1;
  const warmChat = (i: number) => `warm-${-i % warmPool}`;
  // The turns measured run the deployed code; the round trips above and the diagnostics below run
  // the source, where the Redis client can be instrumented and the profiles name our functions.
  const bench = { postChat: deployed.postChat, complete: deployed.complete, upstream, tenant };
  const handlerCases: AbSamples[] = await load.phase('turn overhead (handler)', async () => {
    log(`turn overhead in process: warm-up, ${sizes.firstWarmup} pairs`);
    await measureCase(bench, {
      label: 'warm-up',
      chat: '',
      chatId: warmChat,
      sentMessages: sent,
      pairs: 0,
      warmup: sizes.firstWarmup,
    });
    const cases: AbSamples[] = [];
    log(`turn overhead in process: new chats, ${sizes.pairs} pairs`);
    cases.push(
      await measureCase(bench, {
        label: 'handler',
        chat: '0 stored messages (a new chat each turn)',
        chatId: (i) => (i < 0 ? `zero-w${-i}` : `zero-${i}`),
        sentMessages: 1,
        pairs: sizes.pairs,
        warmup: sizes.warmup,
      }),
    );
    log(`turn overhead in process: ${FULL_CHAT_MESSAGES}-message chats, ${sizes.pairs} pairs`);
    cases.push(
      await measureCase(bench, {
        label: 'handler',
        chat: `${FULL_CHAT_MESSAGES} stored messages, just fills the budget (a fresh chat each turn)`,
        chatId: (i) => (i < 0 ? warmChat(i) : `full-${i}`),
        sentMessages: sent,
        pairs: sizes.pairs,
        warmup: sizes.warmup,
      }),
    );
    log(`turn overhead in process: the ${LONG_CHAT_MESSAGES}-message chat, ${sizes.longPairs} pairs`);
    const longEnd = LONG_CHAT_MESSAGES + 2 * (sizes.longPairs + sizes.warmup);
    cases.push(
      await measureCase(bench, {
        label: 'handler',
        chat: `10,000 stored messages, same budget (${longEnd.toLocaleString('en-US')} by the last turn)`,
        chatId: () => 'long',
        sentMessages: sent,
        pairs: sizes.longPairs,
        warmup: sizes.warmup,
      }),
    );
    return cases;
  });

  // Where a turn's time goes: Redis waits, console writes, and CPU profiles of A and of B.
  const diagnostics = await load.phase('diagnostics', async () => {
    log('diagnostics: Redis waits, console writes and CPU profiles of A and B');
    const turnEvent = () =>
      apiEvent({
        method: 'POST',
        resource: '/{chat_id}/chat',
        chatId: 'rt',
        apiKeyId: tenant,
        json: { content: USER_MESSAGE },
      });
    let body: CompletionRequestBody | undefined;
    const turnA = async () => {
      upstream.capture();
      const result = await postChat(turnEvent());
      body = upstream.take();
      if (result.statusCode !== 200) throw new Error(`diagnostic turn: status ${result.statusCode}`);
    };
    const callB = async () => {
      if (body === undefined) throw new Error('diagnostic turn: the stand-in saw no completion request');
      await directCall(complete, body);
    };
    const waits: number[] = [];
    const turns: number[] = [];
    let batches = '';
    for (let i = 0; i < 200; i += 1) {
      counter.start();
      const t0 = performance.now();
      await turnA();
      turns.push(performance.now() - t0);
      const seen = counter.stop();
      waits.push(seen.reduce((sum, batch) => sum + batch.waitMs, 0));
      batches = describeBatches(seen);
    }
    const writes = await countWrites(100, turnA);
    gc();
    const busy = canMeasureBusy()
      ? await measureBusy(redis.url, sizes.diagnosticTurns, turnA, callB)
      : undefined;
    gc();
    const profileA = await profile(sizes.diagnosticTurns, turnA);
    gc();
    const profileB = await profile(sizes.diagnosticTurns, callB);
    const wakeUp = await measureWakeUp(redis.port, sizes.wakeUpPings);
    return {
      redisWait: { waitMedianMs: median(waits), turnMedianMs: median(turns), batches },
      writes,
      busy,
      profileA,
      profileB,
      wakeUp,
    };
  });

  // 4. Memory.
  gc();
  const quietMs = openAiConfig.timeoutMs + 1000;
  log(
    `memory: ${sizes.memory.warmup} warm-up turns, ${quietMs / 1000} s pause, ${sizes.memory.turns} turns over ` +
      `${sizes.memory.chats} chats, ${quietMs / 1000} s pause`,
  );
  const memory = await load.phase('memory', () =>
    measureMemory(deployed.postChat, memoryTenant, { ...sizes.memory, quietMs }),
  );

  // 1 (HTTP) and 5: through the dev server.
  gc();
  log('starting the dev server');
  const remote = await startUpstreamProcess();
  load.watch(remote.pid);
  const dev = await startBenchDevServer(
    { ...functionEnv, OPENAI_BASE_URL: remote.baseURL },
    tempDir('dev'),
    apiKey,
  );
  load.watch(dev.server.pid);
  log(`turn overhead through the dev server: ${sizes.httpPairs} pairs`);
  const httpCase = await load.phase('turn overhead (HTTP)', () =>
    measureHttpOverhead(dev, remote, {
      label: 'local HTTP server',
      chat: `${FULL_CHAT_MESSAGES} stored messages, just fills the budget (a fresh chat each turn)`,
      chatId: (i) => (i < 0 ? `warm-${-i % warmPool}` : `full-${i}`),
      sentMessages: sent,
      pairs: sizes.httpPairs,
      warmup: sizes.warmup,
    }),
  );
  const throughput = [];
  for (const level of sizes.throughput.levels) {
    log(`throughput through the dev server: ${level} concurrent chat(s)`);
    throughput.push(
      await load.phase(`throughput ×${level}`, () =>
        measureThroughput(dev, {
          concurrency: level,
          chatId: (worker) => `tp${level}-${worker}`,
          warmupSeconds: sizes.throughput.warmupSeconds,
          seconds: sizes.throughput.seconds,
          redisPid: redisServerPid(redis.port),
          upstreamPid: remote.pid,
        }),
      ),
    );
  }
  await dev.server.stop();

  // 3. Cold start.
  log(`cold start: ${skipSynth ? 'the existing cdk.out' : 'cdk synth'}, then imports in fresh processes`);
  const coldStart = await load.phase('cold start (synth and imports)', () =>
    measureColdStart({ synthEnv, skipSynth, runs: sizes.importRuns, packageRuns: sizes.packageRuns }),
  );

  const results: BenchResults = {
    machine: machineInfo(startedAt),
    command: `npm run bench${args.length > 0 ? ` -- ${args.join(' ')}` : ''}`,
    quick,
    warmup: { first: sizes.firstWarmup, perCase: sizes.warmup },
    budget,
    tokens: { user: messageTokens(USER_MESSAGE), reply: messageTokens(REPLY) },
    handlerCases: handlerCases.map(summarize),
    deployedBytes: deployed.bytes,
    httpCase: summarize(httpCase),
    roundTrips,
    redisWait: diagnostics.redisWait,
    writes: diagnostics.writes,
    busy: diagnostics.busy,
    leanIoredis,
    profileA: diagnostics.profileA,
    profileB: diagnostics.profileB,
    wakeUp: diagnostics.wakeUp,
    memory,
    throughput,
    coldStart,
    load: load.phases,
    seconds: (performance.now() - clock) / 1000,
  };
  const report = renderReport(results);
  console.log(report);
  if (quick) log('--quick: bench/RESULTS.md left as it is');
  else {
    writeFileSync(join(repoRoot, 'bench', 'RESULTS.md'), report);
    log('wrote bench/RESULTS.md');
  }
}

installSignalHandlers();
let exitCode = 0;
try {
  await main();
} catch (error) {
  exitCode = error instanceof Interrupted ? 130 : 1;
  if (!(error instanceof Interrupted)) console.error('bench failed:', error);
} finally {
  await cleanUp();
}
process.exit(exitCode);
