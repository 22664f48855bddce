import { Session } from 'node:inspector/promises';
import { leanCopyPackage } from '../infra/bundling/lean-ioredis';

/**
 * A CPU profile of some work in this process (the V8 sampling profiler, as `node --cpu-prof`
 * uses), summed up as self time per function and per origin: a package under node_modules, one of
 * our source files, or Node's internals.
 */

export interface ProfileSummary {
  readonly totalMs: number;
  readonly iterations: number;
  /** Self ms over the whole run, by origin and by function. */
  readonly byOrigin: Map<string, number>;
  readonly byFunction: Map<string, number>;
}

/** One row of a differential profile: ms per iteration in A, in B, and A − B. */
export interface ProfileDifference {
  readonly name: string;
  readonly a: number;
  readonly b: number;
  readonly difference: number;
}

/**
 * Where A spends more than B, per iteration: the entries with the largest A − B, and the total.
 * Both profiles ran the same stand-in in-process, so what they share cancels out.
 */
export function profileDifference(
  a: ProfileSummary,
  b: ProfileSummary,
  key: 'byOrigin' | 'byFunction',
  count: number,
): ProfileDifference[] {
  const names = new Set([...a[key].keys(), ...b[key].keys()]);
  return [...names]
    .map((name) => {
      const perA = (a[key].get(name) ?? 0) / a.iterations;
      const perB = (b[key].get(name) ?? 0) / b.iterations;
      return { name, a: perA, b: perB, difference: perA - perB };
    })
    .sort((x, y) => y.difference - x.difference)
    .slice(0, count);
}

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { functionName: string; url: string; lineNumber: number };
}

interface CpuProfile {
  readonly nodes: ProfileNode[];
  readonly samples?: number[];
  readonly timeDeltas?: number[];
}

function originOf(url: string, functionName: string): string {
  if (url === '') {
    if (functionName === '(garbage collector)') return '(garbage collector)';
    if (functionName === '(idle)' || functionName === '(program)' || functionName === '(root)')
      return functionName;
    return '(native)';
  }
  // A lean copy (infra/bundling/lean-ioredis.ts) counts as its package.
  const lean = leanCopyPackage(url);
  if (lean !== undefined) return lean;
  const modules = url.lastIndexOf('node_modules/');
  if (modules !== -1) {
    const parts = url.slice(modules + 'node_modules/'.length).split('/');
    return parts[0]?.startsWith('@') ? `${parts[0]}/${parts[1]}` : (parts[0] ?? url);
  }
  if (url.startsWith('node:')) return url;
  const root = url.indexOf('/functions/');
  if (root !== -1) return url.slice(root + 1).replace(/\?.*$/, '');
  for (const folder of ['/local/', '/test/', '/bench/']) {
    const at = url.indexOf(folder);
    if (at !== -1) return url.slice(at + 1).replace(/\?.*$/, '');
  }
  return url;
}

/** Runs `work` `iterations` times under the profiler (100 µs sampling). */
export async function profile(iterations: number, work: () => Promise<void>): Promise<ProfileSummary> {
  const session = new Session();
  session.connect();
  try {
    await session.post('Profiler.enable');
    await session.post('Profiler.setSamplingInterval', { interval: 100 });
    await session.post('Profiler.start');
    for (let i = 0; i < iterations; i += 1) await work();
    const { profile: result } = (await session.post('Profiler.stop')) as { profile: CpuProfile };
    const nodes = new Map(result.nodes.map((node) => [node.id, node]));
    const byOrigin = new Map<string, number>();
    const byFunction = new Map<string, number>();
    let total = 0;
    const samples = result.samples ?? [];
    const deltas = result.timeDeltas ?? [];
    for (let i = 0; i < samples.length; i += 1) {
      const node = nodes.get(samples[i] ?? -1);
      // A sample's time is the delta to the next sample.
      const ms = (deltas[i + 1] ?? 0) / 1000;
      if (node === undefined) continue;
      const { functionName, url, lineNumber } = node.callFrame;
      if (functionName === '(idle)') continue;
      total += ms;
      const origin = originOf(url, functionName);
      byOrigin.set(origin, (byOrigin.get(origin) ?? 0) + ms);
      // V8 names a regular expression's compiled code after its source, which can be very long.
      const name = functionName.length > 60 ? `${functionName.slice(0, 57)}…` : functionName;
      const label = `${name || '(anonymous)'} ${origin}${url ? `:${lineNumber + 1}` : ''}`;
      byFunction.set(label, (byFunction.get(label) ?? 0) + ms);
    }
    return { totalMs: total, iterations, byOrigin, byFunction };
  } finally {
    await session.post('Profiler.disable').catch(() => undefined);
    session.disconnect();
  }
}
