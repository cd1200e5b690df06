/**
 * Group commit of a persistent snapshot: write-back batches whose data was written while a
 * commit ran share the next commit (one table write and one header). That a crash at any
 * moment still leaves every displaced cluster committed is persistence.test.ts's model check.
 */
import {
  type BlockDevice,
  computeGeometry,
  decodeHeader,
  MemoryBackingStore,
  MemoryBlockDevice,
  readTableEntry,
  type StoreLayout,
  storeClusterOffset,
  storeLayout,
  tableLocation,
  tableStoreCluster,
} from '@fss/core';
import { describe, expect, it } from 'vitest';
import { Origin, PERSISTENT_CACHE_BYTES_DEFAULT } from '../src/index';

const KiB = 1024;
const CLUSTER = 64 * KiB;

/**
 * Writes at offset 0 (the header cluster, alone or with table cluster 0: without writev,
 * writeAll sends the pair as two writes, the first at 0) take `delayMs`.
 */
class SlowHeaderStore extends MemoryBackingStore {
  headerWrites = 0;

  constructor(private readonly delayMs: number) {
    super();
  }

  override async write(source: Uint8Array, offset: number): Promise<void> {
    if (offset === 0) await this.slowHeader();
    await super.write(source, offset);
  }

  private async slowHeader(): Promise<void> {
    this.headerWrites += 1;
    await new Promise((resolve) => setTimeout(resolve, this.delayMs));
  }
}

/** Data writes (past the table) are applied only after `delayMs`; the header and table at once. */
class SlowDataStore extends MemoryBackingStore {
  constructor(
    private readonly dataStart: number,
    private readonly delayMs: number,
  ) {
    super();
  }

  override async write(source: Uint8Array, offset: number): Promise<void> {
    if (offset >= this.dataStart) await new Promise((resolve) => setTimeout(resolve, this.delayMs));
    await super.write(source, offset);
  }
}

/**
 * What a process crash right after an origin write landed would leave: for each cluster the
 * write overwrote, the store's header and table (as written so far) must commit it, and its
 * stored data must be the cluster's contents at the snapshot moment. Returns what is wrong.
 */
async function uncommittedClusters(
  store: MemoryBackingStore,
  layout: StoreLayout,
  model: Uint8Array,
  first: number,
  end: number,
): Promise<string[]> {
  const { clusterSize } = layout.geometry;
  const headerBytes = new Uint8Array(512);
  await store.read(headerBytes, 0);
  const { nextCluster } = decodeHeader(headerBytes);
  const wrong: string[] = [];
  for (let cluster = first; cluster < end; cluster++) {
    const { tableCluster, entryIndex } = tableLocation(layout, cluster);
    const table = new Uint8Array(clusterSize);
    await store.read(table, storeClusterOffset(layout, tableStoreCluster(layout, tableCluster)));
    const entry = readTableEntry(table, entryIndex);
    if (entry === 0 || entry >= nextCluster) {
      wrong.push(`cluster ${cluster}: entry ${entry}, header next cluster ${nextCluster}`);
      continue;
    }
    const stored = new Uint8Array(clusterSize);
    await store.read(stored, storeClusterOffset(layout, entry));
    const old = model.subarray(cluster * clusterSize, (cluster + 1) * clusterSize);
    if (!Buffer.from(stored).equals(Buffer.from(old))) wrong.push(`cluster ${cluster}: stored data differs`);
  }
  return wrong;
}

function patterned(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 7 + seed * 13) & 0xff;
  return bytes;
}

describe('group commit (durability process)', () => {
  it('commits the batches written during a commit together, and reads back the snapshot exactly', async () => {
    const before = patterned(4 * 1024 * KiB, 1);
    const device = new MemoryBlockDevice(before.slice());
    const origin = new Origin(device);
    const store = new SlowHeaderStore(20);
    const snapshot = await origin.createSnapshot(store, {
      name: 'fss0',
      clusterSize: CLUSTER,
      durability: 'process',
      tableZeroed: true,
      cacheBytes: 16 * CLUSTER,
    });
    const headersAtStart = store.headerWrites;
    // 32 single-cluster writes at once: more than the 16 slots, so batches follow each other.
    const writes = Array.from({ length: 32 }, (_, i) =>
      origin.write(patterned(CLUSTER, 100 + i), (2 * i + 1) * CLUSTER),
    );
    await Promise.all(writes);
    const { cache } = snapshot.stats();
    const commits = store.headerWrites - headersAtStart;
    expect(cache.stored).toBe(32);
    expect(cache.batches).toBeGreaterThan(2);
    expect(commits).toBeGreaterThan(0);
    expect(commits).toBeLessThan(cache.batches);
    const view = new Uint8Array(before.length);
    await snapshot.read(view, 0);
    expect(Buffer.from(view).equals(Buffer.from(before))).toBe(true);
    await snapshot.close();
  });

  it('no origin write lands before its displaced clusters are committed, data first', async () => {
    const before = patterned(2 * 1024 * KiB, 3);
    const memory = new MemoryBlockDevice(before.slice());
    let check: ((offset: number, length: number) => Promise<void>) | undefined;
    // The origin checks the store at the moment each write would land, before applying it.
    const device: BlockDevice = Object.assign(Object.create(memory) as BlockDevice, {
      write: async (source: Uint8Array, offset: number) => {
        await check?.(offset, source.length);
        await memory.write(source, offset);
      },
    });
    const origin = new Origin(device);
    // Data lands 5 ms after it is issued: a commit that did not wait for it would be seen.
    const layout = storeLayout(
      computeGeometry({ deviceBytes: before.length, clusterSize: CLUSTER, storeBlockSize: 512 }),
    );
    const store = new SlowDataStore(storeClusterOffset(layout, layout.firstDataCluster), 5);
    const snapshot = await origin.createSnapshot(store, {
      name: 'fss0',
      clusterSize: CLUSTER,
      durability: 'process',
      tableZeroed: true,
      cacheBytes: 8 * CLUSTER,
    });
    const problems: string[] = [];
    check = async (offset, length) => {
      const first = Math.floor(offset / CLUSTER);
      const end = Math.ceil((offset + length) / CLUSTER);
      problems.push(...(await uncommittedClusters(store, snapshot.layout, before, first, end)));
    };
    await Promise.all(
      Array.from({ length: 24 }, (_, i) => origin.write(patterned(CLUSTER / 2, 50 + i), i * CLUSTER + 512)),
    );
    expect(snapshot.layout.firstDataCluster).toBe(layout.firstDataCluster);
    expect(problems).toEqual([]);
    expect(snapshot.stats().cache.stored).toBe(24);
    await snapshot.close();
  });

  it('a persistent snapshot gets PERSISTENT_CACHE_BYTES_DEFAULT of slots unless told otherwise', async () => {
    const origin = new Origin(new MemoryBlockDevice(1024 * 1024 * KiB));
    const persistent = await origin.createSnapshot(new MemoryBackingStore(), {
      clusterSize: CLUSTER,
      durability: 'process',
      tableZeroed: true,
    });
    expect(persistent.geometry.cacheSlotCount).toBe(PERSISTENT_CACHE_BYTES_DEFAULT / CLUSTER);
    await persistent.close();
  });
});
