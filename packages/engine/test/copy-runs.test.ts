/**
 * How copy-on-write uses the origin and the store (not just what it keeps): a write over a run
 * of uncopied clusters is one origin read, several snapshots copying the same clusters for
 * the same write read the origin once, clusters copied in sequence are stored in sequence,
 * and the cache's slots stay within their bound.
 */
import { type BlockDevice, MemoryBackingStore, MemoryBlockDevice } from '@fss/core';
import { describe, expect, it } from 'vitest';
import { CACHE_BYTES_DEFAULT, Origin } from '../src/index';

const KiB = 1024;
const MiB = 1024 * KiB;

/** A memory device that counts reads (the copy-on-write loads, when only writes are issued). */
class CountingDevice extends MemoryBlockDevice implements BlockDevice {
  reads: { offset: number; length: number }[] = [];
  override async read(target: Uint8Array, offset: number): Promise<number> {
    this.reads.push({ offset, length: target.length });
    await new Promise((resolve) => setImmediate(resolve)); // a read takes time: loads overlap
    return super.read(target, offset);
  }
}

/** A memory store that counts reads. */
class CountingStore extends MemoryBackingStore {
  reads = 0;
  override async read(target: Uint8Array, offset: number): Promise<void> {
    this.reads += 1;
    return super.read(target, offset);
  }
}

function patterned(size: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 31 + seed) & 0xff;
  return bytes;
}

describe('copy-on-write I/O', () => {
  it('copies a 1 MiB write over uncopied 64 KiB clusters with one origin read', async () => {
    const device = new CountingDevice(patterned(8 * MiB, 1));
    const origin = new Origin(device);
    const snapshot = await origin.createSnapshot(new MemoryBackingStore(), { name: 'fss0' });
    expect(snapshot.geometry.clusterSize).toBe(64 * KiB);
    expect(snapshot.geometry.cacheSlotCount).toBe(CACHE_BYTES_DEFAULT / (64 * KiB));
    device.reads = [];
    await origin.write(patterned(MiB, 2), 2 * MiB);
    expect(device.reads).toEqual([{ offset: 2 * MiB, length: MiB }]);
    expect(snapshot.stats()).toMatchObject({ copiedClusters: 16, cache: { loads: 1, loaded: 16 } });
    const view = new Uint8Array(MiB);
    await snapshot.read(view, 2 * MiB);
    expect(Buffer.compare(view, patterned(8 * MiB, 1).subarray(2 * MiB, 3 * MiB))).toBe(0);
    await snapshot.close();
    await origin.close();
  });

  it('reads the origin once when four snapshots copy the same clusters for one write', async () => {
    const before = patterned(4 * MiB, 3);
    const device = new CountingDevice(before.slice());
    const origin = new Origin(device);
    const snapshots = [];
    for (let unit = 0; unit < 4; unit++) {
      snapshots.push(await origin.createSnapshot(new MemoryBackingStore(), { name: `fss${unit}` }));
    }
    device.reads = [];
    await Promise.all([0, 1, 2, 3].map((index) => origin.write(patterned(MiB, 10 + index), index * MiB)));
    expect(device.reads).toHaveLength(4); // one per 1 MiB write, not one per write per snapshot
    for (const snapshot of snapshots) {
      const view = new Uint8Array(4 * MiB);
      await snapshot.read(view, 0);
      expect(Buffer.compare(view, before)).toBe(0);
      expect(snapshot.stats().copiedClusters).toBe(64);
      await snapshot.close();
    }
    await origin.close();
  });

  it('stores clusters copied in sequence in sequence: reading them back is one store read', async () => {
    const before = patterned(8 * MiB, 5);
    const origin = new Origin(new CountingDevice(before.slice()));
    const store = new CountingStore();
    const snapshot = await origin.createSnapshot(store, { name: 'fss0' });
    // Sixteen writers of 256 KiB at once, in order, as fio and nbdcopy write.
    for (let round = 0; round < 2; round++) {
      await Promise.all(
        Array.from({ length: 16 }, (_, index) =>
          origin.write(patterned(256 * KiB, index), (round * 16 + index) * 256 * KiB),
        ),
      );
    }
    await until(() => {
      const { busy, valid, writing } = snapshot.stats().cache;
      return busy + valid + writing === 0;
    });
    store.reads = 0;
    const view = new Uint8Array(8 * MiB);
    await snapshot.read(view, 0);
    expect(Buffer.compare(view, before)).toBe(0);
    expect(store.reads).toBe(1);
    await snapshot.close();
    await origin.close();
  });

  it('keeps at most cacheSlotCount clusters in its slots, for any cacheBytes', async () => {
    for (const cacheBytes of [0, 256 * KiB, 2 * MiB]) {
      const origin = new Origin(new CountingDevice(patterned(4 * MiB, 7)));
      const snapshot = await origin.createSnapshot(new MemoryBackingStore(), { name: 'fss0', cacheBytes });
      const slots = snapshot.geometry.cacheSlotCount;
      expect(slots).toBe(Math.max(8, cacheBytes / (64 * KiB)));
      const writes = Array.from({ length: 16 }, (_, index) =>
        origin.write(patterned(256 * KiB, index), index * 256 * KiB),
      );
      let held = 0;
      for (let tick = 0; tick < 50; tick++) {
        const { busy, valid, writing } = snapshot.stats().cache;
        held = Math.max(held, busy + valid + writing);
        await new Promise((resolve) => setImmediate(resolve));
      }
      await Promise.all(writes);
      expect(held).toBeGreaterThan(0);
      expect(held).toBeLessThanOrEqual(slots);
      await snapshot.close();
      await origin.close();
    }
  });
});

/** Waits (at most 5 s) for background work such as write-back to make `condition` true. */
async function until(condition: () => boolean): Promise<void> {
  for (const start = Date.now(); !condition(); ) {
    if (Date.now() - start > 5000) throw new Error('condition not reached within 5 s');
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}
