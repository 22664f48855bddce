/**
 * Percentiles and bootstrap intervals. Percentiles are nearest-rank: the p-th percentile of n
 * samples is the ceil(p/100 * n)-th smallest, so it is always a measured value.
 */

export function sorted(values: readonly number[]): number[] {
  return Array.from(Float64Array.from(values).sort());
}

/** Nearest-rank percentile of an ascending array. */
export function percentileOfSorted(ascending: readonly number[], p: number): number {
  if (ascending.length === 0) return Number.NaN;
  const rank = Math.min(ascending.length, Math.max(1, Math.ceil((p / 100) * ascending.length)));
  return ascending[rank - 1] ?? Number.NaN;
}

export function percentile(values: readonly number[], p: number): number {
  return percentileOfSorted(sorted(values), p);
}

export function mean(values: readonly number[]): number {
  return values.length === 0 ? Number.NaN : values.reduce((sum, value) => sum + value, 0) / values.length;
}

/** A small seeded PRNG (mulberry32), so the bootstrap intervals are reproducible run to run. */
function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface Interval {
  readonly low: number;
  readonly high: number;
}

/**
 * A 95% percentile-bootstrap interval of pN(A) - pN(B) for paired samples: pairs are resampled
 * together, so the interleaving (A and B measured side by side) is kept.
 */
export function pairedPercentileDifferenceInterval(
  a: readonly number[],
  b: readonly number[],
  p: number,
  resamples = 1000,
): Interval {
  const n = Math.min(a.length, b.length);
  const random = prng(0x5eed + Math.round(p * 100));
  const differences: number[] = [];
  const sampleA = new Float64Array(n);
  const sampleB = new Float64Array(n);
  for (let r = 0; r < resamples; r += 1) {
    for (let i = 0; i < n; i += 1) {
      const pick = Math.floor(random() * n);
      sampleA[i] = a[pick] ?? 0;
      sampleB[i] = b[pick] ?? 0;
    }
    sampleA.sort();
    sampleB.sort();
    const rank = Math.min(n, Math.max(1, Math.ceil((p / 100) * n))) - 1;
    differences.push((sampleA[rank] ?? 0) - (sampleB[rank] ?? 0));
  }
  const ordered = sorted(differences);
  return { low: percentileOfSorted(ordered, 2.5), high: percentileOfSorted(ordered, 97.5) };
}

/** Least-squares slope of y over x. */
export function slope(x: readonly number[], y: readonly number[]): number {
  const n = Math.min(x.length, y.length);
  const mx = mean(x.slice(0, n));
  const my = mean(y.slice(0, n));
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i += 1) {
    const dx = (x[i] ?? 0) - mx;
    num += dx * ((y[i] ?? 0) - my);
    den += dx * dx;
  }
  return den === 0 ? Number.NaN : num / den;
}

export function median(values: readonly number[]): number {
  return percentile(values, 50);
}
