import { describe, expect, it } from 'vitest';
import type { BackingStore } from './device';
import { FssError } from './errors';
import { readTableEntry, storeClusterOffset, storeLayout, tableStoreCluster } from './format';
import { computeGeometry } from './geometry';
import { IndirectTable } from './indirect-table';
import { MemoryBackingStore } from './memory';

const KiB = 1024;
const CLUSTER = 64 * KiB;

/**
 * A memory store with a gathering write (as a backing file has) that records each request
 * (offset and length) and can be made to fail.
 */
class RecordingStore extends MemoryBackingStore {
  requests: Array<{ offset: number; length: number }> = [];
  failWrites = false;

  override async write(source: Uint8Array, offset: number): Promise<void> {
    if (this.failWrites) throw new FssError('EIO', 'store write failed');
    this.requests.push({ offset, length: source.length });
    await super.write(source, offset);
  }

  async writev(sources: readonly Uint8Array[], offset: number): Promise<void> {
    if (this.failWrites) throw new FssError('EIO', 'store write failed');
    const length = sources.reduce((sum, source) => sum + source.length, 0);
    this.requests.push({ offset, length });
    let position = offset;
    for (const source of sources) {
      await super.write(source, position);
      position += source.length;
    }
  }
}

/** A table for an origin of `deviceBytes` (64 KiB clusters: 16384 entries per table cluster). */
function tableOn(store: BackingStore, deviceBytes: number, errors: unknown[] = []) {
  const layout = storeLayout(computeGeometry({ deviceBytes, clusterSize: CLUSTER, storeBlockSize: 512 }));
  const table = new IndirectTable(layout, store, new Uint8Array(CLUSTER), (error) => errors.push(error));
  return { layout, table };
}

function headerCluster(marker: number): Uint8Array {
  const bytes = new Uint8Array(CLUSTER);
  bytes.fill(marker, 0, 512);
  return bytes;
}

async function storeBytes(store: BackingStore, offset: number, length: number): Promise<Uint8Array> {
  const bytes = new Uint8Array(length);
  await store.read(bytes, offset);
  return bytes;
}

describe('IndirectTable.flushWithHeader', () => {
  it('writes the header cluster and a dirty table cluster 0 in one request at offset 0', async () => {
    const store = new RecordingStore();
    const { layout, table } = tableOn(store, 1024 * 1024 * 1024);
    await table.setEntries([3, 7], [layout.firstDataCluster, layout.firstDataCluster + 1]);
    expect(await table.flushWithHeader(headerCluster(0xab))).toBe(true);
    expect(store.requests).toEqual([{ offset: 0, length: 2 * CLUSTER }]);
    expect((await storeBytes(store, 0, 512)).every((byte) => byte === 0xab)).toBe(true);
    const stored = await storeBytes(store, storeClusterOffset(layout, 1), CLUSTER);
    expect([readTableEntry(stored, 3), readTableEntry(stored, 7)]).toEqual([
      layout.firstDataCluster,
      layout.firstDataCluster + 1,
    ]);
    // Clean now: a second call writes nothing and leaves the header to the caller.
    expect(await table.flushWithHeader(headerCluster(0xcd))).toBe(false);
    expect(store.requests).toHaveLength(1);
  });

  it('writes nothing when the cached cluster is another table cluster (the caller writes both)', async () => {
    const store = new RecordingStore();
    const { layout, table } = tableOn(store, 2 * 1024 * 1024 * 1024); // two table clusters
    expect(layout.tableClusters).toBeGreaterThanOrEqual(2);
    await table.setEntries([16384 + 5], [layout.firstDataCluster]); // table cluster 1
    expect(await table.flushWithHeader(headerCluster(0xab))).toBe(false);
    expect(store.requests).toEqual([]);
    await table.flush();
    expect(store.requests).toEqual([
      { offset: storeClusterOffset(layout, tableStoreCluster(layout, 1)), length: CLUSTER },
    ]);
  });

  it('a failed write is reported as a store write error, rethrown, and the cluster stays dirty', async () => {
    const store = new RecordingStore();
    const errors: unknown[] = [];
    const { layout, table } = tableOn(store, 1024 * 1024 * 1024, errors);
    await table.setEntries([1], [layout.firstDataCluster]);
    store.failWrites = true;
    await expect(table.flushWithHeader(headerCluster(1))).rejects.toMatchObject({ code: 'EIO' });
    expect(errors).toHaveLength(1);
    store.failWrites = false;
    await table.flush();
    expect(store.requests).toEqual([{ offset: storeClusterOffset(layout, 1), length: CLUSTER }]);
  });
});
