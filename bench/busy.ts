import { readdirSync, readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import { mean, median } from './stats';

/**
 * Where the wall time of a turn goes: on this process's main thread's CPU, or waiting (for Redis,
 * for the wake-up of a sleeping core), and how long Redis itself spent executing the commands.
 * Read per call from getrusage and the kernel's per-thread scheduler statistics, not sampled, so
 * nothing is added to the work measured.
 */

export interface BusySide {
  readonly calls: number;
  /** Means per call (garbage collection pauses and slow calls included): the wall time, the main
   * thread's time on a CPU (JavaScript, V8, system calls), and the rest of the wall time (waiting). */
  readonly wallMs: number;
  readonly mainCpuMs: number;
  readonly waitMs: number;
  /** Every other thread of this process (V8's compiler and collector helpers, libuv's pool), per call. */
  readonly helperCpuMs: number;
  /**
   * Medians of each call's own figures, comparable with the p50s: its wall time, the main
   * thread's CPU time during it (the process's from getrusage, exact to the microsecond, less the
   * other threads'), and the rest.
   */
  readonly median: { readonly wallMs: number; readonly cpuMs: number; readonly waitMs: number };
}

export interface BusyResult {
  readonly a: BusySide;
  readonly b: BusySide;
  /** Redis's own time executing A's commands, per turn (INFO commandstats), by command. */
  readonly redisUsPerTurn: ReadonlyMap<string, number>;
}

/** Nanoseconds each thread of this process has spent on a CPU, by thread id. */
function threadCpuNs(): Map<string, number> {
  const times = new Map<string, number>();
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      times.set(tid, schedNs(`/proc/self/task/${tid}/schedstat`));
    } catch {
      // The thread ended since the listing.
    }
  }
  return times;
}

/** The first field of a schedstat file: nanoseconds on a CPU. */
function schedNs(path: string): number {
  return Number(readFileSync(path, 'utf8').split(' ')[0]);
}

/**
 * Whether this kernel keeps per-thread scheduler statistics: a kernel built without them shows
 * zeros, which would count the helper threads' time as the main thread's.
 */
export function canMeasureBusy(): boolean {
  try {
    const ns = schedNs(`/proc/self/task/${process.pid}/schedstat`);
    return Number.isFinite(ns) && ns > 0;
  } catch {
    return false;
  }
}

/**
 * Nanoseconds the threads other than the main one spent on a CPU between two readings, counting
 * only threads present in both (one that ended in between takes its whole past with it).
 */
function helperCpuNsBetween(main: string, before: Map<string, number>, after: Map<string, number>): number {
  let ns = 0;
  for (const [tid, used] of after) {
    const earlier = before.get(tid);
    if (tid !== main && earlier !== undefined) ns += used - earlier;
  }
  return ns;
}

/**
 * CPU the other threads of this process (V8's optimizing compiler and its concurrent collector,
 * mostly) use from now on: call the answer for the ms so far. Undefined where the kernel keeps no
 * per-thread statistics.
 */
export function helperCpuMeter(): (() => number) | undefined {
  return canMeasureBusy() ? startHelperMeter() : undefined;
}

/** The ms the other threads of this process have used since this call, each time the answer is called. */
function startHelperMeter(): () => number {
  const main = String(process.pid);
  const before = threadCpuNs();
  return () => helperCpuNsBetween(main, before, threadCpuNs()) / 1e6;
}

async function side(calls: number, work: () => Promise<void>): Promise<BusySide> {
  const walls: number[] = [];
  const cpus: number[] = [];
  const waits: number[] = [];
  let helpersMs = 0;
  for (let i = 0; i < calls; i += 1) {
    // getrusage is exact for the process but counts every thread; the helpers' own figures (exact
    // while they sleep, which is most of the time) are taken off, leaving the main thread's. The
    // readings fall between calls, outside what is measured.
    const helpersSince = startHelperMeter();
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await work();
    const t1 = performance.now();
    const c1 = process.cpuUsage(c0);
    const helpers = helpersSince();
    // getrusage's window is a little wider than the timed one: capped, so waiting is never negative.
    const cpu = Math.min(Math.max((c1.user + c1.system) / 1000 - helpers, 0), t1 - t0);
    helpersMs += helpers;
    walls.push(t1 - t0);
    cpus.push(cpu);
    waits.push(t1 - t0 - cpu);
  }
  return {
    calls,
    wallMs: mean(walls),
    mainCpuMs: mean(cpus),
    waitMs: mean(waits),
    helperCpuMs: helpersMs / calls,
    median: { wallMs: median(walls), cpuMs: median(cpus), waitMs: median(waits) },
  };
}

/** INFO commandstats as microseconds by command name. */
function commandMicros(info: string): Map<string, number> {
  const micros = new Map<string, number>();
  for (const match of info.matchAll(/^cmdstat_([^:]+):calls=\d+,usec=(\d+)/gm)) {
    micros.set(match[1] as string, Number(match[2]));
  }
  return micros;
}

/**
 * `calls` of A in a row, then `calls` of B in a row (each side after the same number of untimed
 * ones), on this process; Redis's statistics are reset before the A block and read after it. The
 * Redis time of a script includes the commands it runs, which are not counted again.
 */
export async function measureBusy(
  redisUrl: string,
  calls: number,
  turnA: () => Promise<void>,
  callB: () => Promise<void>,
): Promise<BusyResult> {
  const admin = new Redis(redisUrl);
  try {
    for (let i = 0; i < 50; i += 1) await turnA();
    await admin.config('RESETSTAT');
    const a = await side(calls, turnA);
    const stats = commandMicros(await admin.info('commandstats'));
    for (let i = 0; i < 50; i += 1) await callB();
    const b = await side(calls, callB);
    // A buffered turn's round trips are [EVALSHA, LRANGE] [EVALSHA] (section 2; EVAL after a
    // NOSCRIPT). The commands the scripts run are listed too (GET, HSET…) but their time is inside
    // the script's, so only these are summed; none of the turn's scripts runs LRANGE itself.
    const topLevel = ['evalsha', 'eval', 'lrange'];
    const redisUsPerTurn = new Map<string, number>();
    for (const name of topLevel) {
      const usec = stats.get(name);
      if (usec !== undefined && usec > 0) redisUsPerTurn.set(name, usec / calls);
    }
    return { a, b, redisUsPerTurn };
  } finally {
    admin.disconnect();
  }
}
