import { mean, pairedPercentileDifferenceInterval, percentile } from './stats';

/** Interleaved samples: A (through the proxy) and B (straight to the upstream), in ms, pair by pair. */
export interface AbSamples {
  readonly label: string;
  /** What the chat held, e.g. "100 stored messages". */
  readonly chat: string;
  /** Messages each request sent upstream (system prompts, history and the new one). */
  readonly sentMessages: number;
  readonly a: number[];
  readonly b: number[];
  /** Per pair, whether B ran first (the bench alternates; unset: A always ran first). */
  readonly bFirst?: boolean[];
  /** The garbage collection pauses that fell in the A and B calls (in-process cases only). */
  readonly gc?: GcPauses;
  /**
   * CPU this process's other threads (V8's optimizing compiler and concurrent collector) used per
   * pair while the pairs ran (in-process cases, where the kernel keeps per-thread statistics).
   */
  readonly helperCpuMsPerPair?: number;
}

/** Garbage collection pauses on the main thread during one side's calls. */
export interface SideGc {
  /** Young-generation collections (scavenges): how many, and their pauses summed, in ms. */
  readonly young: number;
  readonly youngMs: number;
  /** A full collection's pauses: its incremental marking steps and its final pause. */
  readonly full: number;
  readonly fullMs: number;
  /** Calls that met at least one pause. */
  readonly callsHit: number;
}

export interface GcPauses {
  readonly a: SideGc;
  readonly b: SideGc;
  /** Indexes of the pairs whose A turn or B call met a pause. */
  readonly hitPairs: readonly number[];
}

export interface AbSummary {
  readonly label: string;
  readonly chat: string;
  readonly sentMessages: number;
  readonly n: number;
  readonly aP50: number;
  readonly aP99: number;
  readonly bP50: number;
  readonly bP99: number;
  readonly overheadP50: number;
  readonly overheadP99: number;
  readonly overheadP50Interval: { low: number; high: number };
  readonly overheadP99Interval: { low: number; high: number };
  /** Median of the per-pair differences A - B: a second, pairing-aware view of the overhead. */
  readonly pairedMedian: number;
  readonly aMean: number;
  readonly bMean: number;
  readonly gc?: GcSummary;
  readonly helperCpuMsPerPair?: number;
  /** Each side's p50 over the pairs run in each order, where the order alternated. */
  readonly byOrder?: { readonly aFirst: OrderP50; readonly bFirst: OrderP50 };
}

/** What the pauses did to the tail: the collections per side, and the overhead p99 without them. */
export interface GcSummary extends GcPauses {
  /** The overhead p99 over the pairs in which neither call met a pause. */
  readonly overheadP99WithoutGc: number;
}

export function summarize(samples: AbSamples): AbSummary {
  const { a, b } = samples;
  const differences = a.map((value, i) => value - (b[i] ?? Number.NaN));
  const aP50 = percentile(a, 50);
  const bP50 = percentile(b, 50);
  const aP99 = percentile(a, 99);
  const bP99 = percentile(b, 99);
  return {
    label: samples.label,
    chat: samples.chat,
    sentMessages: samples.sentMessages,
    n: a.length,
    aP50,
    aP99,
    bP50,
    bP99,
    overheadP50: aP50 - bP50,
    overheadP99: aP99 - bP99,
    overheadP50Interval: pairedPercentileDifferenceInterval(a, b, 50),
    overheadP99Interval: pairedPercentileDifferenceInterval(a, b, 99),
    pairedMedian: percentile(differences, 50),
    aMean: mean(a),
    bMean: mean(b),
    gc: samples.gc === undefined ? undefined : gcSummary(samples.gc, a, b),
    helperCpuMsPerPair: samples.helperCpuMsPerPair,
    byOrder: samples.bFirst === undefined ? undefined : byOrder(a, b, samples.bFirst),
  };
}

/** A's and B's p50 over the pairs run in one order. */
export interface OrderP50 {
  readonly a: number;
  readonly b: number;
}

function byOrder(a: readonly number[], b: readonly number[], bFirst: readonly boolean[]) {
  const p50s = (first: boolean): OrderP50 => {
    const pairs = (side: readonly number[]) => side.filter((_, i) => bFirst[i] === first);
    return { a: percentile(pairs(a), 50), b: percentile(pairs(b), 50) };
  };
  return { aFirst: p50s(false), bFirst: p50s(true) };
}

function gcSummary(gc: GcPauses, a: readonly number[], b: readonly number[]): GcSummary {
  const hit = new Set(gc.hitPairs);
  const untouched = (side: readonly number[]) => side.filter((_, i) => !hit.has(i));
  return { ...gc, overheadP99WithoutGc: percentile(untouched(a), 99) - percentile(untouched(b), 99) };
}
