/**
 * The moving average behind `fss status`'s writeRate and secondsToFull, on a simulated clock
 * (no timing is measured): its value is a function of how the counter moved over time, not of
 * how often it was sampled.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RATE_TIME_CONSTANT_MS, RateMeter, RateMeters, secondsToFull } from '../src/rate-meter';

describe('RateMeter', () => {
  it('converges on a steady rate and decays to 0 once the counter stops', () => {
    const meter = new RateMeter(1000);
    expect(meter.observe(0, 0)).toBe(0);
    let bytes = 0;
    for (let ms = 100; ms <= 20_000; ms += 100) {
      bytes += 1000; // 10 000 bytes per second
      meter.observe(bytes, ms);
    }
    expect(meter.bytesPerSecond).toBeCloseTo(10_000, 3);
    meter.observe(bytes, 21_000); // one time constant of silence
    expect(meter.bytesPerSecond).toBeCloseTo(10_000 * Math.exp(-1), 3);
    meter.observe(bytes, 41_000);
    expect(meter.bytesPerSecond).toBeLessThan(1);
  });

  it('gives the same average however the same counter history is sampled', () => {
    // A history: bytes written at given times. Sampled at every write, or only at some of
    // them, the averages agree at the common sample times within rounding for a constant
    // rate between samples, so the test uses piecewise-constant rates sampled at segment ends.
    fc.assert(
      fc.property(
        fc.array(
          fc.record({ ms: fc.integer({ min: 1, max: 5000 }), rate: fc.integer({ min: 0, max: 1e6 }) }),
          {
            minLength: 1,
            maxLength: 20,
          },
        ),
        fc.integer({ min: 2, max: 10 }),
        (segments, splits) => {
          const coarse = new RateMeter();
          const fine = new RateMeter();
          coarse.observe(0, 0);
          fine.observe(0, 0);
          let now = 0;
          let bytes = 0;
          for (const { ms, rate } of segments) {
            for (let part = 1; part <= splits; part += 1) {
              fine.observe(bytes + (rate * ms * part) / splits / 1000, now + (ms * part) / splits);
            }
            now += ms;
            bytes += (rate * ms) / 1000;
            coarse.observe(bytes, now);
          }
          expect(fine.bytesPerSecond).toBeCloseTo(coarse.bytesPerSecond, 3);
        },
      ),
      { numRuns: Number(process.env['FSS_PROPERTY_RUNS'] ?? 200) },
    );
  });

  it('ignores samples that go back in time, and counts a counter that went backwards as no progress', () => {
    const meter = new RateMeter(RATE_TIME_CONSTANT_MS);
    meter.observe(1000, 1000);
    const after = meter.observe(1_001_000, 2000);
    expect(after).toBeGreaterThan(0);
    expect(meter.observe(5_000_000, 2000)).toBe(after);
    expect(meter.observe(5_000_000, 1500)).toBe(after);
    expect(meter.observe(0, 3000)).toBeLessThan(after);
    expect(() => new RateMeter(0)).toThrow(RangeError);
  });

  it('counts what moved before the first sample from a known start', () => {
    const meter = new RateMeter(1000, { bytes: 0, ms: 0 });
    expect(meter.observe(1_000_000, 1000)).toBeCloseTo(1_000_000 * (1 - Math.exp(-1)), 3);
    const meters = new RateMeters<object>(1000);
    expect(meters.observe({}, 1_000_000, 1000, { bytes: 0, ms: 0 })).toBeGreaterThan(0);
  });

  it('RateMeters keeps one meter per key', () => {
    const meters = new RateMeters<object>(1000);
    const a = {};
    const b = {};
    meters.observe(a, 0, 0);
    meters.observe(b, 0, 0);
    expect(meters.observe(a, 1_000_000, 1000)).toBeGreaterThan(0);
    expect(meters.observe(b, 0, 1000)).toBe(0);
  });
});

describe('secondsToFull', () => {
  it('is the room left over the rate, null when not filling, unknown, or never full', () => {
    expect(secondsToFull(1000, 11_000, 1e9, 100)).toBe(100);
    expect(secondsToFull(12_000, 11_000, 1e9, 100)).toBe(0);
    expect(secondsToFull(1000, 11_000, 1e9, 0)).toBeNull();
    expect(secondsToFull(1000, undefined, 1e9, 100)).toBeNull();
    expect(secondsToFull(1000, 1e9, 1e9, 100)).toBeNull();
  });
});
