/**
 * The engine-level conformance case: a snapshot kept on the store under test must read back
 * the origin as it was when the snapshot was taken, however the origin is written afterwards.
 *
 * The other cases check the store's own contract; this one checks the store is good enough
 * for what the engine actually does with it (header block, indirect table, clusters written
 * back in batches, reads overlaid from it). The workload writes far more clusters than the
 * cache has slots, so saved clusters must travel through the store and back.
 */
import { type BackingStore, MemoryBlockDevice } from '@fss/core';
import {
  assertSameBytes,
  type BackingStoreCapabilities,
  type BackingStoreFactory,
  type BackingStoreTestContext,
  patternBytes,
  testBackingStore,
} from '@fss/core/testing';
import { Origin } from '@fss/engine';
import { expect, it } from 'vitest';

/** 4 MiB and a partial last cluster: the size is no multiple of any cluster size. */
const DEVICE_BYTES = 4 * 1024 * 1024 + 3584;
const CLUSTER_BYTES = 16 * 1024;

/**
 * The BackingStore conformance suite of @fss/core/testing plus the engine-level case, for
 * stores the engine will use: what every backend's conformance test calls.
 */
export function testBackingStoreWithEngine(
  name: string,
  factory: BackingStoreFactory,
  capabilities: BackingStoreCapabilities = {},
  additionalTests?: (context: BackingStoreTestContext) => void,
): void {
  testBackingStore(name, factory, capabilities, (context) => {
    defineEngineTests(context);
    additionalTests?.(context);
  });
}

export function defineEngineTests(context: BackingStoreTestContext): void {
  it.skipIf(context.capabilities.engine === false)(
    'keeps a snapshot on this store that reads back the pre-write origin',
    async () => {
      const store = countRequests(await context.open());
      const before = patternBytes(DEVICE_BYTES, 600);
      const originModel = before.slice();
      const invalidations: string[] = [];
      const origin = new Origin(new MemoryBlockDevice(before.slice()), {
        logger: (line) => invalidations.push(line),
      });
      try {
        // fss's own slot table (8 slots of 16 KiB), not the default cache of several MiB: the
        // workload must copy far more clusters than the cache holds.
        const snapshot = await origin.createSnapshot(store, { clusterSize: CLUSTER_BYTES, cacheBytes: 0 });
        await writeWorkload(origin, originModel);
        await expectDevice(snapshot, before, 'snapshot');
        await expectDevice(origin, originModel, 'origin');
        expect(invalidations).toEqual([]);
        // Far more clusters were copied than the cache holds, so they went through the store.
        expect(store.bytesWritten).toBeGreaterThan(64 * CLUSTER_BYTES);
        expect(store.bytesRead).toBeGreaterThan(0);
        if (snapshot.state !== undefined) expect(snapshot.state).toBe('active');
        await snapshot.close();
      } finally {
        await origin.close();
      }
    },
  );
}

/**
 * Writes the origin through the engine and applies the same writes to `model`: sequential
 * unaligned writes that cross clusters, one into the partial last cluster, then a concurrent
 * batch of disjoint writes.
 */
async function writeWorkload(origin: Origin, model: Uint8Array): Promise<void> {
  const writes: { offset: number; length: number }[] = [];
  for (let index = 0; index < 96; index++) {
    const offset = (index * 44_111 + 777) % (DEVICE_BYTES - 40_000);
    writes.push({ offset, length: 1 + ((index * 9_973) % 40_000) });
  }
  writes.push({ offset: DEVICE_BYTES - 100, length: 100 });
  for (const [index, { offset, length }] of writes.entries()) {
    const source = patternBytes(length, 700 + index);
    await origin.write(source, offset);
    model.set(source, offset);
  }
  const batch = Array.from({ length: 16 }, (_, index) => ({
    offset: index * 256 * 1024 + 1000,
    source: patternBytes(30_000, 900 + index),
  }));
  await Promise.all(batch.map(({ offset, source }) => origin.write(source, offset)));
  for (const { offset, source } of batch) model.set(source, offset);
}

/** Reads all of `device` whole and in odd-sized pieces and compares with `expected`. */
async function expectDevice(
  device: { read(target: Uint8Array, offset: number): Promise<number> },
  expected: Uint8Array,
  what: string,
): Promise<void> {
  const whole = new Uint8Array(expected.length);
  expect(await device.read(whole, 0)).toBe(expected.length);
  assertSameBytes(whole, expected, `${what}, whole device`);
  for (let offset = 0; offset < expected.length; offset += 150_001) {
    const length = Math.min(70_000, expected.length - offset);
    const piece = new Uint8Array(length);
    expect(await device.read(piece, offset)).toBe(length);
    assertSameBytes(piece, expected.subarray(offset, offset + length), `${what}, piece`, offset);
  }
}

/** The store under test with byte counters, so the case can check the engine really used it. */
function countRequests(store: BackingStore): BackingStore & { bytesWritten: number; bytesRead: number } {
  const counted = {
    bytesWritten: 0,
    bytesRead: 0,
    blockSize: store.blockSize,
    path: store.path,
    read(target: Uint8Array, offset: number) {
      counted.bytesRead += target.length;
      return store.read(target, offset);
    },
    write(source: Uint8Array, offset: number) {
      counted.bytesWritten += source.length;
      return store.write(source, offset);
    },
    writev:
      store.writev === undefined
        ? undefined
        : (sources: readonly Uint8Array[], offset: number) => {
            counted.bytesWritten += sources.reduce((sum, source) => sum + source.length, 0);
            return store.writev!(sources, offset);
          },
    flush: () => store.flush(),
    close: () => store.close(),
    allocateBuffer: store.allocateBuffer?.bind(store),
  };
  return counted;
}
