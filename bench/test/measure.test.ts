/**
 * The interleaving and median logic that every figure of `pnpm bench` rests on, driven with
 * fake contenders that return scripted numbers (nothing is timed here).
 */
import { describe, expect, it } from 'vitest';
import {
  bestIndex,
  type Contender,
  fixedRow,
  isMet,
  median,
  roundOrder,
  runComparison,
} from '../lib/measure';

/** A contender returning `values[round]` and recording when it ran. */
function scripted(label: string, values: readonly number[], calls: string[]): Contender {
  let round = 0;
  return {
    label,
    run: async () => {
      calls.push(label);
      const value = values[round++];
      if (value === undefined) throw new Error(`${label}: no value for round ${round - 1}`);
      return value;
    },
  };
}

describe('median', () => {
  it('takes the middle of an odd count and the mean of the two middles of an even count', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([7])).toBe(7);
  });

  it('is NaN for no values', () => {
    expect(median([])).toBeNaN();
  });

  it('does not reorder its input', () => {
    const values = [3, 1, 2];
    median(values);
    expect(values).toEqual([3, 1, 2]);
  });
});

describe('roundOrder', () => {
  it('keeps the order on even rounds and reverses it on odd rounds', () => {
    expect(roundOrder(['peer', 'ours'], 0)).toEqual(['peer', 'ours']);
    expect(roundOrder(['peer', 'ours'], 1)).toEqual(['ours', 'peer']);
    expect(roundOrder(['peer', 'ours'], 2)).toEqual(['peer', 'ours']);
  });
});

describe('bestIndex and isMet', () => {
  it('picks the highest or the lowest finite value, the first on ties', () => {
    expect(bestIndex([1, 3, 3], 'higher')).toBe(1);
    expect(bestIndex([2, 1, 1], 'lower')).toBe(1);
    expect(bestIndex([Number.NaN, 2], 'higher')).toBe(1);
    expect(bestIndex([Number.NaN], 'higher')).toBe(-1);
  });

  it('compares against the target in the row direction', () => {
    expect(isMet(0.3, 0.3, 'higher')).toBe(true);
    expect(isMet(0.29, 0.3, 'higher')).toBe(false);
    expect(isMet(1.0, 1.0, 'lower')).toBe(true);
    expect(isMet(1.01, 1.0, 'lower')).toBe(false);
    expect(isMet(0.5, null, 'higher')).toBeNull();
    expect(isMet(Number.NaN, 0.3, 'higher')).toBe(false);
  });
});

describe('runComparison', () => {
  it('interleaves peer and ours, alternating which goes first (peer, ours, ours, peer, peer, ours)', async () => {
    const calls: string[] = [];
    await runComparison(
      {
        group: 'g',
        unit: 'MiB/s',
        better: 'higher',
        contenders: [scripted('peer', [1, 1, 1], calls), scripted('ours', [1, 1, 1], calls)],
        rows: [{ name: 'row', subject: 'ours', against: ['peer'], target: null }],
      },
      3,
    );
    expect(calls).toEqual(['peer', 'ours', 'ours', 'peer', 'peer', 'ours']);
  });

  it('reports the median of per-round ratios beside the medians of each side', async () => {
    const calls: string[] = [];
    const [row] = await runComparison(
      {
        group: 'g',
        unit: 'MiB/s',
        better: 'higher',
        contenders: [scripted('peer', [100, 200, 400], calls), scripted('ours', [50, 200, 100], calls)],
        rows: [{ name: 'row', subject: 'ours', against: ['peer'], target: 0.5 }],
      },
      3,
    );
    expect(row!.rounds.map((sample) => sample.ratio)).toEqual([0.5, 1, 0.25]);
    expect(row!.ratio).toBe(0.5);
    expect(row!.ours).toBe(100);
    expect(row!.baseline).toBe(200);
    expect(row!.met).toBe(true);
  });

  it('is not the ratio of the medians: a round that is slow for both sides stays a fair round', async () => {
    const calls: string[] = [];
    const [row] = await runComparison(
      {
        group: 'g',
        unit: 'MiB/s',
        better: 'higher',
        contenders: [scripted('peer', [100, 200, 300], calls), scripted('ours', [90, 100, 330], calls)],
        rows: [{ name: 'row', subject: 'ours', against: ['peer'], target: null }],
      },
      3,
    );
    // Per round 0.9, 0.5, 1.1: median 0.9. The medians (100 and 200) would say 0.5.
    expect(row!.ratio).toBeCloseTo(0.9, 10);
    expect(row!.ours / row!.baseline).toBe(0.5);
  });

  it('takes each round baseline from the best of several peers and names it', async () => {
    const calls: string[] = [];
    const [row] = await runComparison(
      {
        group: 'g',
        unit: 'MiB/s',
        better: 'higher',
        contenders: [
          scripted('nbdkit', [100, 300, 100], calls),
          scripted('qemu-nbd', [200, 100, 200], calls),
          scripted('fss', [100, 150, 100], calls),
        ],
        rows: [{ name: 'row', subject: 'fss', against: ['nbdkit', 'qemu-nbd'], target: 1 }],
      },
      3,
    );
    expect(row!.rounds.map((sample) => sample.baselineLabel)).toEqual(['qemu-nbd', 'nbdkit', 'qemu-nbd']);
    expect(row!.ratio).toBe(0.5);
    expect(row!.baselineLabel).toBe('best of nbdkit/qemu-nbd');
    expect(row!.met).toBe(false);
  });

  it('takes the lowest peer when lower is better (times, memory)', async () => {
    const calls: string[] = [];
    const [row] = await runComparison(
      {
        group: 'g',
        unit: 'ms',
        better: 'lower',
        contenders: [scripted('budget', [100, 100, 100], calls), scripted('fss', [20, 40, 200], calls)],
        rows: [{ name: 'row', subject: 'fss', against: ['budget'], target: 1 }],
      },
      3,
    );
    expect(row!.ratio).toBeCloseTo(0.4, 10);
    expect(row!.met).toBe(true);
  });

  it('lets several rows share the same samples, each measured once per round', async () => {
    const calls: string[] = [];
    const rows = await runComparison(
      {
        group: 'g',
        unit: 'MiB/s',
        better: 'higher',
        contenders: [
          scripted('peer', [100, 100, 100], calls),
          scripted('a', [30, 30, 30], calls),
          scripted('b', [95, 95, 95], calls),
        ],
        rows: [
          { name: 'a row', subject: 'a', against: ['peer'], target: 0.3 },
          { name: 'b row', subject: 'b', against: ['peer'], target: 0.95 },
        ],
      },
      3,
    );
    expect(calls.length).toBe(9);
    expect(rows.map((row) => row.met)).toEqual([true, true]);
  });

  it('fails a contender that throws for the rest of the comparison, keeping the other rows', async () => {
    const calls: string[] = [];
    const rows = await runComparison(
      {
        group: 'g',
        unit: 'MiB/s',
        better: 'higher',
        contenders: [
          scripted('peer', [100, 100, 100], calls),
          scripted('broken', [50], calls),
          scripted('fine', [80, 80, 80], calls),
        ],
        rows: [
          { name: 'broken row', subject: 'broken', against: ['peer'], target: 0.3 },
          { name: 'fine row', subject: 'fine', against: ['peer'], target: 0.3 },
        ],
      },
      3,
    );
    expect(calls.filter((label) => label === 'broken')).toHaveLength(2); // round 0 ok, round 1 throws
    expect(rows[0]!.error).toMatch(/no value for round 1/);
    expect(rows[0]!.ratio).toBe(0.5); // from the one good round
    expect(rows[1]!.error).toBeUndefined();
    expect(rows[1]!.ratio).toBe(0.8);
  });

  it('rejects rows naming a contender that does not exist', async () => {
    await expect(
      runComparison(
        {
          group: 'g',
          unit: 'MiB/s',
          better: 'higher',
          contenders: [scripted('peer', [1], [])],
          rows: [{ name: 'row', subject: 'ours', against: ['peer'], target: null }],
        },
        1,
      ),
    ).rejects.toThrow(/no contender "ours"/);
  });

  it('runs the beforeEach hook before every measurement', async () => {
    const calls: string[] = [];
    await runComparison(
      {
        group: 'g',
        unit: 'MiB/s',
        better: 'higher',
        contenders: [scripted('peer', [1, 1], calls), scripted('ours', [1, 1], calls)],
        rows: [{ name: 'row', subject: 'ours', against: ['peer'], target: null }],
        beforeEach: async () => {
          calls.push('drop');
        },
      },
      2,
    );
    expect(calls).toEqual(['drop', 'peer', 'drop', 'ours', 'drop', 'ours', 'drop', 'peer']);
  });
});

describe('fixedRow', () => {
  it('compares one measurement with a budget', () => {
    const row = fixedRow({
      group: 'scale',
      name: 'rss',
      ours: 33,
      baseline: 66,
      baselineLabel: '64 MiB + 2 MiB bitmap',
      unit: 'MiB',
      better: 'lower',
      target: 1,
    });
    expect(row.ratio).toBe(0.5);
    expect(row.met).toBe(true);
    expect(row.rounds).toHaveLength(1);
  });
});
