import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { FUNCTION_MEMORY_MB } from '../infra/function-memory';
import type { AbSummary, OrderP50 } from './ab';
import type { BusyResult } from './busy';
import type { ColdStartResult } from './cold-start';
import type { ThroughputResult } from './http';
import type { PhaseLoad } from './load';
import type { MemoryResult } from './memory';
import { repoRoot } from './paths';
import { type ProfileSummary, profileDifference } from './profile';
import type { RoundTripResult } from './round-trips';
import type { WakeUpResult } from './wake-up';

export interface MachineInfo {
  readonly cpu: string;
  readonly cores: number;
  readonly memoryGiB: number;
  readonly node: string;
  /** The V8 flags the bench process runs with (bench/run.ts): the heap of a deployed function. */
  readonly nodeFlags: string;
  readonly redis: string;
  readonly date: string;
  readonly commit: string;
  /**
   * How the kernel idles a CPU with nothing to run (cpuidle's driver and governor, and with the
   * haltpoll governor of a virtual machine, how long an idle vCPU polls before it halts), if Linux
   * says: waking a halted vCPU is what the Waking Redis diagnostic measures.
   */
  readonly idle: string | undefined;
}

/** The busy-or-waiting diagnostic: what the proxy adds in CPU, and in time spent waiting. */
function busyLines(busy: BusyResult | undefined): string[] {
  if (busy === undefined)
    return ['- Busy or waiting: not measured (no per-thread scheduler statistics in /proc).'];
  const { a, b } = busy;
  const redisUs = [...busy.redisUsPerTurn.values()].reduce((sum, us) => sum + us, 0);
  const byCommand = [...busy.redisUsPerTurn.entries()]
    .map(([name, us]) => `${name.toUpperCase()} ${us.toFixed(0)} µs`)
    .join(', ');
  const m = (side: typeof a) => side.median;
  return [
    `- Busy or waiting (${a.calls} A turns in a row, then ${b.calls} B calls, nothing sampled). A typical call ` +
      "(medians of each call's own figures; the main thread's CPU time is the process's from getrusage, exact to " +
      "the microsecond, less the other threads'): an A turn took " +
      `${ms(m(a).wallMs)} ms, ${ms(m(a).cpuMs)} ms of it on a CPU and ${ms(m(a).waitMs)} ms waiting; a B call ` +
      `${ms(m(b).wallMs)} ms, ${ms(m(b).cpuMs)} ms on a CPU and ${ms(m(b).waitMs)} ms waiting. So A's typical turn ` +
      `spent **${ms(m(a).cpuMs - m(b).cpuMs)} ms more on the CPU and ${ms(m(a).waitMs - m(b).waitMs)} ms more waiting** ` +
      "than B's call (two blocks, not interleaved pairs: the host's drift between them counts, and the sum need not " +
      'match the overhead p50 above). ' +
      'Waiting is Redis at work, the two round trips on the wire, and the wake-up of a core that went idle ' +
      `meanwhile: Redis itself spent ${redisUs.toFixed(0)} µs per turn executing its commands (${byCommand}; INFO ` +
      'commandstats, mean). The CPU includes the system calls that write to Redis, each of which wakes ' +
      'redis-server on the other core. Means, with garbage collection pauses and slow calls: an A turn ' +
      `${ms(a.wallMs)} ms, ${ms(a.mainCpuMs)} ms on the main thread's CPU and ${ms(a.waitMs)} ms waiting; a B call ` +
      `${ms(b.wallMs)} ms, ${ms(b.mainCpuMs)} ms and ${ms(b.waitMs)} ms; other threads (mostly V8's helpers: its ` +
      `optimizing compiler and its collector) used ${ms(a.helperCpuMs)} ms per A turn and ${ms(b.helperCpuMs)} ms per B call.`,
  ];
}

/** The host's price of waking an idle redis-server, which a turn pays on both its round trips. */
function wakeUpLine(wakeUp: WakeUpResult): string {
  const { backToBack, afterBusy } = wakeUp;
  const us = (value: number) => value.toFixed(1);
  return (
    `- Waking Redis: a bare \`PING\` on a connection of its own (medians of ${wakeUp.pings}) takes ${us(backToBack.roundTripUs)} µs ` +
    `sent back to back (its \`write()\` ${us(backToBack.writeUs)} µs) and ${us(afterBusy.roundTripUs)} µs (\`write()\` ` +
    `${us(afterBusy.writeUs)} µs) when this process has first kept its core busy for ${wakeUp.busyMs} ms, as a turn does ` +
    'between its round trips while redis-server waits: the difference is what this host charges for waking an idle ' +
    "core, through the write that wakes redis-server and the reply's wake-up of this one, and a turn pays it on both " +
    'of its round trips.'
  );
}

export interface BenchResults {
  readonly machine: MachineInfo;
  readonly command: string;
  readonly quick: boolean;
  readonly budget: number;
  readonly tokens: { user: number; reply: number };
  /** 0, 100 and 10,000 stored messages, in that order. */
  readonly handlerCases: AbSummary[];
  /** Untimed pairs before the first in-process case, and untimed pairs before each case. */
  readonly warmup: { readonly first: number; readonly perCase: number };
  /** Bytes of the handler bundle the handler cases and the memory check run. */
  readonly deployedBytes: number;
  readonly httpCase: AbSummary;
  readonly roundTrips: RoundTripResult[];
  readonly redisWait: { waitMedianMs: number; turnMedianMs: number; batches: string };
  readonly writes: ConsoleWrites;
  /** Main-thread CPU and waiting per A turn and B call, and Redis's own time per turn. */
  readonly busy: BusyResult | undefined;
  /** Whether the source ran the bundles' lean ioredis (local/lean-ioredis.ts). */
  readonly leanIoredis: boolean;
  /** CPU profiles of handler turns (A) and of direct calls (B), on the 100-message chat. */
  readonly profileA: ProfileSummary;
  readonly profileB: ProfileSummary;
  /** A bare PING's round trip back to back and after this process kept its core busy. */
  readonly wakeUp: WakeUpResult;
  readonly memory: MemoryResult;
  readonly throughput: ThroughputResult[];
  readonly coldStart: ColdStartResult;
  readonly load: PhaseLoad[];
  readonly seconds: number;
}

/** What a buffered turn writes to the process's stdout and stderr. */
export interface ConsoleWrites {
  readonly perTurn: { stdout: number; stderr: number };
  readonly samples: string[];
}

/** Targets of issue 7. */
export const TARGETS = {
  handlerOverheadP50Ms: 0.5,
  handlerOverheadP99Ms: 3,
  httpOverheadP50Ms: 1.5,
  longChatRatio: 1.5,
  healthImportMs: 10,
  chatImportMs: 100,
  otherImportMs: 60,
  bundleBytes: 400_000,
  /**
   * Heap still reachable after full collections may grow by at most this over 10,000 turns: a
   * leak of 100 bytes per turn (smaller than any object a turn creates, such as one stored message
   * or request record) would show as 1 MB.
   */
  heapGrowthBytes: 1_000_000,
  /**
   * RSS may grow by at most this. While turns run, RSS rises by 100 MB or more (V8 grows its young
   * generation, each turn's upstream deadline keeps its request reachable for OPENAI_TIMEOUT_MS),
   * and after the pause V8 and malloc hand back more or less of it: in the runs that set this
   * threshold (heap flat each time) the quiet-to-quiet RSS moved between −33 and +18 MB. 32 MB sits
   * above that noise, and a native leak of 3.2 KB per turn (a socket, a buffer) would still reach it.
   */
  rssGrowthBytes: 32_000_000,
} as const;

function command(file: string, args: string[]): string {
  try {
    return execFileSync(file, args, {
      cwd: repoRoot,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  } catch {
    return 'unknown';
  }
}

/** A text file of /proc or /sys, trimmed; undefined where there is none (not Linux, an older kernel). */
function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
}

function idlePolicy(): string | undefined {
  const cpuidle = '/sys/devices/system/cpu/cpuidle';
  const driver = readText(`${cpuidle}/current_driver`);
  if (driver === undefined || driver === 'none') return undefined;
  // Older kernels show the governor read-only only.
  const governor = readText(`${cpuidle}/current_governor`) ?? readText(`${cpuidle}/current_governor_ro`);
  // guest_halt_poll_ns is the haltpoll governor's setting (module haltpoll), in nanoseconds.
  const pollNs =
    governor === 'haltpoll' ? readText('/sys/module/haltpoll/parameters/guest_halt_poll_ns') : undefined;
  const poll = Number(pollNs);
  const duration = poll >= 1e6 ? `${poll / 1e6} ms` : `${poll / 1e3} µs`;
  return (
    `cpuidle driver ${driver}${governor === undefined ? '' : `, governor ${governor}`}` +
    (pollNs === undefined || !Number.isFinite(poll)
      ? ''
      : poll === 0
        ? ', guest halt polling off (guest_halt_poll_ns 0: an idle vCPU halts at once, and the hypervisor wakes it)'
        : `, an idle vCPU polls up to ${duration} before it halts (guest_halt_poll_ns)`)
  );
}

export function machineInfo(date: Date): MachineInfo {
  // Not Linux: the os module's name will do.
  const modelLine = readText('/proc/cpuinfo')
    ?.split('\n')
    .find((entry) => entry.startsWith('model name'));
  const cpu = modelLine
    ? modelLine.slice(modelLine.indexOf(':') + 1).trim()
    : (cpus()[0]?.model ?? 'unknown');
  const commit = command('git', ['rev-parse', '--short', 'HEAD']);
  const dirty = command('git', ['status', '--porcelain', '--untracked-files=no']) !== '';
  return {
    cpu,
    cores: cpus().length,
    memoryGiB: totalmem() / 2 ** 30,
    node: process.version,
    nodeFlags: process.execArgv.filter((arg) => arg.startsWith('--') && arg !== '--import').join(' '),
    redis: command('redis-server', ['--version']).replace(/^Redis server v=(\S+).*$/, '$1'),
    date: date.toISOString(),
    commit: dirty ? `${commit} (with uncommitted changes in the working tree)` : commit,
    idle: idlePolicy(),
  };
}

const ms = (value: number, digits = 3) => (Number.isFinite(value) ? value.toFixed(digits) : 'n/a');
const kb = (bytes: number) => `${(bytes / 1000).toFixed(1)}`;
const mb = (bytes: number) => `${(bytes / 1e6).toFixed(2)}`;
const pct = (share: number | undefined) =>
  share === undefined || !Number.isFinite(share) ? 'n/a' : `${Math.round(share * 100)}%`;
const verdict = (pass: boolean) => (pass ? 'PASS' : '**MISS**');

/** A Markdown table with its columns padded to a common width, so it reads as a table in a terminal too. */
function table(header: string[], rows: string[][]): string {
  const width = (text: string) => [...text].length;
  // A pipe would end the cell, even inside backticks.
  const escaped = rows.map((row) => row.map((cell) => cell.replaceAll('|', '\\|')));
  const widths = header.map((title, column) =>
    Math.max(3, width(title), ...escaped.map((row) => width(row[column] ?? ''))),
  );
  const pad = (text: string, column: number) => text + ' '.repeat((widths[column] ?? 0) - width(text));
  const line = (cells: string[]) => `| ${cells.map((cell, column) => pad(cell, column)).join(' | ')} |`;
  return [line(header), line(widths.map((size) => '-'.repeat(size))), ...escaped.map(line)].join('\n');
}

interface Target {
  readonly name: string;
  readonly measured: string;
  readonly pass: boolean;
}

function functionLabel(fn: ColdStartResult['functions'][number]): string {
  return `${fn.method} ${fn.path}`;
}

function importLimit(fn: ColdStartResult['functions'][number]): number {
  if (fn.category === 'health') return TARGETS.healthImportMs;
  if (fn.category === 'chat/img') return TARGETS.chatImportMs;
  return TARGETS.otherImportMs;
}

/** Packages a route's bundle carries that its needs do not call for (a heuristic on the big three). */
function unneeded(fn: ColdStartResult['functions'][number]): string[] {
  const needs = new Set(fn.route?.needs ?? []);
  const bundled = new Set(fn.bundled.map((item) => item.name));
  const extra: string[] = [];
  if (!needs.has('openai') && bundled.has('openai')) extra.push('openai');
  if (!needs.has('redis') && bundled.has('ioredis')) extra.push('ioredis');
  if (
    !(needs as Set<string>).has('tokenizer') &&
    (bundled.has('gpt-tokenizer') || fn.assetFiles.some((file) => /o200k|ranks/i.test(file)))
  )
    extra.push('gpt-tokenizer');
  if (
    !needs.has('redis') &&
    !needs.has('openai') &&
    fn.externals.some((name) => name.startsWith('@aws-sdk/'))
  )
    extra.push('@aws-sdk (no secret to read)');
  if (
    fn.category === 'health' &&
    (fn.externals.length > 0 || fn.bundled.some((item) => !item.name.startsWith('functions/')))
  )
    extra.push(
      ...fn.externals,
      ...fn.bundled.filter((item) => !item.name.startsWith('functions/')).map((item) => item.name),
    );
  return [...new Set(extra)];
}

function targets(results: BenchResults): Target[] {
  const [, full, long] = results.handlerCases;
  const found: Target[] = [];
  if (full) {
    found.push({
      name: `Turn overhead in the handler, p50 ≤ ${TARGETS.handlerOverheadP50Ms} ms (100-message chat)`,
      measured: `${ms(full.overheadP50)} ms`,
      pass: full.overheadP50 <= TARGETS.handlerOverheadP50Ms,
    });
    found.push({
      name: `Turn overhead in the handler, p99 ≤ ${TARGETS.handlerOverheadP99Ms} ms (100-message chat)`,
      measured: `${ms(full.overheadP99)} ms`,
      pass: full.overheadP99 <= TARGETS.handlerOverheadP99Ms,
    });
  }
  found.push({
    name: `Turn overhead through the local HTTP server, p50 ≤ ${TARGETS.httpOverheadP50Ms} ms`,
    measured: `${ms(results.httpCase.overheadP50)} ms`,
    pass: results.httpCase.overheadP50 <= TARGETS.httpOverheadP50Ms,
  });
  if (full && long) {
    const ratio = long.aP50 / full.aP50;
    found.push({
      name: `Turn on the 10,000-message chat within ${TARGETS.longChatRatio}× of one on the chat that just fills the budget (p50 turn time)`,
      measured: `${ratio.toFixed(2)}× (${ms(long.aP50)} vs ${ms(full.aP50)} ms)`,
      pass: ratio <= TARGETS.longChatRatio,
    });
  }
  for (const trip of results.roundTrips) {
    if (trip.target === undefined) continue;
    const exact = trip.roundTrips.min === trip.target && trip.roundTrips.max === trip.target;
    found.push({
      name: `Redis round trips per ${trip.operation} = ${trip.target}`,
      measured: range(trip.roundTrips),
      pass: exact,
    });
  }
  const fns = results.coldStart.functions;
  const health = fns.filter((fn) => fn.category === 'health');
  const chat = fns.filter((fn) => fn.category === 'chat/img');
  const other = fns.filter((fn) => fn.category === 'other');
  const slowest = (list: typeof fns) =>
    list.reduce<(typeof fns)[number] | undefined>(
      (worst, fn) =>
        worst === undefined || !(fn.timing.median <= worst.timing.median) || fn.failure ? fn : worst,
      undefined,
    );
  const importTarget = (label: string, list: typeof fns, limit: number) => {
    const worst = slowest(list);
    const misses = list.filter((fn) => fn.failure !== undefined || !(fn.timing.median <= limit));
    found.push({
      name: `Cold import: ${label} ≤ ${limit} ms`,
      measured:
        worst === undefined
          ? 'no such function'
          : misses.length === 0
            ? `slowest ${functionLabel(worst)}: ${ms(worst.timing.median, 1)} ms`
            : misses.length <= 2
              ? misses
                  .map(
                    (fn) => `${functionLabel(fn)} ${fn.failure ? 'failed' : `${ms(fn.timing.median, 1)} ms`}`,
                  )
                  .join('; ')
              : `${misses.length} of ${list.length} over, ${ms(Math.min(...misses.map((fn) => fn.timing.median)), 1)}–` +
                `${ms(Math.max(...misses.map((fn) => fn.timing.median)), 1)} ms (slowest ${functionLabel(worst)}; each in section 3)`,
      pass: list.length > 0 && misses.length === 0,
    });
  };
  importTarget('the health function', health, TARGETS.healthImportMs);
  importTarget('each chat/image function', chat, TARGETS.chatImportMs);
  importTarget('every other function', other, TARGETS.otherImportMs);
  const big = fns.filter((fn) => fn.indexBytes > TARGETS.bundleBytes);
  const largest = fns.reduce(
    (max, fn) => (fn.indexBytes > max.indexBytes ? fn : max),
    fns[0] ?? ({ indexBytes: 0 } as (typeof fns)[number]),
  );
  found.push({
    name: `No bundle (index.js) over ${TARGETS.bundleBytes / 1000} KB`,
    measured:
      big.length === 0
        ? `largest ${largest.method ? functionLabel(largest) : ''}: ${kb(largest.indexBytes)} KB`
        : big.map((fn) => `${functionLabel(fn)} ${kb(fn.indexBytes)} KB`).join('; '),
    pass: big.length === 0,
  });
  const sourceMaps = fns.filter((fn) => fn.nodeOptions?.includes('--enable-source-maps'));
  found.push({
    name: 'No function enables source maps via NODE_OPTIONS=--enable-source-maps',
    measured: sourceMaps.length === 0 ? 'none does' : sourceMaps.map(functionLabel).join(', '),
    pass: sourceMaps.length === 0,
  });
  const healthExtras = health.flatMap(unneeded);
  found.push({
    name: 'The health function imports no SDK, no Redis, no OpenAI',
    measured:
      health.length === 0
        ? 'no health function'
        : healthExtras.length === 0
          ? `requires ${health[0]?.externals.length === 0 ? 'no package' : health[0]?.externals.join(', ')}; bundles ${health[0]?.bundled.map((item) => item.name).join(', ') || 'nothing'}`
          : healthExtras.join(', '),
    pass: health.length > 0 && healthExtras.length === 0,
  });
  const extras = fns.filter((fn) => fn.category !== 'health' && unneeded(fn).length > 0);
  found.push({
    name: "Each function's dependencies are only what its route needs (OpenAI, Redis, the tokenizer only where the route table says it needs them)",
    measured:
      extras.length === 0
        ? 'no route bundles openai, ioredis or the tokenizer it does not need'
        : extras.map((fn) => `${functionLabel(fn)}: ${unneeded(fn).join(', ')}`).join('; '),
    pass: extras.length === 0,
  });
  const { memory } = results;
  found.push({
    name: `Memory over ${memory.turns.toLocaleString('en-US')} turns: heap growth ≤ ${mb(TARGETS.heapGrowthBytes)} MB and RSS growth ≤ ${mb(TARGETS.rssGrowthBytes)} MB`,
    measured: `heap ${signed(memory.heapGrowth)} MB, RSS ${signed(memory.rssGrowth)} MB`,
    pass: memory.heapGrowth <= TARGETS.heapGrowthBytes && memory.rssGrowth <= TARGETS.rssGrowthBytes,
  });
  return found;
}

const signed = (bytes: number) => `${bytes >= 0 ? '+' : '−'}${mb(Math.abs(bytes))}`;
const range = ({ min, max }: { min: number; max: number }) => (min === max ? String(min) : `${min}–${max}`);

function overheadRows(cases: AbSummary[]): string[][] {
  return cases.map((item) => [
    item.label,
    item.chat,
    String(item.sentMessages),
    String(item.n),
    ms(item.aP50),
    ms(item.aP99),
    ms(item.bP50),
    ms(item.bP99),
    `**${ms(item.overheadP50)}** [${ms(item.overheadP50Interval.low)}, ${ms(item.overheadP50Interval.high)}]`,
    `**${ms(item.overheadP99)}** [${ms(item.overheadP99Interval.low)}, ${ms(item.overheadP99Interval.high)}]`,
    ms(item.pairedMedian),
  ]);
}

/** Each case's p50s by the order its pairs ran in. */
function orderLine(cases: readonly AbSummary[]): string {
  const parts = cases.flatMap((summary) => {
    const order = summary.byOrder;
    if (order === undefined) return [];
    const side = ({ a, b }: OrderP50) => `A ${ms(a)} − B ${ms(b)} = ${ms(a - b)}`;
    return [
      `${summary.label}, ${summary.chat.replace(/ \(.*\)$/, '')}: A first ${side(order.aFirst)}; B first ${side(order.bFirst)}`,
    ];
  });
  return `P50s by the order of the pair, ms (half the pairs each; in the pairs run A first each A follows an A and each B an A, in those run B first each A follows a B and each B a B) — ${parts.join('. ')}.`;
}

/** Where the in-process cases met garbage collection, and the overhead p99 over the pairs that met none. */
function gcSection(cases: AbSummary[]): string[] {
  const rows = cases.flatMap((item) => {
    const gc = item.gc;
    if (gc === undefined) return [];
    const side = (s: typeof gc.a, calls: number) =>
      [
        `${s.young} (${ms(s.young === 0 ? Number.NaN : s.youngMs / s.young, 2)})`,
        `${s.full} (${ms(s.full === 0 ? Number.NaN : s.fullMs / s.full, 2)})`,
        `${s.callsHit} (${((100 * s.callsHit) / calls).toFixed(1)}%)`,
      ] as const;
    return [
      [
        item.chat,
        ...side(gc.a, item.n),
        ...side(gc.b, item.n),
        ms(item.overheadP99),
        ms(gc.overheadP99WithoutGc),
        item.helperCpuMsPerPair === undefined ? 'n/a' : ms(item.helperCpuMsPerPair),
      ],
    ];
  });
  if (rows.length === 0) return [];
  return [
    '',
    "Garbage collection during these pairs: V8's pauses on the main thread (Node's `gc` performance entries), each " +
      'given to the A or B call it overlaps. "Young" are young-generation collections (scavenges); "full" are the ' +
      'pauses of full collections (incremental marking steps and the final pause). Mean pause in brackets, in ms. The ' +
      'column after the overhead p99 is that p99 over the pairs in which neither call met a pause. The last is the CPU ' +
      "this process's other threads used per pair (mostly V8's helper threads: its optimizing compiler, and the " +
      "collector's concurrent work), from the kernel's per-thread statistics: on a machine with few cores, that work " +
      'and redis-server take turns on them.',
    '',
    table(
      [
        'Chat',
        'A: young',
        'A: full',
        'A turns hit',
        'B: young',
        'B: full',
        'B calls hit',
        'Overhead p99',
        'Without pairs hit',
        'Helper threads, ms per pair',
      ],
      rows,
    ),
  ];
}

export function renderReport(results: BenchResults): string {
  const { machine, coldStart, memory } = results;
  const all = targets(results);
  const missed = all.filter((target) => !target.pass);
  const out: string[] = [];
  out.push('# Benchmark results');
  out.push('');
  if (results.quick)
    out.push('> **QUICK RUN (`--quick`): small samples, for trying the bench out, not for the record.**\n');
  out.push(
    `- Machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB.toFixed(1)} GiB memory`,
    ...(machine.idle === undefined ? [] : [`- Idle CPUs: ${machine.idle}`]),
    `- Node ${machine.node}, redis-server ${machine.redis}`,
    `- The bench process runs as \`node ${machine.nodeFlags}\`: the heap the Lambda runtime gives a ${FUNCTION_MEMORY_MB} MB function, as every route's is (infra/function-memory.ts), rather than Node's default for this machine's memory`,
    `- Date: ${machine.date}`,
    `- Commit: ${machine.commit}`,
    `- Command: \`${results.command}\` (took ${(results.seconds / 60).toFixed(1)} min)`,
    `- Host speed: B, the direct call to the stand-in (no proxy code), took ${ms(results.handlerCases[1]?.bP50 ?? Number.NaN)} ms at p50 on the 100-message chat; every figure moves with the host's speed, so compare runs by this first (see the last section)`,
    '',
    ...sharedMachineNote(results),
    `${missed.length === 0 ? 'All targets met.' : `**${missed.length} of ${all.length} targets missed.**`}`,
    '',
    '## Targets (issue 7)',
    '',
    table(
      ['Target', 'Measured', ''],
      all.map((target) => [target.name, target.measured, verdict(target.pass)]),
    ),
    '',
    '## 1. Turn overhead',
    '',
    `A: a buffered \`POST /{chat_id}/chat\` turn through the handler as deployed: its function built as the stack ` +
      `builds it (esbuild with the options of infra/bundling/options.ts: minified, CommonJS, the lean ioredis; ` +
      `${kb(results.deployedBytes)} KB, the tokenizer's ranks beside it), loaded in this process and invoked as Lambda ` +
      'would (test/support/handlers.ts). B: the request A sends upstream (captured at the stand-in; in the pairs ' +
      "run B first, the case's previous turn's, which A's must match), sent straight to the stand-in by the " +
      "functions' own OpenAI client, bundled the same way: " +
      '`complete()` of functions/shared/openai.ts (the same keep-alive agent settings, headers, timeout and retries) ' +
      'with the very messages, as message objects, and model options A sent. Overhead = pN(A) − pN(B); ' +
      'in brackets a 95% bootstrap interval (pairs resampled together); "median(A−B)" is the median of the ' +
      'per-pair differences. The order alternates: every other pair runs B first, with the request of ' +
      "the case's previous turn (every turn of a case sends the same request; A's own is checked against it, byte " +
      "for byte), as each call's time depends on which call ran just before it (each side's p50 in each order " +
      'is given below the table). ' +
      "The intervals are within this run only: between runs, the machine's state moves the figures " +
      'more than that (by up to about 20% at p50 on this machine), so near a threshold compare several runs. Through the local HTTP server: A is a `fetch` to the dev server (a child process, ' +
      'as `npm run dev` runs), B a `fetch` of the same upstream request straight to the stand-in. For this row the ' +
      "dev server's upstream is the stand-in in a process of its own (bench/upstream-process.ts), as OpenAI is never " +
      "in the caller's process: both the dev server's upstream call and B cross a process boundary. (With the " +
      'stand-in inside the bench process, B alone would skip it.) Before the first in-process case, ' +
      `${results.warmup.first.toLocaleString('en-US')} untimed pairs on chats that fill the budget, so that V8 has ` +
      "compiled most of the turn's code (while it compiles, its optimizing compiler keeps a core busy for " +
      'milliseconds at a time, and redis-server may wait for one: see "helper threads" below); each row then has ' +
      `${results.warmup.perCase.toLocaleString('en-US')} untimed pairs of its own. Times in ms; ` +
      'percentiles are nearest-rank.',
    '',
    table(
      [
        'Path',
        'Chat',
        'Msgs sent',
        'Pairs',
        'A p50',
        'A p99',
        'B p50',
        'B p99',
        'Overhead p50 [95% CI]',
        'Overhead p99 [95% CI]',
        'median(A−B)',
      ],
      overheadRows([...results.handlerCases, results.httpCase]),
    ),
    '',
    `Every chat holds the same exchange: a ${results.tokens.user}-token user message and a ${results.tokens.reply}-token ` +
      `reply (tokens as functions/shared/tokens.ts counts them, with the per-message overhead), and the stand-in always answers that reply, ` +
      `so every turn appends the pair the chats were seeded with. MAX_CONTEXT_TOKENS=${results.budget}: exactly the ` +
      '100 stored messages, the new one and the 3 reply-priming tokens, so the 100-message chat just fills the budget and ' +
      'the 10,000-message chat sends the same 101 messages (checked on every turn). Logs and metrics are off ' +
      '(POWERTOOLS_LOG_LEVEL=SILENT, POWERTOOLS_METRICS_DISABLED=true); deployed, each request also writes its log line and EMF metrics. ' +
      'The in-process handlers run with AWS_LAMBDA_FUNCTION_NAME set, as the Lambda runtime sets it: one invocation at a time, ' +
      "Lambda's default mode, in which a request's record is kept in a variable rather than an AsyncLocalStorage (functions/shared/observability.ts); " +
      'the dev server, which serves requests side by side, keeps an AsyncLocalStorage.',
    '',
    `Ratio 10,000 : 100 messages — p50 turn time ${((results.handlerCases[2]?.aP50 ?? Number.NaN) / (results.handlerCases[1]?.aP50 ?? Number.NaN)).toFixed(2)}×, ` +
      `p99 ${((results.handlerCases[2]?.aP99 ?? Number.NaN) / (results.handlerCases[1]?.aP99 ?? Number.NaN)).toFixed(2)}×, ` +
      `p50 overhead ${((results.handlerCases[2]?.overheadP50 ?? Number.NaN) / (results.handlerCases[1]?.overheadP50 ?? Number.NaN)).toFixed(2)}×.`,
    '',
    orderLine([...results.handlerCases, results.httpCase]),
    ...gcSection(results.handlerCases),
    '',
    '## 2. Redis round trips per operation',
    '',
    "Counted on the handlers' own ioredis client (its `sendCommand` patched; the handlers run from the TypeScript " +
      'source here, the code the bundles are built from), after a warm-up, over ' +
      `${results.roundTrips[0]?.invocations ?? 0} invocations each, on a chat that fills the budget. A round trip is the ` +
      'commands sent before the next macrotask or before the first reply to one of them arrives.',
    '',
    table(
      ['Operation', 'Round trips', 'Commands', 'Target', '', 'Batches (last invocation)'],
      results.roundTrips.map((trip) => [
        trip.operation,
        range(trip.roundTrips),
        range(trip.commands),
        trip.target === undefined ? '—' : String(trip.target),
        trip.target === undefined
          ? ''
          : verdict(trip.roundTrips.min === trip.target && trip.roundTrips.max === trip.target),
        `\`${trip.batches}\``,
      ]),
    ),
    '',
    '## 3. Cold start',
    '',
    `${coldStart.synth.ran ? `\`cdk synth\` took ${coldStart.synth.seconds.toFixed(1)} s.` : ''} ${coldStart.synth.note ?? ''}`.trim(),
    '',
    'Each function of `cdk.out/ChatProxy.template.json`, its asset copied to a temporary folder with a CommonJS ' +
      "package.json and `node_modules/@aws-sdk` linked to this repo's (the runtime ships `@aws-sdk`, which the bundles leave " +
      `external), then \`require('./index.js')\` timed in a fresh \`node\` process (${coldStart.nodeVersion}; Lambda runs Node 24 ` +
      `on arm64) with the function's environment from the template (secret ARNs as dummy ARNs) and the variables the runtime sets; ` +
      `median of ${coldStart.functions[0]?.timing.runs ?? 0} runs, after one untimed run. No network call happens at import. ` +
      '"Settled" is the time from the require until the event loop first ran dry: work the import started in the ' +
      `background (e.g. loading the tokenizer's ranks), which a first request arriving at once would wait for. Node's own start-up ` +
      `before the require: median ${ms(median(coldStart.functions.map((fn) => fn.timing.bootMedian)), 1)} ms (not included).`,
    '',
    table(
      [
        'Function',
        'Kind',
        `index.js KB (≤ ${TARGETS.bundleBytes / 1000})`,
        'Asset KB',
        'Import ms (min–max)',
        'Settled ms',
        'Import limit',
        '',
        'Requires at run time (packages)',
        'Largest bundled packages (KB)',
      ],
      coldStart.functions.map((fn) => [
        functionLabel(fn),
        fn.category,
        fn.indexBytes <= TARGETS.bundleBytes ? kb(fn.indexBytes) : `**${kb(fn.indexBytes)}** (over)`,
        kb(fn.assetBytes),
        fn.failure
          ? `FAILED: ${fn.failure.split('\n')[0]?.slice(0, 120)}`
          : `${ms(fn.timing.median, 1)} (${ms(fn.timing.min, 1)}–${ms(fn.timing.max, 1)})`,
        fn.timing.settledMedian === undefined ? 'n/a' : ms(fn.timing.settledMedian, 1),
        `≤ ${importLimit(fn)}`,
        verdict(fn.failure === undefined && fn.timing.median <= importLimit(fn)),
        fn.externals.length === 0 ? 'none' : fn.externals.join(', '),
        fn.bundled
          .slice(0, 4)
          .map((item) => `${item.name} ${kb(item.bytes)}`)
          .join(', '),
      ]),
    ),
    '',
    'Asset files: ' +
      [...new Set(coldStart.functions.map((fn) => fn.assetFiles.join(' + ')))]
        .map((files) => `\`${files}\``)
        .join('; ') +
      '. NODE_OPTIONS: ' +
      ([...new Set(coldStart.functions.map((fn) => fn.nodeOptions ?? 'unset'))].join(', ') || 'unset') +
      '. "Largest bundled packages" comes from an esbuild metafile of the route rebuilt with the stack\'s bundling options ' +
      '(minified CJS, node24, `@aws-sdk/*` external); rebuilt vs deployed index.js: ' +
      coldStart.functions
        .filter(
          (fn) =>
            fn.replicatedBytes > 0 && Math.abs(fn.replicatedBytes - fn.indexBytes) / fn.indexBytes > 0.05,
        )
        .map((fn) => `${functionLabel(fn)} ${kb(fn.replicatedBytes)} vs ${kb(fn.indexBytes)} KB`)
        .join('; ')
        .replace(/^$/, 'within 5% for every function') +
      '.',
    '',
    'What each package the functions import costs on its own (bundled alone the same way, imported in a fresh process, median):',
    '',
    table(
      ['Package', 'Bundled alone, KB', 'Import ms (min–max)', 'In the deployed functions'],
      [...coldStart.packages]
        .sort((a, b) => (b.timing.median || 0) - (a.timing.median || 0))
        .map((item) => [
          `\`${item.specifier}\``,
          item.specifier.startsWith('@aws-sdk/') ? 'external' : kb(item.bytes),
          item.failure
            ? `FAILED: ${item.failure.split('\n')[0]?.slice(0, 100)}`
            : `${ms(item.timing.median, 1)} (${ms(item.timing.min, 1)}–${ms(item.timing.max, 1)})`,
          usage(item.specifier, coldStart.functions),
        ]),
    ),
    '',
    '## 4. Memory',
    '',
    `Buffered turns through the deployed handler (as in section 1) in this process, round-robin over ${memory.chats} chats seeded with 100 messages ` +
      `(so every turn sends the full window), ${memory.warmup.toLocaleString('en-US')} warm-up turns, then ` +
      `${memory.turns.toLocaleString('en-US')} measured (${memory.seconds.toFixed(1)} s, ${memory.turnsPerSecond.toFixed(0)} turns/s). ` +
      'Each reading follows full garbage collections (`--expose-gc`). The quiet readings come after a ' +
      `${(memory.quietMs / 1000).toFixed(0)} s pause with no turn running, longer than any timer a turn arms (the upstream ` +
      'deadline, OPENAI_TIMEOUT_MS + 1 s): what a turn still holds through such a timer is released by then, so the growth ' +
      'from the first quiet reading to the last is what the turns left behind. Thresholds: heap ≤ ' +
      `${mb(TARGETS.heapGrowthBytes)} MB (a leak of 100 bytes per turn would reach it; every object a turn keeps is bigger), ` +
      `RSS ≤ ${mb(TARGETS.rssGrowthBytes)} MB (RSS rises by 100 MB or more while turns run and V8 and malloc hand only part ` +
      'or less of it back after the pause: in the runs that set this threshold, each with a flat heap, quiet-to-quiet RSS ' +
      'moved between −33 and +18 MB; 32 MB is above that noise yet a native leak of 3.2 KB per turn would reach it; ' +
      'arrayBuffers shows native buffers directly).',
    '',
    table(
      ['Reading', 'RSS MB', 'heapUsed MB', 'external MB', 'arrayBuffers MB'],
      memory.checkpoints.map((point) => [
        point.quiet
          ? point.turns === 0
            ? 'after the warm-up and a pause (quiet)'
            : `after ${point.turns.toLocaleString('en-US')} turns and a pause (quiet)`
          : `after ${point.turns.toLocaleString('en-US')} turns (running)`,
        mb(point.rss),
        mb(point.heapUsed),
        mb(point.external),
        mb(point.arrayBuffers),
      ]),
    ),
    '',
    `Left behind (quiet to quiet): RSS ${signed(memory.rssGrowth)} MB, heap ${signed(memory.heapGrowth)} MB. Held while ` +
      `running (right after the last turn, before the pause): heap ${signed(memory.heapHeldWhileRunning)} MB; heap slope over ` +
      `the running readings ${memory.heapSlopePerTurn.toFixed(0)} B/turn.`,
    '',
    '## 5. Throughput through the local HTTP server',
    '',
    `Each worker on its own chat (seeded with 100 messages, so every turn sends 101), sending its next turn as soon as the last ` +
      `one answered; turns completed in a ${results.throughput[0]?.seconds ?? 0} s window after a warm-up are counted. The ` +
      'load generator runs in the bench process and the stand-in in its own, on the same cores as the dev server and ' +
      'redis-server; ' +
      'CPU is the share of one core each process used in the window.',
    '',
    table(
      [
        'Concurrent chats',
        'Turns/s',
        'p50 ms',
        'p99 ms',
        'Errors',
        'CPU dev server',
        'CPU bench (client)',
        'CPU stand-in',
        'CPU redis-server',
      ],
      results.throughput.map((item) => [
        String(item.concurrency),
        item.turnsPerSecond.toFixed(0),
        ms(item.p50, 2),
        ms(item.p99, 2),
        String(item.errors),
        pct(item.cpu.devServer),
        pct(item.cpu.bench),
        pct(item.cpu.upstream),
        pct(item.cpu.redis),
      ]),
    ),
    '',
    '## Where the time goes (diagnostics)',
    '',
    'The diagnostics run on a chat of their own, seeded with 100 messages and a pair longer after each turn; every ' +
      'turn still sends the 101 messages of the budget, as on the 100-message chats above. Like the round trips (section ' +
      '2), they run the handler and the OpenAI client from the TypeScript source under tsx, not from the bundles of ' +
      'section 1: there the Redis client can be instrumented and the profiles name our functions. tsx adds a little ' +
      'the bundles do not have (its `__name` helper on every function it names as it is made). ' +
      (results.leanIoredis
        ? "The source runs the bundles' lean copy of ioredis (infra/bundling/lean-ioredis.ts; " +
          'local/lean-ioredis.ts resolves `ioredis` to it in this process and in the dev server), as the deployed functions do.'
        : 'The source runs the installed ioredis: the lean copy could not be made (see the warning the bench printed).'),
    '',
    `- Redis: a buffered turn on the diagnostics' chat waits ${ms(results.redisWait.waitMedianMs)} ms (median of 200) on its ` +
      `Redis round trips, of ${ms(results.redisWait.turnMedianMs)} ms for the whole turn in process (upstream call included). ` +
      `Its round trips: \`${results.redisWait.batches}\`.`,
    `- Console: a buffered turn writes ${results.writes.perTurn.stdout} time(s) to stdout and ${results.writes.perTurn.stderr} ` +
      `time(s) to stderr with logs and metrics off${results.writes.samples.length > 0 ? `, e.g. ${results.writes.samples.map((sample) => `\`${sample}\``).join('; ')}` : ''}.`,
    ...busyLines(results.busy),
    wakeUpLine(results.wakeUp),
    `- CPU: V8 sampling profiles (100 µs) of ${results.profileA.iterations} A turns and of ${results.profileB.iterations} B calls ` +
      `(the diagnostics' chat), self time per turn: A ${ms(results.profileA.totalMs / results.profileA.iterations)} ms, ` +
      `B ${ms(results.profileB.totalMs / results.profileB.iterations)} ms of CPU. The stand-in runs in this process in both, so ` +
      'its work (and the HTTP server side of `node:` internals) cancels out in A − B, which is what the proxy adds:',
    '',
    table(
      ['Origin', 'A ms/turn', 'B ms/call', 'A − B'],
      profileDifference(results.profileA, results.profileB, 'byOrigin', 14).map((row) => [
        row.name,
        ms(row.a),
        ms(row.b),
        `**${ms(row.difference)}**`,
      ]),
    ),
    '',
    'Functions with the most added self time (A − B):',
    '',
    table(
      ['Function', 'A ms/turn', 'B ms/call', 'A − B'],
      profileDifference(results.profileA, results.profileB, 'byFunction', 20).map((row) => [
        `\`${row.name}\``,
        ms(row.a),
        ms(row.b),
        `**${ms(row.difference)}**`,
      ]),
    ),
    '',
    '## Machine load during the run',
    '',
    'Cores busy on the whole machine and cores used by the bench (its processes and children) per phase, from /proc. ' +
      `The machine has ${results.machine.cores}; the rest of "busy" is other work competing for them.`,
    '',
    table(
      ['Phase', 'Seconds', 'Machine busy (cores)', 'Bench (cores)', 'Others (cores)'],
      results.load.map((phase) => [
        phase.phase,
        phase.seconds.toFixed(1),
        phase.machineCores.toFixed(2),
        phase.benchCores.toFixed(2),
        Math.max(0, phase.machineCores - phase.benchCores).toFixed(2),
      ]),
    ),
    '',
    '## What bounds it / what was tried',
    '',
    missed.length === 0
      ? 'Every target is met.'
      : `Missed: ${missed.map((target) => `${target.name} (${target.measured})`).join('; ')}.`,
    '',
    '_Observed by this run:_',
    '',
    ...observations(results).map((line) => `- ${line}`),
    '',
    analysis(),
    '',
  );
  return out.join('\n');
}

/** How the deployed functions carry a package: bundled in some, or left external. */
function usage(specifier: string, functions: ColdStartResult['functions']): string {
  const parts = specifier.split('/');
  const name = specifier.startsWith('@') ? `${parts[0]}/${parts[1]}` : (parts[0] ?? specifier);
  const bundled = functions.filter((fn) => fn.bundled.some((item) => item.name === name)).length;
  const external = functions.filter((fn) => fn.externals.some((item) => item.split(' ')[0] === specifier));
  const lazily = external.filter((fn) =>
    fn.externals.some((item) => item === `${specifier} (import())`),
  ).length;
  const notes: string[] = [];
  if (bundled > 0) notes.push(`${name} bundled in ${bundled}`);
  if (external.length > lazily) notes.push(`required at import by ${external.length - lazily}`);
  if (lazily > 0) notes.push(`external, behind a dynamic import() in ${lazily}`);
  return notes.join('; ') || 'not loaded';
}

/** A warning when other work kept the machine busy during the measurements. */
function sharedMachineNote(results: BenchResults): string[] {
  const busiest = results.load.reduce<PhaseLoad | undefined>(
    (worst, phase) =>
      worst === undefined || phase.machineCores - phase.benchCores > worst.machineCores - worst.benchCores
        ? phase
        : worst,
    undefined,
  );
  const others = busiest ? busiest.machineCores - busiest.benchCores : 0;
  if (busiest === undefined || others <= 0.25) return [];
  return [
    `> **The machine was shared during this run**: other processes kept up to ${others.toFixed(2)} of its ` +
      `${results.machine.cores} cores busy (during ${busiest.phase}; see "Machine load"), so these figures are slower and ` +
      'noisier than on an idle machine.',
    '',
  ];
}

function median(values: number[]): number {
  const ordered = [...values].sort((a, b) => a - b);
  return ordered[Math.ceil(ordered.length / 2) - 1] ?? Number.NaN;
}

/** Facts that point at the cost behind each miss. */
function observations(results: BenchResults): string[] {
  const lines: string[] = [];
  const [, full, long] = results.handlerCases;
  if (full) {
    lines.push(
      `Handler overhead p50 on the 100-message chat: ${ms(full.overheadP50)} ms. The turn's two Redis round trips take ` +
        `about ${ms(results.redisWait.waitMedianMs)} ms from the first command sent to the last reply parsed, this ` +
        'thread\'s own work for them included ("Busy or waiting" in the diagnostics splits CPU from waiting); ' +
        `a bare \`PING\` takes ${results.wakeUp.afterBusy.roundTripUs.toFixed(0)} µs on this host when redis-server has ` +
        `been idle for ${results.wakeUp.busyMs} ms, as between a turn's round trips, against ` +
        `${results.wakeUp.backToBack.roundTripUs.toFixed(0)} µs back to back ("Waking Redis").`,
    );
  }
  if (full && long) {
    lines.push(`10,000 vs 100 messages: overhead p50 ${ms(long.overheadP50)} vs ${ms(full.overheadP50)} ms.`);
  }
  const added = profileDifference(results.profileA, results.profileB, 'byOrigin', 5)
    .filter((row) => row.difference > 0)
    .map((row) => `${row.name} +${ms(row.difference)} ms`);
  lines.push(`CPU the proxy adds per turn, by origin (top): ${added.join(', ')}.`);
  const writes = profileDifference(results.profileA, results.profileB, 'byFunction', 1000).find((row) =>
    row.name.startsWith('writeUtf8String '),
  );
  if (writes && writes.difference > 0.05) {
    lines.push(
      `\`writeUtf8String\` (string writes to a socket or pipe) adds ${ms(writes.difference)} ms per turn; with no console ` +
        `output (${results.writes.perTurn.stdout + results.writes.perTurn.stderr} writes per turn) these are socket writes ` +
        'B does not make: the Redis commands, which ioredis writes one call per command (one per MULTI block).',
    );
  }

  if (results.writes.perTurn.stderr + results.writes.perTurn.stdout > 0) {
    lines.push(
      `Each turn writes to the console with logs and metrics off (stdout ${results.writes.perTurn.stdout}, stderr ${results.writes.perTurn.stderr} per turn).`,
    );
  }
  const others = results.load.filter((phase) => phase.machineCores - phase.benchCores > 0.25);
  if (others.length > 0) {
    lines.push(
      `The machine was shared: other processes kept ${others.map((phase) => `${Math.max(0, phase.machineCores - phase.benchCores).toFixed(2)} cores busy during ${phase.phase}`).join(', ')}.`,
    );
  }
  const chat = results.coldStart.functions.filter((fn) => fn.category === 'chat/img');
  for (const fn of chat) {
    lines.push(
      `${functionLabel(fn)}: index.js ${kb(fn.indexBytes)} KB (asset ${kb(fn.assetBytes)} KB), import ` +
        `${ms(fn.timing.median, 1)} ms, settled ${fn.timing.settledMedian === undefined ? 'n/a' : ms(fn.timing.settledMedian, 1)} ms ` +
        '(a first turn arriving at once waits for the background work); largest bundled: ' +
        fn.bundled
          .slice(0, 3)
          .map((item) => `${item.name} ${kb(item.bytes)} KB`)
          .join(', ') +
        '.',
    );
  }
  const costly = [...results.coldStart.packages]
    .filter((item) => Number.isFinite(item.timing.median))
    .sort((a, b) => b.timing.median - a.timing.median)
    .slice(0, 4)
    .map((item) => `${item.specifier} ${ms(item.timing.median, 1)} ms`);
  lines.push(`Costliest imports on their own: ${costly.join(', ')}.`);
  return lines;
}

/** The maintainers' reading of the misses (bench/ANALYSIS.md), kept across runs. */
function analysis(): string {
  const file = new URL('./ANALYSIS.md', import.meta.url);
  return existsSync(file)
    ? readFileSync(file, 'utf8').trim()
    : '_No analysis written yet (bench/ANALYSIS.md)._';
}
