/**
 * A moving average of a byte counter's rate: what `fss status` reports as a unit's or an
 * origin's write rate, and what a unit's seconds-to-full is computed from.
 *
 * The average is exponentially weighted in time, not in samples: a sample `elapsed` ms after
 * the previous one moves the average towards that interval's rate by
 * `1 - exp(-elapsed / timeConstant)`. So samples may come at any spacing (fssd's periodic
 * sampler, and every status request in between) and the result depends only on how the
 * counter moved over time: a burst counts for as much as its bytes, whether it was sampled
 * once or a hundred times, and a counter that stops moving decays to 0 with the time
 * constant (about 63% of the way in one constant).
 */

/** Ten seconds: long enough to smooth a bursty writer, short enough to notice a new one. */
export const RATE_TIME_CONSTANT_MS = 10_000;

export class RateMeter {
  private lastBytes: number | undefined;
  private lastMs = 0;
  private rate = 0;

  /**
   * `start`, when known, is the counter's value and time when it started (a snapshot's store
   * when it was taken): what moved before the first sample then counts too.
   */
  constructor(
    private readonly timeConstantMs = RATE_TIME_CONSTANT_MS,
    start?: { bytes: number; ms: number },
  ) {
    if (!(timeConstantMs > 0)) throw new RangeError(`time constant ${timeConstantMs} ms is not positive`);
    if (start !== undefined) {
      this.lastBytes = start.bytes;
      this.lastMs = start.ms;
    }
  }

  /**
   * Takes a sample of the counter (its total, in bytes) at `nowMs` and returns the average in
   * bytes per second. The first sample only sets the start; a counter that went backwards
   * (a store reused) counts as no progress; a sample no later than the last changes nothing.
   */
  observe(totalBytes: number, nowMs: number): number {
    if (this.lastBytes === undefined) {
      this.lastBytes = totalBytes;
      this.lastMs = nowMs;
      return this.rate;
    }
    const elapsedMs = nowMs - this.lastMs;
    if (elapsedMs <= 0) return this.rate;
    const intervalRate = (Math.max(0, totalBytes - this.lastBytes) * 1000) / elapsedMs;
    const weight = 1 - Math.exp(-elapsedMs / this.timeConstantMs);
    this.rate += weight * (intervalRate - this.rate);
    this.lastBytes = totalBytes;
    this.lastMs = nowMs;
    return this.rate;
  }

  /** The average in bytes per second as of the last sample (0 before the second). */
  get bytesPerSecond(): number {
    return this.rate;
  }
}

/**
 * One RateMeter per thing measured (a snapshot, an origin), made on first use and forgotten
 * with the thing (a WeakMap: a closed unit's meter goes with its snapshot).
 */
export class RateMeters<Key extends object> {
  private readonly meters = new WeakMap<Key, RateMeter>();

  constructor(private readonly timeConstantMs = RATE_TIME_CONSTANT_MS) {}

  /** Samples `key`'s counter; `start` is used when this is its first sample (RateMeter's). */
  observe(key: Key, totalBytes: number, nowMs: number, start?: { bytes: number; ms: number }): number {
    let meter = this.meters.get(key);
    if (meter === undefined) {
      meter = new RateMeter(this.timeConstantMs, start);
      this.meters.set(key, meter);
    }
    return meter.observe(totalBytes, nowMs);
  }
}

/**
 * Seconds until a store that can hold `limitBytes` and holds `usedBytes` is full at
 * `bytesPerSecond`; null when it is not filling (no writes) or can never fill (it can hold
 * every cluster of the snapshot, `neededMaxBytes`), or its limit is unknown.
 */
export function secondsToFull(
  usedBytes: number,
  limitBytes: number | undefined,
  neededMaxBytes: number,
  bytesPerSecond: number,
): number | null {
  if (limitBytes === undefined || limitBytes >= neededMaxBytes) return null;
  if (!(bytesPerSecond > 0)) return null;
  return Math.max(0, limitBytes - usedBytes) / bytesPerSecond;
}
