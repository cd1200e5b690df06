/**
 * The indirect table: origin cluster -> backing-store cluster, stored on the backing store
 * where the store format (format.ts) puts it, with one table cluster held in memory, as fss
 * keeps one (`indir_cur` with a dirty flag).
 *
 * - Switching to another table cluster first writes the current one back if it is dirty.
 * - `written` remembers which table clusters this store has been given, so the format's rule
 *   (a never-written table cluster reads as zero) can be applied without reading the store.
 * - Every access runs under one mutex: the write-back path (setting entries) and snapshot
 *   reads (looking entries up) may both need to switch the cached table cluster.
 * - A failed write of a dirty table cluster is a backing-store write failure: it is
 *   reported to `onWriteError` (which invalidates the snapshot) and rethrown.
 */
import { assert } from './assert';
import { CopiedBitmap } from './bitmap';
import { type BackingStore, writeAll } from './device';
import {
  readTableCluster,
  readTableEntry,
  type StoreLayout,
  tableLocation,
  tableStoreCluster,
  writeTableCluster,
  writeTableEntry,
} from './format';
import { Mutex } from './mutex';

export class IndirectTable {
  private readonly layout: StoreLayout;
  private readonly store: BackingStore;
  private readonly onWriteError: (error: unknown) => void;
  private readonly current: Uint8Array;
  private currentIndex = -1;
  private dirty = false;
  private readonly written: CopiedBitmap;
  private readonly lock = new Mutex();

  constructor(
    layout: StoreLayout,
    store: BackingStore,
    buffer: Uint8Array,
    onWriteError: (error: unknown) => void,
  ) {
    assert(buffer.length === layout.geometry.clusterSize, 'table buffer must be one cluster');
    this.layout = layout;
    this.store = store;
    this.current = buffer;
    this.onWriteError = onWriteError;
    this.written = new CopiedBitmap(layout.tableClusters);
  }

  /** Records `storeClusters[i]` as the home of `clusters[i]`. Entries are set once. */
  setEntries(clusters: readonly number[], storeClusters: readonly number[]): Promise<void> {
    assert(clusters.length === storeClusters.length, 'entry arrays differ in length');
    return this.lock.run(async () => {
      for (let i = 0; i < clusters.length; i++) {
        const { tableCluster, entryIndex } = tableLocation(this.layout, clusters[i]!);
        await this.switchTo(tableCluster);
        assert(readTableEntry(this.current, entryIndex) === 0, `cluster ${clusters[i]} stored twice`);
        writeTableEntry(this.current, entryIndex, storeClusters[i]!);
        this.dirty = true;
      }
    });
  }

  /** The store cluster of each of `clusters` (0 = not stored), in order. */
  lookup(clusters: readonly number[]): Promise<number[]> {
    return this.lock.run(async () => {
      const result: number[] = new Array(clusters.length);
      for (let i = 0; i < clusters.length; i++) {
        const { tableCluster, entryIndex } = tableLocation(this.layout, clusters[i]!);
        await this.switchTo(tableCluster);
        result[i] = readTableEntry(this.current, entryIndex);
      }
      return result;
    });
  }

  /**
   * Every table cluster is to be read from the store from now on: a reopened store whose
   * table region reads as zero where never written (store-recover.ts).
   */
  markAllWritten(): void {
    for (let tableCluster = 0; tableCluster < this.layout.tableClusters; tableCluster++) {
      this.written.add(tableCluster);
    }
  }

  /** Writes the cached table cluster back if it is dirty. */
  flush(): Promise<void> {
    return this.lock.run(() => this.writeCurrent());
  }

  /**
   * When the cached cluster is table cluster 0 and dirty, writes it back in one request with
   * `headerCluster` (the store's cluster 0, which ends where table cluster 0 begins): one
   * store request where a header write and a table write would be two. False, having written
   * nothing, when the cached cluster is another or clean: the caller writes each itself.
   */
  flushWithHeader(headerCluster: Uint8Array): Promise<boolean> {
    const { clusterSize } = this.layout.geometry;
    assert(headerCluster.length === clusterSize, 'the header cluster is one cluster');
    return this.lock.run(async () => {
      if (!this.dirty || this.currentIndex !== 0) return false;
      assert(tableStoreCluster(this.layout, 0) === 1, 'table cluster 0 follows the header cluster');
      try {
        await writeAll(this.store, [headerCluster, this.current], 0);
      } catch (error) {
        this.onWriteError(error);
        throw error;
      }
      this.written.add(0);
      this.dirty = false;
      return true;
    });
  }

  private async switchTo(tableCluster: number): Promise<void> {
    if (tableCluster === this.currentIndex) return;
    await this.writeCurrent();
    this.currentIndex = -1; // a failed read must not leave a half-read cluster looking current
    await readTableCluster(
      this.store,
      this.layout,
      tableCluster,
      this.written.has(tableCluster),
      this.current,
    );
    this.currentIndex = tableCluster;
  }

  private async writeCurrent(): Promise<void> {
    if (!this.dirty) return;
    assert(this.currentIndex >= 0, 'dirty table without a current cluster');
    try {
      await writeTableCluster(this.store, this.layout, this.currentIndex, this.current);
    } catch (error) {
      this.onWriteError(error);
      throw error;
    }
    this.written.add(this.currentIndex);
    this.dirty = false;
  }
}
