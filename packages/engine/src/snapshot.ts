/**
 * A snapshot unit: the point-in-time view of an origin (SPEC §1-§2).
 *
 * Notes on the design
 *
 * State: CREATING (store prepared, not yet taking copies) -> ACTIVE (copy-on-write on,
 * reads served) -> INVALID (a store write failed or the origin went away: copies stop, reads
 * get ENXIO, info() still answers) or CLOSED (unconfigured).
 *
 * Copy-on-write (called by the Origin before every write, `preserve`): for each cluster the
 * write touches that is not yet copied, the ClusterCache reads the whole old cluster from the
 * origin device into a slot (the partial last cluster is zero-filled past the device's end),
 * sets its copied bit and lets the write go on; a run of such clusters is one origin read
 * into adjacent slots. Write-back appends VALID slots to the store in batches sorted by
 * origin cluster (one store request per batch; two batches may be in flight, eight for a
 * persistent snapshot, each with its store clusters reserved when it starts), then records
 * their indirect-table entries; only then are the slots freed, so saved data is always in a
 * slot or findable on the store.
 *
 * Cache size: fss's slot table (32/8/4 by cluster size, SPEC §2) is the minimum; the slot
 * count is raised to fill `cacheBytes` (CACHE_BYTES_DEFAULT), so that several run loads and a
 * write-back batch fit at once, whatever the cluster size, in bounded memory.
 *
 * Shared origin reads: the snapshots of one origin load through one SharedLoads (@fss/cache,
 * keyed by the origin's device), so when several snapshots copy the same cluster for the same
 * origin write, one reads the origin and the others copy its bytes. That is correct because
 * a load is in flight only while its cluster's claim is pending, and while any snapshot's
 * claim on a cluster is pending no origin write to that cluster can land: every origin write
 * waits for every active snapshot's claims on its clusters (copy-on-write.ts), and a snapshot
 * becomes active only when no write is in flight (the write gate). So two snapshots whose
 * loads of a cluster overlap in time read the same bytes, whoever reads them.
 *
 * Read, in the order fss does it, which is what makes reads correct while writes run:
 *  1. If any cluster of the request is not copied, read the whole request from the origin
 *     device (one request; a read of untouched clusters is exactly one origin read).
 *  2. After that read completes, overlay every cluster that is copied *now*: from its cache
 *     slot, or from the store, one store request per run of clusters stored contiguously.
 * A cluster whose origin bytes changed during step 1 had its copy taken before the write was
 * issued (the write waits for the copy), so step 2 sees its bit and restores the old data.
 *
 * Durability (SnapshotOptions.durability; 'none' is NetBSD's behaviour, the default):
 *   none     saved clusters wait in cache slots and reach the store in the background; the
 *            header is written at state changes. A crash loses the snapshot (as a reboot
 *            loses a NetBSD unit).
 *   process  the commit protocol: an origin write waits until the clusters it displaces are
 *            committed, i.e. their data has been written to the store, and after it their
 *            table entries and a header with the new next cluster and commit sequence (these
 *            two in either order, in one request when the entries are in table cluster 0,
 *            which follows the header cluster). Commits run one after another, in the order
 *            the batches reserved store clusters; a commit takes every batch at the head of
 *            that order whose data is written (group commit: one table write and one header
 *            for many batches). Survives the daemon's death at any moment (the writes are in
 *            the kernel), not power loss. Reopened with Origin.resumeSnapshot.
 *   power    the same, with the table entries written before the header and an fdatasync
 *            of the store after the entries (data and entries durable before the header says
 *            so) and after the header (durable before the origin write is issued): survives
 *            power loss too.
 * A persistent store's table region must read as zero where never written (format flag
 * STORE_FLAG_TABLE_ZEROED): files fssd creates or truncates do; otherwise (a raw device,
 * `tableZeroed` false) it is zeroed when the snapshot is created.
 *
 * Store failures never reach origin writes: a failed write-back or table write invalidates
 * the snapshot (logged once as `NAME: snapshot invalid: WHY`), and the cache releases every
 * writer that waited for it.
 */
import { type CacheStats, ClusterCache, type DirtyCluster, sharedLoadsOf } from '@fss/cache';
import {
  type AllocationRun,
  appendRun,
  assert,
  type BackingStore,
  type BlockDevice,
  byteToCluster,
  CopiedBitmap,
  clusterBytes,
  clusterPiece,
  clusterRange,
  clusterToByte,
  computeGeometry,
  type DecodedHeader,
  type Deferred,
  deferred,
  encodeHeaderBlock,
  FssError,
  type FssGet,
  headerFor,
  IndirectTable,
  Mutex,
  netbsdClustersInUse,
  readableLength,
  recoverTable,
  type SnapshotGeometry,
  STORE_FLAG_TABLE_ZEROED,
  type StoreLayout,
  storeClusterOffset,
  storeLayout,
  timeValFromMs,
  toFssError,
  writeAll,
} from '@fss/core';
import { SpaceWaitingStore } from './space-wait';

export type Logger = (line: string) => void;

/**
 * Memory for cache slots when SnapshotOptions.cacheBytes is not given: 64 slots of 64 KiB,
 * room for four 1 MiB writes' runs while a batch is written back. (fss's own table, 8 slots
 * of 64 KiB, lets one write at a time copy; measured in docs/performance.md.)
 */
export const CACHE_BYTES_DEFAULT = 4 * 1024 * 1024;

/**
 * The same for a persistent snapshot, whose slots stay taken from the load until the commit
 * that stores them and whose writers wait all that time: 8 MiB lets sixteen 512 KiB origin
 * writes (a loop device's QD16 split at its segment limit) copy at once. 4 MiB held
 * first-touch writes to about two thirds of that; 16 MiB gained nothing more (measured in
 * docs/performance.md, "Attached devices, third pass").
 */
export const PERSISTENT_CACHE_BYTES_DEFAULT = 8 * 1024 * 1024;

/**
 * Write-back batches in flight: two for a snapshot whose writers go on once their clusters
 * are in a slot; eight for a persistent one, whose writers wait for the commit, so that
 * batches are written while others commit and commits group the batches written meanwhile.
 */
const WRITE_BACKS_IN_FLIGHT = { none: 2, persistent: 8 } as const;

/** The most bytes one copy-on-write load reads from the origin (a run of clusters). */
const LOAD_BYTES_MAX = 1024 * 1024;

export type SnapshotState = 'creating' | 'active' | 'invalid' | 'closed';

/** How much of a snapshot survives what (see "Durability" above). */
export type Durability = 'none' | 'process' | 'power';

/**
 * What a full backing store does to the snapshot (SnapshotOptions.onFull): `invalidate` (fss's
 * behaviour, the default) or `block` (origin writes that need a copy wait for space, up to
 * onFullTimeoutMs, then the snapshot is invalidated; space-wait.ts).
 */
export type OnFullPolicy = 'invalidate' | 'block';

/** How long origin writes wait for space under `block` when no timeout is given. */
export const ON_FULL_TIMEOUT_MS_DEFAULT = 30_000;

/** How often a write waiting for space tries again. */
const SPACE_RETRY_MS = 100;

/** Bytes of zeroes written at a time when a store's table region is zeroed. */
const ZERO_CHUNK_BYTES = 1024 * 1024;

export interface SnapshotOptions {
  /** The unit's name in messages, e.g. `fss0` (default `snapshot`). */
  name?: string;
  /** Preferred cluster size in bytes; 0 or absent for the default (SPEC §2). */
  clusterSize?: number;
  /** What FSSIOCGET reports as fsg_mount (default: the origin's name). */
  mount?: string;
  /** Written into the store header to say which origin the store belongs to. */
  originIdentity?: string;
  /** Raises the cache slot count above fss's 32/8/4. */
  cacheSlotsMin?: number;
  /**
   * Raises the cache slot count to fill this many bytes (default CACHE_BYTES_DEFAULT, for a
   * persistent snapshot PERSISTENT_CACHE_BYTES_DEFAULT; 0 for fss's minimum). The slot count
   * is the largest of fss's 32/8/4, cacheSlotsMin and cacheBytes / cluster size; the slots
   * are allocated once, at creation.
   */
  cacheBytes?: number;
  /** Where `snapshot invalid` lines go (default console.warn). */
  logger?: Logger;
  /** Debug lines (activation summary); default: none. */
  debug?: Logger;
  /** The clock, in ms since the epoch (tests inject one). */
  now?: () => number;
  /**
   * Called synchronously at the snapshot moment, inside the origin's write gate: no origin
   * write is in flight and none starts until it returns, so what it records of the origin
   * (a copy, another unit's copied set) is exactly the snapshot's point in time. It must not
   * wait for anything; a throw fails createSnapshot and closes the store.
   */
  onActivate?: (snapshot: Snapshot) => void;
  /** What survives a crash (see "Durability"); default 'none'. */
  durability?: Durability;
  /**
   * The store's table region reads as zero where never written (a file just created or
   * truncated): a persistent snapshot need not zero it. Default false.
   */
  tableZeroed?: boolean;
  /** What a full store does (see OnFullPolicy); default 'invalidate'. */
  onFull?: OnFullPolicy;
  /** Under `block`: how long writes wait for space (ms, default ON_FULL_TIMEOUT_MS_DEFAULT). */
  onFullTimeoutMs?: number;
}

/** What a snapshot needs from its origin. */
export interface SnapshotHost {
  readonly device: BlockDevice;
  readonly name: string;
  /** Stops copy-on-write for the snapshot. */
  detach(snapshot: Snapshot): void;
}

export interface SnapshotStats {
  copiedClusters: number;
  storeClustersInUse: number;
  cache: CacheStats;
}

export class Snapshot implements BlockDevice {
  readonly readOnly = true;
  readonly name: string;
  readonly geometry: SnapshotGeometry;
  /** Where the header, the table and the data are on the store (the store format). */
  readonly layout: StoreLayout;
  readonly mount: string;
  readonly store: BackingStore;
  private readonly host: SnapshotHost;
  private readonly options: SnapshotOptions;
  private readonly copied: CopiedBitmap;
  private readonly cache: ClusterCache;
  private readonly table: IndirectTable;
  private currentState: SnapshotState = 'creating';
  private reason: string | undefined;
  private timeMs = 0;
  private nextCluster: number;
  /** Durable mode: the first store cluster not covered by a completed commit. */
  private committedNext: number;
  private commitSequence = 0;
  /** Durable mode: batches waiting to be committed, in the order they reserved store clusters. */
  private readonly commitQueue: PendingCommit[] = [];
  /** Durable mode: a group commit is being written. */
  private committing = false;
  private tableZeroed: boolean;
  readonly durability: Durability;
  readonly onFull: OnFullPolicy;
  /** Under `block`: how long origin writes wait for space before the snapshot is invalidated. */
  readonly onFullTimeoutMs: number;
  /** Under `block`: the store wrapper whose writes wait for space. */
  private readonly spaceWait: SpaceWaitingStore | undefined;
  /** Header writes run one at a time and encode the state current when they run. */
  private readonly headerLock = new Mutex();
  /** The header cluster a commit writes with table cluster 0, allocated at the first. */
  private headerClusterBuffer: Uint8Array | undefined;

  /** Use `Origin.createSnapshot`. */
  constructor(host: SnapshotHost, store: BackingStore, options: SnapshotOptions = {}) {
    this.host = host;
    this.options = options;
    this.name = options.name ?? 'snapshot';
    this.onFull = options.onFull ?? 'invalidate';
    this.onFullTimeoutMs = options.onFullTimeoutMs ?? ON_FULL_TIMEOUT_MS_DEFAULT;
    this.spaceWait = this.onFull === 'block' ? this.waitForSpaceOn(store) : undefined;
    this.store = this.spaceWait ?? store;
    this.mount = options.mount ?? host.name;
    this.geometry = cacheGeometry(host.device.size, store.blockSize, options);
    this.layout = storeLayout(this.geometry);
    this.nextCluster = this.layout.firstDataCluster;
    this.committedNext = this.nextCluster;
    this.durability = options.durability ?? 'none';
    this.tableZeroed = options.tableZeroed ?? false;
    this.copied = new CopiedBitmap(this.geometry.clusterCount);
    const onStoreWriteError = (error: unknown) =>
      this.invalidate(`write error on backing store: ${describe(error)}`);
    this.table = new IndirectTable(
      this.layout,
      this.store,
      this.allocate(this.geometry.clusterSize),
      onStoreWriteError,
    );
    this.cache = new ClusterCache({
      slotCount: this.geometry.cacheSlotCount,
      slotBytes: this.geometry.clusterSize,
      copied: this.copied,
      allocate: (bytes) => this.allocate(bytes),
      loadClustersMax: Math.max(1, Math.floor(LOAD_BYTES_MAX / this.geometry.clusterSize)),
      load: (first, target) => this.loadFromOrigin(first, target),
      writeBack: (batch) => this.writeBack(batch),
      onWriteBackError: onStoreWriteError,
      releaseAfterStore: this.durability !== 'none',
      writeBacksInFlightMax:
        this.durability === 'none' ? WRITE_BACKS_IN_FLIGHT.none : WRITE_BACKS_IN_FLIGHT.persistent,
    });
  }

  get state(): SnapshotState {
    return this.currentState;
  }

  get size(): number {
    return this.geometry.deviceBytes;
  }

  get logicalSectorSize(): number {
    return this.host.device.logicalSectorSize;
  }

  /** A cluster: reading part of one costs as much as reading all of it. */
  get preferredIoSize(): number {
    return this.geometry.clusterSize;
  }

  /** True while the snapshot serves reads (ACTIVE). */
  get valid(): boolean {
    return this.currentState === 'active';
  }

  /** Why the snapshot became invalid, if it did. */
  get invalidReason(): string | undefined {
    return this.reason;
  }

  /** When the snapshot was taken (ms since the epoch; 0 while creating). */
  get takenAtMs(): number {
    return this.timeMs;
  }

  /** Under the `block` policy: true while origin writes wait for space on the store. */
  get waitingForSpace(): boolean {
    return this.spaceWait?.waitingForSpace ?? false;
  }

  /** True when the snapshot survives its daemon's death (durability process or power). */
  get persistent(): boolean {
    return this.durability !== 'none';
  }

  /** Backing-store clusters in use: header, indirect table and stored data. */
  get storeClustersInUse(): number {
    return this.nextCluster;
  }

  /**
   * FSSIOCGET's answer. `fsg_bs_size` counts what NetBSD's sc_clnext counts, the indirect
   * table and the stored data clusters; our header cluster is not NetBSD's, so it is left out.
   */
  info(): FssGet {
    return {
      fsg_mount: this.mount,
      fsg_time: timeValFromMs(this.timeMs),
      fsg_csize: this.geometry.clusterSize,
      fsg_mount_size: this.geometry.clusterCount,
      fsg_bs_size: netbsdClustersInUse(this.nextCluster),
    };
  }

  stats(): SnapshotStats {
    return {
      copiedClusters: this.copied.count,
      storeClustersInUse: this.nextCluster,
      cache: this.cache.stats(),
    };
  }

  /**
   * A copy of the copied bitmap's words (bit c of word c >>> 5 = cluster c): the clusters
   * saved since the snapshot moment, which are exactly the clusters the origin was written
   * in since then (every origin write preserves first). Changed-block tracking reads it.
   */
  copiedWords(): Uint32Array {
    return this.copied.toWords();
  }

  allocateBuffer(length: number): Uint8Array {
    return this.allocate(length);
  }

  async read(target: Uint8Array, offset: number): Promise<number> {
    this.checkReadable();
    const length = readableLength(this.size, offset, target.length, this.name);
    if (length === 0) return 0;
    const view = length === target.length ? target : target.subarray(0, length);
    const { first, end } = clusterRange(this.geometry, offset, length);
    try {
      if (!this.copied.allSet(first, end)) {
        const read = await this.host.device.read(view, offset);
        if (read !== length) throw new FssError('EIO', `short read from origin (${read} of ${length})`);
      }
      await this.overlayCopied(view, offset, first, end);
    } catch (error) {
      this.checkReadable(); // a store closed or failing under an invalidated snapshot: ENXIO
      throw error;
    }
    this.checkReadable(); // invalidated while reading: the bytes may be wrong
    return length;
  }

  /**
   * Where the snapshot's bytes of `[offset, offset + length)` are allocated (BlockDevice's
   * allocation capability; an NBD export reports it as base:allocation):
   *
   *   copied cluster    allocated data: its old contents were written in full to the store
   *                     (or wait in a cache slot for that), so the store has no hole there
   *   uncopied cluster  the origin's answer: its bytes are still the origin's (a hole of a
   *                     sparse image is a hole of the snapshot), or data when the origin
   *                     device cannot tell
   *
   * Asked in the order of `read`, for the same reason: the origin first, the copied bitmap
   * after. A cluster still uncopied once the origin answered had no write landed on it before
   * (a write waits for its copy, and the copy sets the bit), so the origin described the
   * snapshot's bytes. At most `runsMax` runs; covers at most what the origin's answer covered.
   */
  async allocation(offset: number, length: number, runsMax: number): Promise<AllocationRun[]> {
    this.checkReadable();
    if (!Number.isSafeInteger(offset) || offset < 0 || length <= 0 || offset + length > this.size) {
      throw new FssError('EINVAL', `allocation query ${offset}+${length} is outside the snapshot`, {
        syscall: 'lseek',
        path: this.name,
      });
    }
    assert(Number.isInteger(runsMax) && runsMax >= 1, 'an allocation query may return at least one run');
    const originRuns = (await this.host.device.allocation?.(offset, length, runsMax)) ?? [
      { length, hole: false, zero: false },
    ];
    this.checkReadable();
    const runs: AllocationRun[] = [];
    let position = offset;
    for (const originRun of originRuns) {
      const runEnd = position + originRun.length;
      assert(originRun.length > 0 && runEnd <= offset + length, 'origin runs lie in the query');
      while (position < runEnd) {
        const pieceEnd = Math.min(runEnd, this.stateChangeAfter(position));
        const copied = this.copied.has(byteToCluster(this.geometry, position));
        appendRun(
          runs,
          copied
            ? { length: pieceEnd - position, hole: false, zero: false }
            : {
                length: pieceEnd - position,
                hole: originRun.hole,
                zero: originRun.zero,
              },
        );
        position = pieceEnd;
      }
    }
    return runs.slice(0, runsMax);
  }

  /** The first byte after `position` whose cluster's copied bit differs from its own. */
  private stateChangeAfter(position: number): number {
    const cluster = byteToCluster(this.geometry, position);
    const { clusterCount } = this.geometry;
    const next = this.copied.has(cluster)
      ? this.copied.nextClear(cluster, clusterCount)
      : this.copied.nextSet(cluster, clusterCount);
    return next === -1 ? this.size : clusterToByte(this.geometry, next);
  }

  async write(_source: Uint8Array, _offset: number): Promise<void> {
    throw this.readOnlyError('write');
  }

  async writeZeroes(_offset: number, _length: number): Promise<void> {
    throw this.readOnlyError('write');
  }

  async discard(_offset: number, _length: number): Promise<void> {
    throw this.readOnlyError('discard');
  }

  private readOnlyError(syscall: string): FssError {
    return new FssError('EROFS', 'a snapshot is read-only', { syscall, path: this.name });
  }

  async flush(): Promise<void> {
    if (this.currentState === 'closed')
      throw new FssError('EBADF', 'snapshot is closed', { path: this.name });
  }

  /**
   * Unconfigures the snapshot: copy-on-write stops, saved clusters still in the cache are
   * written out, the table and header are brought up to date (best effort: the store may be
   * the reason we are closing), and the store is closed.
   */
  async close(): Promise<void> {
    if (this.currentState === 'closed') return;
    const wasActive = this.currentState === 'active';
    this.currentState = 'closed';
    this.host.detach(this);
    // Writes waiting for space would hold the close until their timeout: they fail now.
    this.spaceWait?.stop();
    if (wasActive) {
      await this.cache.drain();
      // A write-back failed while draining: the store lacks clusters, its header must say so.
      if (this.cache.isAbandoned) this.reason ??= 'closed while its backing store was failing';
      await this.table.flush().catch(() => undefined);
      await this.writeHeader().catch(() => undefined);
    }
    await this.cache.abandon();
    // A header write still queued (the invalid state, written by invalidate) lands first.
    await this.headerLock.run(async () => undefined);
    await this.store.close();
  }

  /**
   * Marks the snapshot invalid: logged once, copy-on-write stops, every later read gets
   * ENXIO. The origin is not affected.
   */
  invalidate(reason: string): void {
    if (this.currentState !== 'active' && this.currentState !== 'creating') return;
    this.currentState = 'invalid';
    this.reason = reason;
    (this.options.logger ?? console.warn)(`${this.name}: snapshot invalid: ${reason}`);
    this.host.detach(this);
    this.spaceWait?.stop();
    void this.cache.abandon();
    void this.writeHeader().catch(() => undefined); // persist the state if the store still can
  }

  /** Writes the header with the state so far. Called at creation and on state changes. */
  writeHeader(): Promise<void> {
    return this.headerLock.run(() => this.writeHeaderNow());
  }

  private async writeHeaderNow(): Promise<void> {
    await this.store.write(this.encodeHeader(this.store.blockSize), 0);
  }

  /**
   * The header with the state so far, in a block of `blockBytes` zero-padded past it: a store
   * block, or the whole header cluster for a write with table cluster 0 (commitGroup). The
   * cluster-long block is one buffer reused under the header lock.
   */
  private encodeHeader(blockBytes: number): Uint8Array {
    const header = headerFor(this.layout, {
      timeMicros: this.timeMs * 1000,
      originIdentity: this.options.originIdentity ?? this.host.name,
      // Durable: only what completed commits hold; a batch still being written is not there.
      nextCluster: this.persistent ? this.committedNext : this.nextCluster,
      // `reason` is set once invalid and stays when the snapshot is closed afterwards.
      invalidReason: this.reason,
      commitSequence: this.commitSequence,
      flags: this.tableZeroed ? STORE_FLAG_TABLE_ZEROED : 0,
    });
    const allocate = (bytes: number) => {
      if (bytes !== this.geometry.clusterSize) return this.allocate(bytes);
      this.headerClusterBuffer ??= this.allocate(bytes);
      return this.headerClusterBuffer;
    };
    return encodeHeaderBlock(header, blockBytes, allocate);
  }

  /**
   * Before the first header of a persistent snapshot: zeroes the table region unless the
   * store already reads as zero there, so the store can be reopened (store-recover.ts).
   */
  async prepareStore(): Promise<void> {
    if (!this.persistent || this.tableZeroed) return;
    const start = storeClusterOffset(this.layout, 1);
    const end = storeClusterOffset(this.layout, this.layout.firstDataCluster);
    const zeroes = this.allocate(Math.min(ZERO_CHUNK_BYTES, end - start));
    zeroes.fill(0);
    for (let at = start; at < end; at += zeroes.length) {
      await this.store.write(zeroes.subarray(0, Math.min(zeroes.length, end - at)), at);
    }
    if (this.durability === 'power') await this.store.flush();
    this.tableZeroed = true;
  }

  /**
   * Reopening (Origin.resumeSnapshot): takes the state a persistent store durably holds,
   * clearing entries of a commit that did not complete. Throws when the store is damaged or
   * was not made persistent. The snapshot is still CREATING; `resume` activates it.
   */
  async restore(header: DecodedHeader): Promise<{ tornEntries: number }> {
    assert(this.currentState === 'creating', `restore in state ${this.currentState}`);
    const recovered = await recoverTable(
      this.store,
      this.layout,
      header,
      this.allocate(this.geometry.clusterSize),
      this.copied,
    );
    this.table.markAllWritten();
    this.tableZeroed = true;
    this.nextCluster = header.nextCluster;
    this.committedNext = header.nextCluster;
    this.commitSequence = header.commitSequence;
    this.timeMs = Math.floor(header.timeMicros / 1000);
    return { tornEntries: recovered.tornEntries };
  }

  /** The Origin calls this, with its writes suspended, to put a restored snapshot to work. */
  resume(): void {
    assert(this.currentState === 'creating', `resume in state ${this.currentState}`);
    this.currentState = 'active';
  }

  /** A restored store whose header says it was invalidated comes back invalid, not logged again. */
  restoreInvalid(reason: string): void {
    assert(this.currentState === 'creating', `restoreInvalid in state ${this.currentState}`);
    this.currentState = 'invalid';
    this.reason = reason;
  }

  /** The Origin calls this, with its writes suspended, to take the snapshot. */
  activate(timeMs: number): void {
    assert(this.currentState === 'creating', `activate in state ${this.currentState}`);
    this.timeMs = timeMs;
    this.currentState = 'active';
    const g = this.geometry;
    this.options.debug?.(
      `${this.name}: snapshot active: ${g.clusterCount} clusters of ${g.clusterSize}, ` +
        `${g.cacheSlotCount} cache slots, ${this.layout.tableClusters} indir clusters`,
    );
  }

  /**
   * Copy-on-write for an origin write of `length` bytes at `offset`. Returns undefined when
   * every touched cluster is already copied (no await on the hot path).
   */
  preserve(offset: number, length: number): Promise<unknown> | undefined {
    if (this.currentState !== 'active' || length === 0) return undefined;
    const { first, end } = clusterRange(this.geometry, offset, length);
    if (this.copied.nextClear(first, end) === -1 && !this.cache.hasUnstored) return undefined;
    // The store is full (policy block): new copies wait until it has space or gives up.
    const full = this.spaceWait?.spaceAwaited;
    if (full !== undefined) return full.then(() => this.preserve(offset, length));
    return this.cache.preserveRange(first, end);
  }

  /**
   * Reads the clusters from `first` on into `target` (whole clusters; the partial last
   * cluster of the device is zero-filled past its end), or copies them from another
   * snapshot's load of the same bytes in flight (see "Shared origin reads").
   */
  private async loadFromOrigin(first: number, target: Uint8Array): Promise<void> {
    const { clusterSize } = this.geometry;
    assert(target.length > 0 && target.length % clusterSize === 0, 'a load reads whole clusters');
    const offset = clusterToByte(this.geometry, first);
    const count = target.length / clusterSize;
    const last = first + count - 1;
    assert(last < this.geometry.clusterCount, 'a load stays within the device');
    const bytes = target.length - clusterSize + clusterBytes(this.geometry, last);
    const view = bytes === target.length ? target : target.subarray(0, bytes);
    const { device } = this.host;
    await sharedLoadsOf(device).read(view, offset, async () => {
      const read = await device.read(view, offset);
      if (read !== bytes) throw new FssError('EIO', `short read from origin (${read} of ${bytes})`);
    });
    if (bytes < target.length) target.fill(0, bytes); // the partial last cluster
  }

  /**
   * Appends a batch to the store in one request, then commits its table entries. Its store
   * clusters are reserved before the first await, so batches in flight at once never overlap.
   */
  private async writeBack(batch: readonly DirtyCluster[]): Promise<void> {
    assert(batch.length > 0, 'a batch has clusters');
    const firstStoreCluster = this.nextCluster;
    this.nextCluster = firstStoreCluster + batch.length;
    const written = writeAll(
      this.store,
      contiguousRuns(batch.map((dirty) => dirty.data)),
      storeClusterOffset(this.layout, firstStoreCluster),
    );
    const setEntries = () =>
      this.table.setEntries(
        batch.map((dirty) => dirty.cluster),
        batch.map((_, i) => firstStoreCluster + i),
      );
    if (!this.persistent) {
      await written;
      await setEntries();
      return;
    }
    // The commit protocol (see "Durability"): data, then entries and header, in batch order.
    const pending: PendingCommit = {
      storeEnd: firstStoreCluster + batch.length,
      setEntries,
      dataWritten: false,
      done: deferred(),
    };
    this.commitQueue.push(pending);
    written.then(
      () => {
        pending.dataWritten = true;
        this.startCommit();
      },
      (error: unknown) => this.failCommitsFrom(pending, error),
    );
    await pending.done.promise;
  }

  /**
   * Group commit: commits the longest run of batches at the head of the queue whose data is
   * written, in one table write and one header, unless a commit is running (it starts the
   * next when it ends). A batch behind one whose data is still being written waits for it:
   * the header's next cluster says every store cluster below it holds committed data.
   */
  private startCommit(): void {
    if (this.committing) return;
    let count = 0;
    while (count < this.commitQueue.length && this.commitQueue[count]!.dataWritten) count += 1;
    if (count === 0) return;
    const group = this.commitQueue.splice(0, count);
    this.committing = true;
    this.commitGroup(group).then(
      () => {
        for (const each of group) each.done.resolve();
        this.committing = false;
        this.startCommit();
      },
      (error: unknown) => {
        for (const each of group) each.done.reject(error);
        this.failCommitsFrom(undefined, error);
        this.committing = false;
      },
    );
  }

  private async commitGroup(group: readonly PendingCommit[]): Promise<void> {
    for (const each of group) await each.setEntries();
    const next = group[group.length - 1]!.storeEnd;
    if (this.durability === 'power') {
      // Entries durable before the header says so, the header before the origin write.
      await this.table.flush();
      await this.store.flush();
      this.committedNext = next;
      this.commitSequence += 1;
      await this.writeHeader();
      await this.store.flush();
      return;
    }
    // Durability `process`: the two writes may land in either order. A header without its
    // entries leaves the group's clusters uncopied; entries without their header lie past its
    // next cluster (a torn commit, ignored on reopening). Either way no origin write has been
    // issued over the group's clusters, so the origin still holds what they read as.
    this.committedNext = next;
    this.commitSequence += 1;
    const combined = await this.headerLock.run(async () => {
      const headerCluster = this.encodeHeader(this.geometry.clusterSize);
      return this.table.flushWithHeader(headerCluster);
    });
    if (!combined) await Promise.all([this.table.flush(), this.writeHeader()]);
  }

  /**
   * A batch's data or a commit failed (the snapshot is invalidated by the store's error
   * handler): `from` and every batch queued behind it can never be committed.
   */
  private failCommitsFrom(from: PendingCommit | undefined, error: unknown): void {
    const at = from === undefined ? 0 : this.commitQueue.indexOf(from);
    if (at === -1) return;
    for (const each of this.commitQueue.splice(at)) each.done.reject(error);
  }

  /** Step 2 of a read: restore every copied cluster of [first, end) into `view`. */
  private async overlayCopied(view: Uint8Array, offset: number, first: number, end: number): Promise<void> {
    const onStore: number[] = [];
    for (let cluster = this.copied.nextSet(first, end); cluster !== -1; ) {
      const saved = this.cache.lookup(cluster);
      if (saved === undefined) onStore.push(cluster);
      else this.copyClusterPiece(view, offset, cluster, saved);
      cluster = cluster + 1 < end ? this.copied.nextSet(cluster + 1, end) : -1;
    }
    if (onStore.length === 0) return;
    const storeClusters = await this.table.lookup(onStore);
    await Promise.all(this.readStoreRuns(view, offset, onStore, storeClusters));
  }

  /** One store read per run of clusters that are consecutive both in the origin and the store. */
  private readStoreRuns(
    view: Uint8Array,
    offset: number,
    clusters: number[],
    storeClusters: number[],
  ): Promise<void>[] {
    // Check every entry before issuing any read: a throw after the first read was issued
    // would leave that read without an owner.
    const missing = storeClusters.indexOf(0);
    if (missing !== -1) {
      // Copied but never stored: only possible once the snapshot is invalid.
      this.checkReadable();
      assert(false, `copied cluster ${clusters[missing]} has no store entry`);
    }
    const reads: Promise<void>[] = [];
    for (let i = 0; i < clusters.length; ) {
      let j = i;
      while (
        j + 1 < clusters.length &&
        clusters[j + 1] === clusters[j]! + 1 &&
        storeClusters[j + 1] === storeClusters[j]! + 1
      ) {
        j += 1;
      }
      // The run's clusters are contiguous on both sides: one read from where the request
      // enters the first of them to where it leaves the last.
      const head = clusterPiece(this.geometry, clusters[i]!, offset, view.length);
      const tail = clusterPiece(this.geometry, clusters[j]!, offset, view.length);
      const storeOffset = storeClusterOffset(this.layout, storeClusters[i]!) + head.offsetInCluster;
      const target = view.subarray(head.offsetInRequest, tail.offsetInRequest + tail.length);
      reads.push(this.store.read(target, storeOffset));
      i = j + 1;
    }
    return reads;
  }

  private copyClusterPiece(view: Uint8Array, offset: number, cluster: number, saved: Uint8Array): void {
    const piece = clusterPiece(this.geometry, cluster, offset, view.length);
    view.set(
      saved.subarray(piece.offsetInCluster, piece.offsetInCluster + piece.length),
      piece.offsetInRequest,
    );
  }

  private checkReadable(): void {
    if (this.currentState === 'active') return;
    const why =
      this.currentState === 'invalid' ? `snapshot invalid: ${this.reason}` : `snapshot ${this.currentState}`;
    throw new FssError('ENXIO', why, { syscall: 'read', path: this.name });
  }

  /** The `block` policy's store wrapper, logging when the store fills up and has space again. */
  private waitForSpaceOn(store: BackingStore): SpaceWaitingStore {
    const timeoutMs = this.onFullTimeoutMs;
    assert(Number.isSafeInteger(timeoutMs) && timeoutMs > 0, 'onFullTimeoutMs must be a positive ms count');
    const log = this.options.logger ?? console.warn;
    return new SpaceWaitingStore(store, {
      timeoutMs,
      retryMs: Math.min(SPACE_RETRY_MS, timeoutMs),
      shouldWait: () => this.currentState === 'active',
      onChange: (waiting) => {
        if (this.currentState !== 'active') return;
        log(
          waiting
            ? `${this.name}: backing store full: origin writes that need a copy wait for space (up to ${timeoutMs / 1000} s)`
            : `${this.name}: backing store has space again`,
        );
      },
    });
  }

  private allocate(bytes: number): Uint8Array {
    return (
      this.host.device.allocateBuffer?.(bytes) ?? this.store.allocateBuffer?.(bytes) ?? new Uint8Array(bytes)
    );
  }
}

/** A write-back batch of a persistent snapshot on its way to being committed. */
interface PendingCommit {
  /** The store cluster after the batch's last: the header's next cluster once committed. */
  readonly storeEnd: number;
  readonly setEntries: () => Promise<void>;
  dataWritten: boolean;
  /** Settled when the commit that covers the batch has been written, or has failed. */
  readonly done: Deferred;
}

function describe(error: unknown): string {
  return toFssError(error).message;
}

/** The snapshot's geometry, its slot count raised to fill the cache bytes (see "Cache size"). */
function cacheGeometry(
  deviceBytes: number,
  storeBlockSize: number,
  options: SnapshotOptions,
): SnapshotGeometry {
  const request = { deviceBytes, clusterSize: options.clusterSize ?? 0, storeBlockSize };
  const { clusterSize } = computeGeometry(request);
  const persistent = (options.durability ?? 'none') !== 'none';
  const cacheBytes =
    options.cacheBytes ?? (persistent ? PERSISTENT_CACHE_BYTES_DEFAULT : CACHE_BYTES_DEFAULT);
  assert(Number.isSafeInteger(cacheBytes) && cacheBytes >= 0, 'cacheBytes must be a byte count');
  const cacheSlotsMin = Math.max(options.cacheSlotsMin ?? 0, Math.floor(cacheBytes / clusterSize));
  const geometry = computeGeometry({ ...request, cacheSlotsMin });
  assert(geometry.clusterSize === clusterSize, 'the slot count does not change the cluster size');
  return geometry;
}

/**
 * Joins buffers that follow each other in memory (adjacent cache slots) into one view each,
 * so a batch of adjacent slots is one iovec, not one per cluster.
 */
function contiguousRuns(buffers: readonly Uint8Array[]): Uint8Array[] {
  const runs: Uint8Array[] = [];
  let run: Uint8Array | undefined;
  for (const buffer of buffers) {
    if (
      run !== undefined &&
      run.buffer === buffer.buffer &&
      run.byteOffset + run.byteLength === buffer.byteOffset
    ) {
      run = new Uint8Array(run.buffer, run.byteOffset, run.byteLength + buffer.byteLength);
      runs[runs.length - 1] = run;
    } else {
      run = buffer;
      runs.push(run);
    }
  }
  assert(
    runs.reduce((sum, each) => sum + each.length, 0) === buffers.reduce((sum, each) => sum + each.length, 0),
    'runs hold every byte',
  );
  return runs;
}
