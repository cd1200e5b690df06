import { AssertionError, CopiedBitmap } from '@fss/core';
import { describe, expect, it } from 'vitest';
import { ClusterCache, type ClusterCacheOptions, type DirtyCluster } from '../src/index';

const CLUSTERS = 64;

/** The clusters whose bit is set, in order. */
function setBits(bitmap: CopiedBitmap): number[] {
  const found: number[] = [];
  for (let cluster = bitmap.nextSet(0, CLUSTERS); cluster !== -1; ) {
    found.push(cluster);
    cluster = cluster + 1 < CLUSTERS ? bitmap.nextSet(cluster + 1, CLUSTERS) : -1;
  }
  return found;
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

/** A cache over a fake origin (cluster n holds bytes n) with controllable write-back. */
function harness(overrides: Partial<ClusterCacheOptions> = {}) {
  const copied = new CopiedBitmap(CLUSTERS);
  const loads: number[] = [];
  const batches: number[][] = [];
  const stored = new Map<number, number>();
  const errors: unknown[] = [];
  let holdWriteBack = false;
  const held: Array<() => void> = [];
  let allocations = 0;
  const cache = new ClusterCache({
    slotCount: 4,
    slotBytes: 8,
    copied,
    allocate: (bytes) => {
      allocations += 1;
      return new Uint8Array(bytes);
    },
    load: async (cluster, target) => {
      loads.push(cluster);
      await tick();
      target.fill(cluster);
    },
    writeBack: async (batch: readonly DirtyCluster[]) => {
      batches.push(batch.map((dirty) => dirty.cluster));
      if (holdWriteBack) await new Promise<void>((resolve) => held.push(resolve));
      await tick();
      for (const dirty of batch) stored.set(dirty.cluster, dirty.data[0]!);
    },
    onWriteBackError: (error) => errors.push(error),
    ...overrides,
  });
  return {
    cache,
    copied,
    loads,
    batches,
    stored,
    errors,
    allocations: () => allocations,
    hold: () => {
      holdWriteBack = true;
    },
    release: () => {
      holdWriteBack = false;
      for (const resolve of held.splice(0)) resolve();
    },
  };
}

describe('ClusterCache', () => {
  it('never copies a cluster twice, however many writers ask at once', async () => {
    const h = harness();
    const clusters = [1, 2, 1, 3, 1, 2, 9, 9, 9, 4, 5, 6, 7, 1, 8];
    await Promise.all(clusters.map((cluster) => h.cache.preserve(cluster)));
    await h.cache.drain();
    expect(h.loads.sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(setBits(h.copied)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(h.cache.preserve(1)).toBeUndefined(); // copied: nothing to wait for
    for (const cluster of setBits(h.copied)) expect(h.stored.get(cluster)).toBe(cluster);
  });

  it('allocates its slots once: memory is bounded by slotCount x slotBytes', async () => {
    const h = harness();
    await Promise.all(Array.from({ length: 50 }, (_, cluster) => h.cache.preserve(cluster)));
    await h.cache.drain();
    expect(h.allocations()).toBe(4);
    expect(h.cache.stats().stored).toBe(50);
  });

  it('makes writers wait for a free slot while every slot is taken (back-pressure)', async () => {
    const h = harness();
    h.hold();
    await Promise.all([0, 1, 2, 3].map((cluster) => h.cache.preserve(cluster)));
    let fifthDone = false;
    const fifth = h.cache.preserve(4)!.then(() => {
      fifthDone = true;
    });
    for (let i = 0; i < 5; i++) await tick();
    expect(fifthDone).toBe(false);
    expect(h.cache.stats()).toMatchObject({ writing: 1, valid: 3, waiting: 1 });
    h.release();
    await fifth;
    expect(h.copied.has(4)).toBe(true);
  });

  it('serves saved data through lookup while VALID or WRITING, and not after it is stored', async () => {
    const h = harness();
    h.hold();
    await h.cache.preserve(7);
    expect(h.cache.stats().writing).toBe(1);
    expect(h.cache.lookup(7)?.[0]).toBe(7);
    expect(h.cache.lookup(8)).toBeUndefined();
    h.release();
    await h.cache.drain();
    expect(h.cache.lookup(7)).toBeUndefined();
    expect(h.stored.get(7)).toBe(7);
  });

  it('cleans round-robin and batches the slots that became VALID meanwhile', async () => {
    const h = harness();
    h.hold();
    await h.cache.preserve(10); // batch 1: [10], held
    await Promise.all([11, 12, 13].map((cluster) => h.cache.preserve(cluster)));
    h.release();
    await h.cache.drain();
    expect(h.batches[0]).toEqual([10]);
    expect(h.batches[1]?.sort()).toEqual([11, 12, 13]);
    expect(h.cache.stats().batches).toBe(2);
  });

  it('fails every writer of a cluster whose load fails, frees the slot, and loads again next time', async () => {
    let failures = 1;
    const h = harness({
      load: async (cluster, target) => {
        await tick();
        if (failures-- > 0) throw Object.assign(new Error('origin read failed'), { code: 'EIO' });
        target.fill(cluster);
      },
    });
    const a = h.cache.preserve(5);
    const b = h.cache.preserve(5);
    expect(a).toBe(b);
    await expect(a).rejects.toThrow('origin read failed');
    expect(h.copied.has(5)).toBe(false);
    expect(h.cache.stats().free).toBe(4);
    await h.cache.preserve(5);
    expect(h.copied.has(5)).toBe(true);
  });

  it('on a write-back failure reports once, releases every waiter and stops', async () => {
    const h = harness({
      writeBack: async () => {
        await tick();
        throw new Error('ENOSPC');
      },
    });
    const waits = Array.from({ length: 10 }, (_, cluster) => h.cache.preserve(cluster));
    await Promise.all(waits); // none rejects, none hangs
    await h.cache.drain();
    expect(h.errors).toHaveLength(1);
    expect(h.cache.isAbandoned).toBe(true);
    expect(h.cache.preserve(99)).toBeUndefined();
    expect(h.cache.lookup(0)).toBeUndefined();
  });
});

describe('assertions', () => {
  it("are @fss/core's AssertionError, which the daemon reports as a programmer error", () => {
    expect(() => harness({ slotCount: 0 })).toThrowError(AssertionError);
    expect(() => harness({ slotBytes: 1.5 })).toThrowError(/slotBytes must be a positive integer/);
  });
});
