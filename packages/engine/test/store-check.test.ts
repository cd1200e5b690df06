/**
 * The store the engine writes passes @fss/core's offline check (what fssck runs): after the
 * snapshot is closed, the header, geometry and table agree, every stored cluster is mapped
 * once, and the copied count is the snapshot's.
 */
import { checkStore, MemoryBackingStore, MemoryBlockDevice } from '@fss/core';
import { describe, expect, it } from 'vitest';
import { Origin } from '../src/index';

describe('a closed snapshot store', () => {
  it('is clean for checkStore, with the snapshot copied count', async () => {
    const device = new MemoryBlockDevice(3 * 1024 * 1024 + 1000);
    const origin = new Origin(device, { logger: () => undefined });
    const memory = new MemoryBackingStore({ blockSize: 4096 });
    // The snapshot closes its store; keep the memory readable for the check afterwards.
    const store = {
      blockSize: memory.blockSize,
      read: (target: Uint8Array, offset: number) => memory.read(target, offset),
      write: (source: Uint8Array, offset: number) => memory.write(source, offset),
      flush: () => memory.flush(),
      close: async () => undefined,
    };
    const snapshot = await origin.createSnapshot(store, { clusterSize: 16384 });
    for (let offset = 0; offset < device.size; offset += 50_000) {
      await origin.write(new Uint8Array(700).fill(offset & 0xff), offset);
    }
    const copied = snapshot.stats().copiedClusters;
    await snapshot.close();
    const check = await checkStore({
      sizeBytes: undefined,
      read: async (offset, length) => {
        const bytes = new Uint8Array(length);
        await memory.read(bytes, offset);
        return bytes;
      },
    });
    expect(check.findings.filter((finding) => finding.severity !== 'info')).toEqual([]);
    expect(check).toMatchObject({ clean: true, copiedClusters: copied, tornEntries: 0 });
    expect(copied).toBeGreaterThan(50);
    await origin.close();
  });
});
