/**
 * The store-full policy (issue 11, item 8), in-process: a store that answers ENOSPC after a
 * set number of bytes (FaultyBackingStore's enospcAfterBytes), lifted to make space again.
 *
 * - `block`: origin writes that need a copy wait while the store is full; space coming back
 *   lets them through and the snapshot stays valid and equal to its model (durability none
 *   and process); writes to clusters already copied never wait.
 * - `block` with a timeout: the waiting writes give up, the snapshot turns invalid (logged
 *   once, saying why) and every origin write completes and lands.
 * - Closing a snapshot whose writes wait for space ends the wait at once.
 * - `invalidate` (the default) is fss's: the first ENOSPC invalidates, no write waits.
 */
import { FaultyBackingStore, MemoryBackingStore, MemoryBlockDevice } from '@fss/core';
import { patternBytes } from '@fss/core/testing';
import { describe, expect, it } from 'vitest';
import { type Durability, Origin, type Snapshot } from '../src/index';

const CLUSTER = 64 * 1024;
const DEVICE_BYTES = 32 * CLUSTER;

/** Waits (at most 10 s) for background work to make `condition` true. */
async function until(condition: () => boolean): Promise<void> {
  for (const start = Date.now(); !condition(); ) {
    if (Date.now() - start > 10_000) throw new Error('condition not reached within 10 s');
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

interface Setup {
  device: MemoryBlockDevice;
  origin: Origin;
  store: FaultyBackingStore;
  snapshot: Snapshot;
  model: Uint8Array;
  lines: string[];
}

/** A snapshot whose store takes `clustersLeft` more clusters of data before it is full. */
async function setup(options: {
  onFull?: 'invalidate' | 'block';
  onFullTimeoutMs?: number;
  durability?: Durability;
  clustersLeft: number;
}): Promise<Setup> {
  const model = patternBytes(DEVICE_BYTES, 3);
  const device = new MemoryBlockDevice(model.slice());
  const lines: string[] = [];
  const origin = new Origin(device, { logger: (line) => lines.push(line) });
  const store = new FaultyBackingStore(new MemoryBackingStore());
  const snapshot = await origin.createSnapshot(store, {
    name: 'fss0',
    clusterSize: CLUSTER,
    cacheBytes: 0,
    onFull: options.onFull,
    onFullTimeoutMs: options.onFullTimeoutMs,
    durability: options.durability,
  });
  // The table cluster and the header fit in what is left (a header block per commit).
  store.faults.update({ enospcAfterBytes: store.faults.bytesWritten + (options.clustersLeft + 2) * CLUSTER });
  return { device, origin, store, snapshot, model, lines };
}

/** One write of a cluster's worth of new data into each of `clusters`, all at once. */
function writeClusters(origin: Origin, clusters: number[]): { all: Promise<void>; done: Set<number> } {
  const done = new Set<number>();
  const all = Promise.all(
    clusters.map(async (cluster) => {
      await origin.write(patternBytes(CLUSTER, 100 + cluster), cluster * CLUSTER);
      done.add(cluster);
    }),
  ).then(() => undefined);
  return { all, done };
}

async function readWhole(snapshot: Snapshot): Promise<Uint8Array> {
  const target = new Uint8Array(snapshot.size);
  expect(await snapshot.read(target, 0)).toBe(snapshot.size);
  return target;
}

describe('store-full policy block', () => {
  for (const durability of ['none', 'process'] as const) {
    it(`origin writes that need a copy wait while the store is full, and go on with space (durability ${durability})`, async () => {
      const { device, origin, store, snapshot, model, lines } = await setup({
        onFull: 'block',
        onFullTimeoutMs: 60_000,
        durability,
        clustersLeft: 2,
      });
      const clusters = Array.from({ length: 12 }, (_, index) => index * 2);
      const { all, done } = writeClusters(origin, clusters);
      await until(() => snapshot.waitingForSpace);
      // Give the waiting writes many chances to get through: none may while the store is full.
      for (let tick = 0; tick < 20; tick++) await new Promise((resolve) => setTimeout(resolve, 5));
      expect(done.size).toBeLessThan(clusters.length);
      expect(snapshot.valid).toBe(true);
      // A cluster copied before the store filled is written without waiting.
      const early = [...done][0];
      if (early !== undefined) await origin.write(new Uint8Array(512).fill(7), early * CLUSTER + 512);
      store.faults.update({ enospcAfterBytes: undefined }); // space again
      await all;
      await until(() => !snapshot.waitingForSpace); // durability none: write-back may still retry
      expect(snapshot.valid).toBe(true);
      expect(Buffer.compare(await readWhole(snapshot), model)).toBe(0);
      for (const cluster of clusters) {
        const expected = patternBytes(CLUSTER, 100 + cluster);
        if (cluster === early) expected.fill(7, 512, 1024);
        expect(
          Buffer.compare(device.bytes.subarray(cluster * CLUSTER, (cluster + 1) * CLUSTER), expected),
        ).toBe(0);
      }
      expect(lines.filter((line) => /snapshot invalid/.test(line))).toEqual([]);
      expect(lines).toContain('fss0: backing store has space again');
      expect(lines.some((line) => line.startsWith('fss0: backing store full: origin writes'))).toBe(true);
      await snapshot.close();
      await origin.close();
    });
  }

  it('gives up after the timeout: the snapshot turns invalid once, every origin write lands', async () => {
    const { device, origin, snapshot, lines } = await setup({
      onFull: 'block',
      onFullTimeoutMs: 200,
      clustersLeft: 1,
    });
    const clusters = Array.from({ length: 8 }, (_, index) => index);
    const { all } = writeClusters(origin, clusters);
    await all; // no write fails
    await until(() => !snapshot.valid);
    expect(snapshot.invalidReason).toMatch(/^write error on backing store: .*on-full block: still no space/);
    expect(lines.filter((line) => line.startsWith('fss0: snapshot invalid: '))).toHaveLength(1);
    await expect(snapshot.read(new Uint8Array(512), 0)).rejects.toMatchObject({ code: 'ENXIO' });
    for (const cluster of clusters) {
      const expected = patternBytes(CLUSTER, 100 + cluster);
      expect(
        Buffer.compare(device.bytes.subarray(cluster * CLUSTER, (cluster + 1) * CLUSTER), expected),
      ).toBe(0);
    }
    await snapshot.close();
    await origin.close();
  });

  it('closing the snapshot ends the wait at once: the writes land', async () => {
    const { device, origin, snapshot } = await setup({
      onFull: 'block',
      onFullTimeoutMs: 600_000,
      clustersLeft: 1,
    });
    const { all } = writeClusters(origin, [0, 1, 2, 3, 4, 5]);
    await until(() => snapshot.waitingForSpace);
    await snapshot.close(); // would take 10 minutes if it waited for the timeout
    await all;
    expect(Buffer.compare(device.bytes.subarray(5 * CLUSTER, 6 * CLUSTER), patternBytes(CLUSTER, 105))).toBe(
      0,
    );
    await origin.close();
  });
});

describe('store-full policy invalidate (the default)', () => {
  it('invalidates on the first ENOSPC; no write waits', async () => {
    const { origin, snapshot, lines } = await setup({ clustersLeft: 1 });
    expect(snapshot.onFull).toBe('invalidate');
    const { all } = writeClusters(origin, [0, 1, 2, 3, 4, 5]);
    await all;
    await until(() => !snapshot.valid);
    expect(snapshot.waitingForSpace).toBe(false);
    expect(lines.filter((line) => line.startsWith('fss0: snapshot invalid: '))).toHaveLength(1);
    expect(lines.some((line) => /backing store full: origin writes/.test(line))).toBe(false);
    await snapshot.close();
    await origin.close();
  });
});
