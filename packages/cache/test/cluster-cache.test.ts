import { AssertionError, CopiedBitmap } from '@fss/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ClusterCache, type ClusterCacheOptions, type DirtyCluster, SharedLoads } from '../src/index';

const CLUSTERS = 64;
const SLOT_BYTES = 8;

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

/**
 * A cache over a fake origin (every byte of cluster n is n) with controllable write-back. It
 * records each load as [first cluster, cluster count] and checks, at every load, that no more
 * clusters are held than there are slots.
 */
function harness(overrides: Partial<ClusterCacheOptions> = {}) {
  const copied = new CopiedBitmap(CLUSTERS);
  const loads: [number, number][] = [];
  const batches: number[][] = [];
  const stored = new Map<number, number>();
  const errors: unknown[] = [];
  let holdWriteBack = false;
  const held: Array<() => void> = [];
  let allocations = 0;
  let allocatedBytes = 0;
  const slotCount = overrides.slotCount ?? 4;
  const cache: ClusterCache = new ClusterCache({
    slotCount,
    slotBytes: SLOT_BYTES,
    copied,
    allocate: (bytes) => {
      allocations += 1;
      allocatedBytes += bytes;
      return new Uint8Array(bytes);
    },
    load: async (first, target) => {
      const count = target.length / SLOT_BYTES;
      loads.push([first, count]);
      const stats = cache.stats();
      expect(stats.busy + stats.valid + stats.writing).toBeLessThanOrEqual(slotCount);
      await tick();
      for (let index = 0; index < count; index++) {
        target.subarray(index * SLOT_BYTES, (index + 1) * SLOT_BYTES).fill(first + index);
      }
    },
    writeBack: async (batch: readonly DirtyCluster[]) => {
      batches.push(batch.map((dirty) => dirty.cluster));
      if (holdWriteBack) await new Promise<void>((resolve) => held.push(resolve));
      await tick();
      for (const dirty of batch) {
        expect(dirty.data.every((byte) => byte === dirty.cluster)).toBe(true);
        stored.set(dirty.cluster, dirty.data[0]!);
      }
    },
    onWriteBackError: (error) => errors.push(error),
    ...overrides,
  });
  /** Clusters loaded, each once per time it was loaded, sorted. */
  const loadedClusters = () =>
    loads
      .flatMap(([first, count]) => Array.from({ length: count }, (_, index) => first + index))
      .sort((a, b) => a - b);
  return {
    cache,
    copied,
    loads,
    loadedClusters,
    batches,
    stored,
    errors,
    allocations: () => allocations,
    allocatedBytes: () => allocatedBytes,
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
    expect(h.loadedClusters()).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(setBits(h.copied)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(h.cache.preserve(1)).toBeUndefined(); // copied: nothing to wait for
    for (const cluster of setBits(h.copied)) expect(h.stored.get(cluster)).toBe(cluster);
  });

  it('loads a run of uncopied clusters with one read into adjacent slots', async () => {
    const h = harness({ slotCount: 16 });
    await h.cache.preserveRange(3, 11);
    expect(h.loads).toEqual([[3, 8]]);
    await h.cache.preserveRange(0, 16); // copied ones are skipped: runs [0, 3) and [11, 16)
    await h.cache.drain();
    expect(h.loads).toEqual([
      [3, 8],
      [0, 3],
      [11, 5],
    ]);
    expect(h.loadedClusters()).toEqual(Array.from({ length: 16 }, (_, cluster) => cluster));
    expect(h.cache.stats()).toMatchObject({ loaded: 16, loads: 3, stored: 16 });
  });

  it('splits a run at loadClustersMax and where no FREE slot follows', async () => {
    const h = harness({ slotCount: 8, loadClustersMax: 3 });
    h.hold();
    await h.cache.preserveRange(0, 8);
    expect(h.loads).toEqual([
      [0, 3],
      [3, 3],
      [6, 2],
    ]);
    h.release();
    await h.cache.drain();
  });

  it('loads each cluster exactly once under any overlapping writers (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.nat({ max: CLUSTERS - 1 }), fc.integer({ min: 1, max: 12 })), {
          minLength: 1,
          maxLength: 30,
        }),
        fc.integer({ min: 1, max: 12 }),
        fc.integer({ min: 1, max: 3 }),
        async (ranges, slotCount, inFlight) => {
          const h = harness({ slotCount, writeBacksInFlightMax: inFlight, overlapBatchMin: 1 });
          const wanted = new Set<number>();
          const waits = ranges.map(([first, length], index) => {
            const end = Math.min(CLUSTERS, first + length);
            for (let cluster = first; cluster < end; cluster++) wanted.add(cluster);
            // Half the writers arrive a little later, while loads and write-backs run.
            return index % 2 === 0
              ? h.cache.preserveRange(first, end)
              : tick().then(() => h.cache.preserveRange(first, end));
          });
          await Promise.all(waits);
          await h.cache.drain();
          const expected = [...wanted].sort((a, b) => a - b);
          expect(h.loadedClusters()).toEqual(expected);
          expect(setBits(h.copied)).toEqual(expected);
          expect([...h.stored.keys()].sort((a, b) => a - b)).toEqual(expected);
          for (const [cluster, byte] of h.stored) expect(byte).toBe(cluster);
          for (const batch of h.batches) expect(batch).toEqual([...batch].sort((a, b) => a - b));
          expect(h.cache.stats()).toMatchObject({ free: slotCount, waiting: 0 });
        },
      ),
      { numRuns: 100 },
    );
  });

  it('allocates its slot memory once: memory is bounded by slotCount x slotBytes', async () => {
    const h = harness();
    await Promise.all(Array.from({ length: 50 }, (_, cluster) => h.cache.preserve(cluster)));
    await h.cache.drain();
    expect(h.allocations()).toBe(1);
    expect(h.allocatedBytes()).toBe(4 * SLOT_BYTES);
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
    const { writing, valid, waiting } = h.cache.stats();
    expect(writing + valid).toBe(4);
    expect(waiting).toBe(1);
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

  it('durable mode: writers are released only once their clusters are stored, later writers of them too', async () => {
    const h = harness({ releaseAfterStore: true });
    h.hold();
    let first = false;
    let later = false;
    void h.cache.preserve(7)?.then(() => {
      first = true;
    });
    for (let turn = 0; turn < 5; turn++) await tick();
    expect(h.copied.has(7)).toBe(true); // copied (readable through lookup) ...
    expect(h.cache.lookup(7)?.[0]).toBe(7);
    expect(h.cache.hasUnstored).toBe(true);
    const again = h.cache.preserve(7); // ... but not stored: a second writer waits as well
    expect(again).toBeDefined();
    void again?.then(() => {
      later = true;
    });
    for (let turn = 0; turn < 5; turn++) await tick();
    expect([first, later]).toEqual([false, false]);
    expect(h.stored.has(7)).toBe(false);
    h.release();
    await h.cache.drain();
    await tick();
    expect([first, later]).toEqual([true, true]);
    expect(h.stored.get(7)).toBe(7);
    expect(h.cache.hasUnstored).toBe(false);
    expect(h.cache.preserve(7)).toBeUndefined();
    expect(h.loadedClusters()).toEqual([7]);
  });

  it('durable mode: a write-back failure releases the waiting writers (a store never blocks the origin)', async () => {
    const h = harness({
      releaseAfterStore: true,
      writeBack: async () => {
        await tick();
        throw new Error('store gone');
      },
    });
    await h.cache.preserveRange(3, 6);
    expect(h.errors).toHaveLength(1);
    expect(h.cache.hasUnstored).toBe(false);
  });

  it('batches the slots that became VALID meanwhile, sorted by cluster, one batch in flight', async () => {
    const h = harness({ writeBacksInFlightMax: 1 });
    h.hold();
    await h.cache.preserve(10); // batch 1: [10], held
    await Promise.all([13, 11, 12].map((cluster) => h.cache.preserve(cluster)));
    h.release();
    await h.cache.drain();
    expect(h.batches).toEqual([[10], [11, 12, 13]]);
    expect(h.cache.stats().batches).toBe(2);
  });

  it('starts a second batch beside one in flight once overlapBatchMin slots are VALID', async () => {
    const h = harness({ slotCount: 8, writeBacksInFlightMax: 2, overlapBatchMin: 3 });
    h.hold();
    await h.cache.preserve(20); // batch 1, held
    await Promise.all([21, 22].map((cluster) => h.cache.preserve(cluster)));
    expect(h.batches).toEqual([[20]]); // two VALID: not yet
    await h.cache.preserve(23);
    expect(h.batches).toEqual([[20], [21, 22, 23]]);
    await Promise.all([24, 25, 26, 27].map((cluster) => h.cache.preserve(cluster)));
    expect(h.batches).toHaveLength(2); // two in flight: the rest waits
    h.release();
    await h.cache.drain();
    expect(h.batches.slice(2)).toEqual([[24, 25, 26, 27]]);
  });

  it('fails every writer of a cluster whose load fails, frees the slot, and loads again next time', async () => {
    let failures = 1;
    const h = harness({
      load: async (first, target) => {
        await tick();
        if (failures-- > 0) throw Object.assign(new Error('origin read failed'), { code: 'EIO' });
        target.fill(first);
      },
    });
    const a = h.cache.preserve(5);
    const b = h.cache.preserve(5);
    await expect(a).rejects.toThrow('origin read failed');
    await expect(b).rejects.toThrow('origin read failed');
    expect(h.copied.has(5)).toBe(false);
    expect(h.cache.stats().free).toBe(4);
    await h.cache.preserve(5);
    expect(h.copied.has(5)).toBe(true);
  });

  it('retries a failed run cluster by cluster: only writers of the bad cluster fail', async () => {
    const bad = 6;
    const h = harness({
      slotCount: 8,
      load: async (first, target) => {
        await tick();
        const count = target.length / SLOT_BYTES;
        if (first <= bad && bad < first + count) throw Object.assign(new Error('EIO at 6'), { code: 'EIO' });
        for (let index = 0; index < count; index++) {
          target.subarray(index * SLOT_BYTES, (index + 1) * SLOT_BYTES).fill(first + index);
        }
      },
    });
    const whole = h.cache.preserveRange(4, 9); // one run [4, 9): fails, retried alone
    const good = h.cache.preserve(5)!;
    const alsoBad = h.cache.preserve(6)!;
    await expect(whole).rejects.toThrow('EIO at 6');
    await expect(good).resolves.toBeUndefined();
    await expect(alsoBad).rejects.toThrow('EIO at 6');
    await h.cache.drain();
    expect(setBits(h.copied)).toEqual([4, 5, 7, 8]);
    expect(h.cache.stats().free).toBe(8);
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

describe('SharedLoads', () => {
  it('copies a read in flight into the followers whose bytes it covers', async () => {
    const shared = new SharedLoads();
    let reads = 0;
    const source = Uint8Array.from({ length: 64 }, (_, index) => index);
    const reader = (target: Uint8Array, offset: number) => async () => {
      reads += 1;
      await tick();
      target.set(source.subarray(offset, offset + target.length));
    };
    const leader = new Uint8Array(32);
    const inside = new Uint8Array(8);
    const outside = new Uint8Array(8);
    await Promise.all([
      shared.read(leader, 16, reader(leader, 16)),
      shared.read(inside, 24, reader(inside, 24)),
      shared.read(outside, 44, reader(outside, 44)), // 44 + 8 > 48: not covered
    ]);
    expect(reads).toBe(2);
    expect(shared.sharedCount).toBe(1);
    expect([...inside]).toEqual([24, 25, 26, 27, 28, 29, 30, 31]);
    expect([...outside]).toEqual([44, 45, 46, 47, 48, 49, 50, 51]);
    // Nothing in flight any more: the next read reads.
    await shared.read(inside, 24, reader(inside, 24));
    expect(reads).toBe(3);
  });

  it("lets a follower read for itself when the leader's read fails", async () => {
    const shared = new SharedLoads();
    const leader = shared.read(new Uint8Array(16), 0, async () => {
      await tick();
      throw new Error('leader EIO');
    });
    const target = new Uint8Array(4);
    const follower = shared.read(target, 4, async () => {
      target.fill(9);
    });
    await expect(leader).rejects.toThrow('leader EIO');
    await expect(follower).resolves.toBeUndefined();
    expect([...target]).toEqual([9, 9, 9, 9]);
    expect(shared.sharedCount).toBe(0);
  });
});

describe('assertions', () => {
  it("are @fss/core's AssertionError, which the daemon reports as a programmer error", () => {
    expect(() => harness({ slotCount: 0 })).toThrowError(AssertionError);
    expect(() => harness({ slotBytes: 1.5 })).toThrowError(/slotBytes must be a positive integer/);
  });
});
