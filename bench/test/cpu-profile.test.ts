/**
 * The .cpuprofile reader behind docs/performance.md's shares: self and total shares over busy
 * (non-idle) samples, weighted by time, recursion counted once, and packages from URLs.
 */
import { describe, expect, it } from 'vitest';
import { type CpuProfile, packageOf, summariseProfile, totalShareOf } from '../lib/cpu-profile';

const NBD = 'file:///repo/packages/nbd/src/connection.ts';
const CORE = 'file:///repo/packages/core/src/engine/origin.ts';

/** root → serve (nbd) → write (core) → write (core, recursion); root → (idle); root → (garbage collector). */
const profile: CpuProfile = {
  nodes: [
    { id: 1, callFrame: { functionName: '(root)', url: '', lineNumber: -1 }, children: [2, 5, 6] },
    { id: 2, callFrame: { functionName: 'serve', url: NBD, lineNumber: 0 }, children: [3] },
    { id: 3, callFrame: { functionName: 'write', url: CORE, lineNumber: 0 }, children: [4] },
    { id: 4, callFrame: { functionName: 'write', url: CORE, lineNumber: 0 } },
    { id: 5, callFrame: { functionName: '(idle)', url: '', lineNumber: -1 } },
    { id: 6, callFrame: { functionName: '(garbage collector)', url: '', lineNumber: -1 } },
  ],
  // serve 10 µs, write 20 µs, write (recursive) 30 µs, GC 40 µs, idle 100 µs.
  samples: [2, 3, 4, 6, 5],
  timeDeltas: [10, 20, 30, 40, 100],
  startTime: 0,
  endTime: 200,
};

describe('summariseProfile', () => {
  const summary = summariseProfile(profile);

  it('leaves idle out of the shares and reports the busy share', () => {
    expect(summary.busyShare).toBe(0.5);
    expect(summary.functions.map((fn) => fn.name)).not.toContain('(idle)');
  });

  it('gives self and total shares, a recursive function counted once per sample', () => {
    const write = summary.functions.find((fn) => fn.name === 'write')!;
    expect(write.selfShare).toBeCloseTo(0.5, 10); // (20 + 30) / 100
    expect(write.totalShare).toBeCloseTo(0.5, 10); // not 0.8: the recursion is one frame
    const serve = summary.functions.find((fn) => fn.name === 'serve')!;
    expect(serve.selfShare).toBeCloseTo(0.1, 10);
    expect(serve.totalShare).toBeCloseTo(0.6, 10);
    expect(serve.where).toBe('nbd/src/connection.ts');
  });

  it('sums self shares per package', () => {
    expect(summary.packages).toEqual([
      { name: '@fss/core', selfShare: 0.5 },
      { name: 'GC', selfShare: 0.4 },
      { name: '@fss/nbd', selfShare: 0.1 },
    ]);
  });

  it('finds the share of samples under chosen frames', () => {
    expect(totalShareOf(profile, (name) => name === 'serve')).toBeCloseTo(0.6, 10);
  });
});

describe('packageOf', () => {
  it('names fss packages, Node internals, dependencies and V8 pseudo-frames', () => {
    expect(packageOf(NBD, 'x')).toBe('@fss/nbd');
    expect(packageOf('node:internal/fs/promises', 'x')).toBe('node:internal');
    expect(packageOf('file:///r/node_modules/.pnpm/tsx@4.23.15/node_modules/tsx/dist/a.mjs', 'x')).toBe(
      'tsx',
    );
    expect(packageOf('', '(garbage collector)')).toBe('GC');
    expect(packageOf('', 'read')).toBe('native');
  });
});
