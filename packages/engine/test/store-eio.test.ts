/**
 * Store EIO in-process (issue 11, item 1), with the fault-injecting store: a store whose
 * writes start failing with EIO half way through a run of origin writes, for each
 * durability. The property test (engine-property.test.ts) covers random EIO and ENOSPC
 * faults; this one pins the exact outcome of one failure point.
 *
 * - Every origin write resolves and is on the device.
 * - The snapshot turns invalid once (`fss0: snapshot invalid: write error on backing
 *   store: EIO: …`), reads answer ENXIO, info() still answers.
 * - A store *read* error while the snapshot is valid fails that read with EIO and leaves
 *   the snapshot valid (the saved data may still be readable later; nothing was lost).
 */
import { FaultyBackingStore, MemoryBackingStore, MemoryBlockDevice } from '@fss/core';
import { patternBytes } from '@fss/core/testing';
import { describe, expect, it } from 'vitest';
import { Origin } from '../src/index';

const CLUSTER = 64 * 1024;
const CLUSTERS = 32;

async function until(condition: () => boolean): Promise<void> {
  for (const start = Date.now(); !condition(); ) {
    if (Date.now() - start > 10_000) throw new Error('condition not reached within 10 s');
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

describe('a store that starts failing with EIO', () => {
  for (const durability of ['none', 'process'] as const) {
    it(`keeps every origin write, invalidates once, then reads ENXIO (durability ${durability})`, async () => {
      const device = new MemoryBlockDevice(patternBytes(CLUSTERS * CLUSTER, 1));
      const lines: string[] = [];
      const origin = new Origin(device, { logger: (line) => lines.push(line) });
      const store = new FaultyBackingStore(new MemoryBackingStore());
      const snapshot = await origin.createSnapshot(store, { name: 'fss0', clusterSize: CLUSTER, durability });
      const expected = Buffer.from(device.bytes);
      for (let cluster = 0; cluster < CLUSTERS; cluster++) {
        if (cluster === CLUSTERS / 2) store.faults.update({ writeErrorRatio: 1 });
        const data = patternBytes(CLUSTER / 2, 100 + cluster);
        expected.set(data, cluster * CLUSTER + 512);
        await origin.write(data, cluster * CLUSTER + 512);
      }
      await until(() => !snapshot.valid);
      expect(Buffer.compare(device.bytes, expected)).toBe(0);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/^fss0: snapshot invalid: write error on backing store: EIO: /);
      await expect(snapshot.read(new Uint8Array(512), 0)).rejects.toMatchObject({ code: 'ENXIO' });
      expect(snapshot.info().fsg_mount_size).toBe(CLUSTERS);
      await snapshot.close();
      await origin.close();
    });
  }

  it('a store read error fails that snapshot read with EIO; the snapshot stays valid', async () => {
    const before = patternBytes(4 * CLUSTER, 2);
    const device = new MemoryBlockDevice(before.slice());
    const origin = new Origin(device);
    const store = new FaultyBackingStore(new MemoryBackingStore());
    const snapshot = await origin.createSnapshot(store, {
      name: 'fss0',
      clusterSize: CLUSTER,
      cacheBytes: 0,
    });
    await origin.write(new Uint8Array(CLUSTER).fill(7), 0);
    await until(() => snapshot.stats().cache.valid + snapshot.stats().cache.writing === 0); // on the store
    store.faults.failNext('read', 'EIO');
    await expect(snapshot.read(new Uint8Array(CLUSTER), 0)).rejects.toMatchObject({ code: 'EIO' });
    expect(snapshot.valid).toBe(true);
    const seen = new Uint8Array(CLUSTER);
    await snapshot.read(seen, 0);
    expect(Buffer.compare(seen, before.subarray(0, CLUSTER))).toBe(0);
    await snapshot.close();
    await origin.close();
  });
});
