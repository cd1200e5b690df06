/**
 * How a figure is made: interleaved rounds and the median of per-round ratios.
 *
 * On a shared 2-core machine one run of the same server swings by 2x, and it drifts over
 * minutes (another job starts, the host gets busy). A ratio of two medians taken minutes apart
 * inherits all of that. So every figure compares things measured next to each other:
 *
 *   - a comparison has contenders (peers such as nbdkit, qemu-nbd, fio on the device or a
 *     fixed budget, and variants of fss), each measured once per round;
 *   - each round measures them one after the other, in the given order on even rounds and
 *     reversed on odd rounds, so no side is always first (peer, ours, ours, peer, peer, ours,
 *     ...) and a drift favours neither;
 *   - a row is a view over those samples: a subject against one or more contenders; its
 *     round baseline is the best of those (highest throughput, lowest time) and its round
 *     ratio is subject / baseline;
 *   - the row reports the median of its per-round ratios, beside the medians of the subject
 *     and of the baseline (for reading; the ratio is not their quotient).
 *
 * Several rows may share one peer's samples (one qemu-nbd write per round serves the
 * no-snapshot, first-touch and overwrite rows), which keeps the run short.
 *
 * A measurement that throws fails its contender for the rest of the comparison; rows that
 * need it carry the error and the other rows go on.
 */

export type Unit = 'MiB/s' | 'IOPS' | 'ms' | 'MiB';

/** Which way a value (and its ratio against the baseline) is good. */
export type Better = 'higher' | 'lower';

export interface Contender {
  label: string;
  run: () => Promise<number>;
}

export interface RowSpec {
  name: string;
  /** The label of the contender this row reports. */
  subject: string;
  /** Labels of the contenders whose best, per round, is the baseline. */
  against: readonly string[];
  /** What the ratio must reach (≥ when better is higher, ≤ when lower); null: informational. */
  target: number | null;
}

export interface ComparisonSpec {
  group: string;
  unit: Unit;
  better: Better;
  contenders: readonly Contender[];
  rows: readonly RowSpec[];
  /** Runs before every measurement, untimed (cache dropping). */
  beforeEach?: () => Promise<void>;
  /** Sees every measurement as it is made (progress lines); NaN when it failed. */
  onMeasure?: (round: number, label: string, value: number) => void;
}

export interface RoundSample {
  ours: number;
  baseline: number;
  baselineLabel: string;
  ratio: number;
}

export interface Row {
  group: string;
  name: string;
  ours: number;
  baseline: number;
  /** What the baseline was: one contender's label, or `best of A/B`. */
  baselineLabel: string;
  unit: Unit;
  ratio: number;
  target: number | null;
  better: Better;
  /** null when the row has no target. */
  met: boolean | null;
  rounds: RoundSample[];
  error?: string;
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** The order of round `round`: as given when even, reversed when odd. */
export function roundOrder<T>(items: readonly T[], round: number): T[] {
  return round % 2 === 0 ? [...items] : [...items].reverse();
}

/** Index of the best value (first on ties); -1 when none is a finite number. */
export function bestIndex(values: readonly number[], better: Better): number {
  let best = -1;
  values.forEach((value, index) => {
    if (!Number.isFinite(value)) return;
    if (best < 0 || (better === 'higher' ? value > values[best]! : value < values[best]!)) best = index;
  });
  return best;
}

export function isMet(ratio: number, target: number | null, better: Better): boolean | null {
  if (target === null) return null;
  if (!Number.isFinite(ratio)) return false;
  return better === 'higher' ? ratio >= target : ratio <= target;
}

/** The label a row shows for its baseline. */
export function baselineLabelOf(against: readonly string[]): string {
  return against.length === 1 ? against[0]! : `best of ${against.join('/')}`;
}

/** Runs `rounds` interleaved rounds of `spec` and summarises each row (see the file comment). */
export async function runComparison(spec: ComparisonSpec, rounds: number): Promise<Row[]> {
  const values = new Map<string, number[]>(spec.contenders.map((contender) => [contender.label, []]));
  if (values.size !== spec.contenders.length)
    throw new Error(`${spec.group}: contender labels must be unique`);
  for (const row of spec.rows) {
    for (const label of [row.subject, ...row.against]) {
      if (!values.has(label)) throw new Error(`${spec.group}: ${row.name}: no contender "${label}"`);
    }
  }
  const failures = new Map<string, string>();
  for (let round = 0; round < rounds; round++) {
    for (const contender of roundOrder(spec.contenders, round)) {
      const samples = values.get(contender.label)!;
      if (failures.has(contender.label)) {
        samples.push(Number.NaN);
        continue;
      }
      try {
        await spec.beforeEach?.();
        const value = await contender.run();
        if (!Number.isFinite(value) || value < 0) throw new Error(`measured ${value}`);
        samples.push(value);
        spec.onMeasure?.(round, contender.label, value);
      } catch (error) {
        failures.set(contender.label, error instanceof Error ? error.message : String(error));
        samples.push(Number.NaN);
        spec.onMeasure?.(round, contender.label, Number.NaN);
      }
    }
  }
  return spec.rows.map((row) => summarise(spec, row, values, failures));
}

function summarise(
  spec: ComparisonSpec,
  row: RowSpec,
  values: ReadonlyMap<string, readonly number[]>,
  failures: ReadonlyMap<string, string>,
): Row {
  const oursValues = values.get(row.subject)!;
  const samples: RoundSample[] = oursValues.map((ours, round) => {
    const candidates = row.against.map((label) => values.get(label)![round]!);
    const best = bestIndex(candidates, spec.better);
    const baseline = best < 0 ? Number.NaN : candidates[best]!;
    return { ours, baseline, baselineLabel: best < 0 ? '' : row.against[best]!, ratio: ours / baseline };
  });
  const valid = samples.filter((sample) => Number.isFinite(sample.ratio));
  const ratio = median(valid.map((sample) => sample.ratio));
  const baselineFailed = row.against.every((label) => failures.has(label));
  const error = failures.get(row.subject) ?? (baselineFailed ? failures.get(row.against[0]!) : undefined);
  return {
    group: spec.group,
    name: row.name,
    ours: median(valid.map((sample) => sample.ours)),
    baseline: median(valid.map((sample) => sample.baseline)),
    baselineLabel: baselineLabelOf(row.against),
    unit: spec.unit,
    ratio,
    target: row.target,
    better: spec.better,
    met: isMet(ratio, row.target, spec.better),
    rounds: samples,
    ...(error === undefined ? {} : { error }),
  };
}

/**
 * A row measured once rather than in rounds (a state the run passes through, such as the
 * daemon's RSS after a copy), against a fixed budget.
 */
export function fixedRow(options: {
  group: string;
  name: string;
  ours: number;
  baseline: number;
  baselineLabel: string;
  unit: Unit;
  better: Better;
  target: number | null;
}): Row {
  const ratio = options.ours / options.baseline;
  return {
    ...options,
    ratio,
    met: isMet(ratio, options.target, options.better),
    rounds: [{ ours: options.ours, baseline: options.baseline, baselineLabel: options.baselineLabel, ratio }],
  };
}
