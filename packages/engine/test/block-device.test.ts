/**
 * The engine's two BlockDevices run the BlockDevice conformance suite.
 *
 * - An Origin over a MemoryBlockDevice: the writable cases. Once alone, once with an active
 *   snapshot (so every write of the suite takes the copy-on-write path first, and the
 *   snapshot must still read the origin as it was), and once over a device that reorders
 *   its requests (FaultyBlockDevice with jitter, no faults).
 * - A Snapshot: the read-only cases, checked against the origin's bytes at the moment the
 *   snapshot was taken. Before the suite reads, the origin is overwritten over many clusters
 *   (write, writeZeroes, discard), so the snapshot answers from its cache, its store and the
 *   origin. A snapshot answers reads after close with ENXIO, as an unconfigured NetBSD fss
 *   unit does, which is declared.
 */
import { FaultyBlockDevice, MemoryBackingStore, MemoryBlockDevice } from '@fss/core';
import { assertSameBytes, patternBytes, testBlockDevice } from '@fss/core/testing';
import { expect, it } from 'vitest';
import { Origin, type Snapshot } from '../src/index';

const DEVICE_BYTES = 4 * 1024 * 1024;
const CLUSTER_BYTES = 4096;
const quiet = { logger: () => {} };

/** What an Origin over memory can do: everything, including writes at any byte. */
const originCapabilities = {
  unaligned: true,
  writeZeroes: true,
  discard: true,
} as const;

testBlockDevice(
  'Origin over a MemoryBlockDevice',
  () => new Origin(new MemoryBlockDevice(DEVICE_BYTES), { name: 'origin', ...quiet }),
  originCapabilities,
);

/** The snapshots the active-snapshot fixtures took, with the bytes each must keep reading. */
const taken: { snapshot: Snapshot; contents: Uint8Array }[] = [];

testBlockDevice(
  'Origin over a MemoryBlockDevice, with an active snapshot',
  async () => {
    const contents = patternBytes(DEVICE_BYTES, 1);
    const origin = new Origin(new MemoryBlockDevice(contents.slice()), { name: 'origin', ...quiet });
    const snapshot = await origin.createSnapshot(new MemoryBackingStore(), {
      name: 'fss0',
      clusterSize: CLUSTER_BYTES,
    });
    taken.push({ snapshot, contents });
    // The suite closes the origin first (the snapshot becomes invalid), then this runs.
    return { device: origin, cleanup: () => snapshot.close() };
  },
  originCapabilities,
  (context) => {
    it('keeps the snapshot reading the origin as it was while the origin is written', async () => {
      const origin = await context.open();
      const { snapshot, contents } = taken.at(-1)!;
      await origin.write(patternBytes(64 * 1024, 2), 100_000);
      await origin.writeZeroes!(300_000, 50_000);
      await origin.discard!(DEVICE_BYTES - 3 * CLUSTER_BYTES, 3 * CLUSTER_BYTES);
      const back = new Uint8Array(DEVICE_BYTES);
      expect(await snapshot.read(back, 0)).toBe(DEVICE_BYTES);
      assertSameBytes(back, contents, 'snapshot after origin writes', 0);
      expect(snapshot.stats().copiedClusters).toBeGreaterThanOrEqual(16 + 13 + 3);
    });
  },
);

testBlockDevice(
  'Origin over a device that reorders requests, with an active snapshot',
  async () => {
    const device = new FaultyBlockDevice(new MemoryBlockDevice(DEVICE_BYTES), { seed: 7, jitterTicks: 3 });
    const origin = new Origin(device, { name: 'origin', ...quiet });
    const snapshot = await origin.createSnapshot(new MemoryBackingStore(), {
      name: 'fss0',
      clusterSize: CLUSTER_BYTES,
    });
    return { device: origin, cleanup: () => snapshot.close() };
  },
  originCapabilities,
);

testBlockDevice(
  'Snapshot of an origin that was overwritten since',
  async () => {
    const contents = patternBytes(DEVICE_BYTES, 3);
    const origin = new Origin(new MemoryBlockDevice(contents.slice()), { name: 'origin', ...quiet });
    const snapshot = await origin.createSnapshot(new MemoryBackingStore(), {
      name: 'fss0',
      clusterSize: CLUSTER_BYTES,
    });
    // Displace about a quarter of the clusters, more than the cache holds, in every way an
    // origin changes: writes (some unaligned), zeroes, discards.
    for (let index = 0; index < 64; index++) {
      const at = index * 4 * CLUSTER_BYTES + (index % 3) * 1000;
      await origin.write(patternBytes(CLUSTER_BYTES + 17, 100 + index), at);
    }
    await origin.writeZeroes!(DEVICE_BYTES / 2 + 123, 5 * CLUSTER_BYTES);
    await origin.discard!(DEVICE_BYTES - 8 * CLUSTER_BYTES, 8 * CLUSTER_BYTES);
    return { device: snapshot, contents, cleanup: () => origin.close() };
  },
  { readOnly: true, unaligned: true, preferredIoSize: true, readAfterCloseCode: 'ENXIO' },
  (context) => {
    it('prefers reads of its cluster size', async () => {
      const snapshot = await context.open();
      expect(snapshot.preferredIoSize).toBe(CLUSTER_BYTES);
      expect(snapshot.logicalSectorSize).toBe(512);
    });
  },
);
