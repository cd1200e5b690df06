/**
 * The cluster cache of fss: where an origin cluster's old contents wait between being read
 * from the origin (before the origin write that would destroy them proceeds) and being
 * written to the backing store in the background.
 *
 * Notes on the design
 *
 * A fixed table of slots, allocated once as one block of memory (the arena), each slot one
 * cluster long: memory is bounded by slotCount x slotBytes. Slot i is the arena's i-th
 * cluster, so slots next to each other are one contiguous buffer. A slot moves through:
 *
 *   FREE ──take──▶ BUSY ──loaded──▶ VALID ──picked for write-back──▶ WRITING ──stored──▶ FREE
 *                   │                                                  │
 *                   └──load failed──▶ FREE                              └──store failed──▶ (abandoned)
 *
 *   FREE     holds nothing.
 *   BUSY     the cluster's old data is being read from the origin into the slot.
 *   VALID    the slot holds old data that is not yet on the backing store.
 *   WRITING  VALID data being written out. It stays readable (`lookup`) until the store
 *            has it *and* the store's index says where, so a snapshot read always finds the
 *            data in one place or the other.
 *
 * Rules that make "no cluster is copied twice" hold:
 * - `preserveRange` registers every cluster it needs (a claim) synchronously, before any
 *   await, so a second writer of the same cluster joins the first one's claim instead of
 *   loading again, also while both wait for a FREE slot.
 * - The copied bit (owned by the caller, passed in as `copied`) is set in the same
 *   synchronous step that makes the slot VALID. A writer checks the bit first; a reader that
 *   sees the bit finds the data through `lookup` or the store.
 *
 * Loads by runs: claims wait in FIFO order; whenever slots are FREE, the oldest waiting claim
 * takes the next FREE slot (next-fit from where the last load stopped, so the arena is used
 * like a ring), and the claims queued right behind it that continue its run of clusters take
 * the slots right behind that one, as far as they are FREE, up to `loadClustersMax`. One
 * `load` reads the whole run into the run's contiguous slots: a 1 MiB write over uncopied
 * 64 KiB clusters costs one origin read, not sixteen. If a run's load fails, each of its
 * clusters is loaded again alone, so every claim gets the outcome of its own cluster.
 *
 * Back-pressure: when no slot is FREE, claims wait until write-back frees some; the origin
 * write that needs them waits with them, as fss's writers sleep on "cowwait".
 *
 * Write-back: up to `writeBacksInFlightMax` batches in flight. A batch takes every VALID slot
 * (up to `maxBatch`, round-robin from where the last batch stopped, so no slot starves),
 * sorted by origin cluster: the caller appends it to the store in that order, so clusters
 * written in sequence end up in sequence on the store and a snapshot read of them is one
 * store read. The first batch starts as soon as a slot is VALID; another starts while one is
 * in flight only once `overlapBatchMin` slots are VALID (a batch of one beside a batch in
 * flight would only cost a store request more). While batches are written, newly VALID slots
 * accumulate into the next one, so batches grow under load.
 *
 * Durable mode (`releaseAfterStore`, for persistent snapshots): a writer is released only when
 * its clusters are on the store, not when they are in a slot. The claim then lives on from
 * load to the end of the write-back that stores it (its copied bit is set at VALID, as
 * always, so snapshot reads find the data), and a later writer of a cluster that is copied
 * but not yet stored joins that claim: no origin write lands before the old data it
 * displaces is on the store, so a process that dies at any moment leaves a store that holds
 * every cluster an issued origin write overwrote (group commit: one write-back batch stores
 * many clusters in one request).
 *
 * Failure: a failed load frees the slot and rejects every writer waiting on that cluster
 * (the origin write fails with the origin's read error, as fss does). A failed write-back
 * abandons the cache: every waiter is released at once (their origin writes proceed: a store
 * failure must never fail or block an origin write), nothing more is loaded or stored, and
 * `onWriteBackError` is called once so the owner can invalidate the snapshot.
 */

import { assert, type CopiedBitmap, deferred } from '@fss/core';

export type SlotState = 'free' | 'busy' | 'valid' | 'writing';

/** A cluster handed to write-back: its number and the slot memory holding its old data. */
export interface DirtyCluster {
  readonly cluster: number;
  readonly data: Uint8Array;
}

export interface ClusterCacheOptions {
  /** Number of slots (fss: at least 32, 8 or 4 by cluster size). */
  slotCount: number;
  /** Bytes per slot: the cluster size. */
  slotBytes: number;
  /** The snapshot's copied bitmap (@fss/core); the cache sets bits as slots become VALID. */
  copied: CopiedBitmap;
  /**
   * Reads the current contents of the clusters from `first` on, one after another, into
   * `target` (a whole number of slots long: target.length / slotBytes clusters).
   */
  load(first: number, target: Uint8Array): Promise<void>;
  /**
   * Writes a batch out (sorted by cluster); resolves once every cluster of it can be found on
   * the store. The slots' memory must not be kept after it resolves. Several may run at once.
   */
  writeBack(batch: readonly DirtyCluster[]): Promise<void>;
  /** Called once, with the error, when a write-back fails. */
  onWriteBackError(error: unknown): void;
  /** Allocates the slot memory, once (e.g. aligned for O_DIRECT); default `new Uint8Array`. */
  allocate?(bytes: number): Uint8Array;
  /** Most clusters per write-back batch (default: slotCount). */
  maxBatch?: number;
  /** Most clusters one load reads (default: slotCount). */
  loadClustersMax?: number;
  /** Write-back batches in flight at once (default 2). */
  writeBacksInFlightMax?: number;
  /** VALID slots needed to start a batch beside one in flight (default: a quarter of the slots). */
  overlapBatchMin?: number;
  /** Release writers only once their clusters are stored (see "Durable mode"; default false). */
  releaseAfterStore?: boolean;
}

export interface CacheStats {
  free: number;
  busy: number;
  valid: number;
  writing: number;
  /** Clusters waiting for a FREE slot. */
  waiting: number;
  /** Clusters loaded since creation. */
  loaded: number;
  /** Origin reads (loads of runs) since creation. */
  loads: number;
  /** Clusters written back since creation. */
  stored: number;
  /** Write-back batches since creation. */
  batches: number;
}

interface Slot {
  readonly index: number;
  readonly data: Uint8Array;
  state: SlotState;
  cluster: number;
  /** Durable mode: the claim its writers wait on until the slot is stored. */
  claim: Claim | undefined;
}

/** One cluster on its way into a slot; everyone who needs it awaits `promise`. */
interface Claim {
  readonly cluster: number;
  readonly promise: Promise<void>;
  resolve(): void;
  reject(error: unknown): void;
}

export class ClusterCache {
  private readonly options: ClusterCacheOptions;
  private readonly slots: Slot[];
  /** Clusters being loaded or waiting for a slot. */
  private readonly claims = new Map<number, Claim>();
  /** Claims waiting for a FREE slot, oldest first. */
  private readonly waiting = new ClaimQueue();
  /** VALID and WRITING slots by cluster: the data `lookup` serves. */
  private readonly resident = new Map<number, Slot>();
  private readonly maxBatch: number;
  private readonly loadClustersMax: number;
  private readonly writeBacksInFlightMax: number;
  private readonly overlapBatchMin: number;
  private freeCount: number;
  private validCount = 0;
  /** Where the next load looks for a FREE slot first (next-fit). */
  private allocationCursor = 0;
  private cleaningCursor = 0;
  /** Write-backs in flight, each resolving once it has settled (stored or failed). */
  private readonly writeBacks = new Set<Promise<void>>();
  private idleWaiters: Array<() => void> = [];
  private abandoned = false;
  private counters = { loaded: 0, loads: 0, stored: 0, batches: 0 };

  constructor(options: ClusterCacheOptions) {
    assert(
      Number.isInteger(options.slotCount) && options.slotCount > 0,
      'slotCount must be a positive integer',
    );
    assert(
      Number.isInteger(options.slotBytes) && options.slotBytes > 0,
      'slotBytes must be a positive integer',
    );
    this.options = options;
    this.maxBatch = options.maxBatch ?? options.slotCount;
    this.loadClustersMax = Math.min(options.loadClustersMax ?? options.slotCount, options.slotCount);
    this.writeBacksInFlightMax = options.writeBacksInFlightMax ?? 2;
    this.overlapBatchMin = options.overlapBatchMin ?? Math.max(1, Math.floor(options.slotCount / 4));
    assert(this.maxBatch > 0, 'maxBatch must be positive');
    assert(
      Number.isInteger(this.loadClustersMax) && this.loadClustersMax > 0,
      'loadClustersMax must be positive',
    );
    assert(this.writeBacksInFlightMax >= 1, 'at least one write-back in flight');
    const arenaBytes = options.slotCount * options.slotBytes;
    const arena = (options.allocate ?? ((bytes: number) => new Uint8Array(bytes)))(arenaBytes);
    assert(arena.length === arenaBytes, 'allocate returned the wrong length');
    this.slots = Array.from({ length: options.slotCount }, (_, index) => ({
      index,
      data: arena.subarray(index * options.slotBytes, (index + 1) * options.slotBytes),
      state: 'free' as SlotState,
      cluster: -1,
      claim: undefined,
    }));
    this.freeCount = options.slotCount;
  }

  /** True once a write-back failed or `abandon` was called. */
  get isAbandoned(): boolean {
    return this.abandoned;
  }

  /**
   * Makes sure the old contents of every cluster in [first, end) are saved (in a slot or
   * already on the store). Returns undefined when nothing needs doing, so the hot path
   * allocates no promise.
   */
  preserveRange(first: number, end: number): Promise<unknown> | undefined {
    assert(Number.isInteger(first) && first >= 0, 'first must be a cluster number');
    assert(Number.isInteger(end) && end > first, 'a range has clusters');
    if (this.abandoned) return undefined;
    const { copied } = this.options;
    let wait: Promise<void> | undefined;
    let waits: Promise<void>[] | undefined;
    // Durable mode: copied clusters whose claim lives on (not yet stored) are waited for too.
    const unstored = this.options.releaseAfterStore === true && this.claims.size > 0;
    const next = (from: number): number => {
      if (!unstored) return copied.nextClear(from, end);
      for (let cluster = from; cluster < end; cluster++) {
        if (!copied.has(cluster) || this.claims.has(cluster)) return cluster;
      }
      return -1;
    };
    for (let cluster = next(first); cluster !== -1; ) {
      let claim = this.claims.get(cluster);
      if (claim === undefined) {
        claim = newClaim(cluster);
        this.claims.set(cluster, claim);
        this.waiting.push(claim);
      }
      if (wait === undefined) wait = claim.promise;
      else if (waits === undefined) waits = [wait, claim.promise];
      else waits.push(claim.promise);
      cluster = cluster + 1 < end ? next(cluster + 1) : -1;
    }
    if (wait === undefined) return undefined;
    this.dispatch();
    return waits === undefined ? wait : Promise.all(waits);
  }

  /** Durable mode: true while some copied cluster is not yet stored (its writers wait). */
  get hasUnstored(): boolean {
    return this.options.releaseAfterStore === true && this.claims.size > 0;
  }

  /** `preserveRange(cluster, cluster + 1)`. */
  preserve(cluster: number): Promise<unknown> | undefined {
    return this.preserveRange(cluster, cluster + 1);
  }

  /**
   * The saved data of a cluster still in the cache (VALID or WRITING), or undefined. The
   * returned memory is the slot's: copy out of it before the next await.
   */
  lookup(cluster: number): Uint8Array | undefined {
    return this.resident.get(cluster)?.data;
  }

  /** Resolves when no slot is VALID or WRITING and nothing is being loaded. */
  async drain(): Promise<void> {
    while (!this.abandoned && !this.isIdle()) {
      await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    }
    await Promise.all([...this.writeBacks]);
  }

  /**
   * Stops the cache: waiting writers are released, loads in flight are ignored when they
   * finish, nothing more is stored. Resolves once no write-back is in flight, so the caller
   * may close the store afterwards.
   */
  async abandon(): Promise<void> {
    this.abandonNow();
    await Promise.all([...this.writeBacks]);
  }

  stats(): CacheStats {
    const count = (state: SlotState) => this.slots.filter((slot) => slot.state === state).length;
    return {
      free: count('free'),
      busy: count('busy'),
      valid: count('valid'),
      writing: count('writing'),
      waiting: this.waiting.length,
      ...this.counters,
    };
  }

  // --- Loads ---

  /** Starts loads for waiting claims while slots are FREE: one load per run (see the notes). */
  private dispatch(): void {
    while (!this.abandoned && this.waiting.length > 0 && this.freeCount > 0) {
      const first = this.nextFreeSlot();
      const run: Claim[] = [this.waiting.shift()!];
      while (
        run.length < this.loadClustersMax &&
        first + run.length < this.slots.length &&
        this.slots[first + run.length]!.state === 'free' &&
        this.waiting.peek()?.cluster === run[0]!.cluster + run.length
      ) {
        run.push(this.waiting.shift()!);
      }
      this.startLoad(first, run);
    }
  }

  /** The first FREE slot at or after the allocation cursor (wrapping). Precondition: one is FREE. */
  private nextFreeSlot(): number {
    const slotCount = this.slots.length;
    for (let step = 0; step < slotCount; step++) {
      const index = (this.allocationCursor + step) % slotCount;
      if (this.slots[index]!.state === 'free') return index;
    }
    assert(false, 'nextFreeSlot called with no FREE slot');
  }

  private startLoad(firstSlot: number, run: readonly Claim[]): void {
    for (const [offset, claim] of run.entries()) {
      const slot = this.slots[firstSlot + offset]!;
      assert(slot.state === 'free', `slot ${slot.index} is ${slot.state}, not free`);
      slot.state = 'busy';
      slot.cluster = claim.cluster;
    }
    this.freeCount -= run.length;
    this.allocationCursor = (firstSlot + run.length) % this.slots.length;
    this.counters.loads += 1;
    // Neighbouring slots are neighbouring memory in the arena: the run's slots are one buffer.
    const first = this.slots[firstSlot]!.data;
    const runTarget = new Uint8Array(first.buffer, first.byteOffset, run.length * this.options.slotBytes);
    this.options.load(run[0]!.cluster, runTarget).then(
      () => {
        for (const [offset, claim] of run.entries()) this.onLoaded(this.slots[firstSlot + offset]!, claim);
        this.afterChange();
      },
      (error: unknown) => {
        if (run.length === 1) {
          this.onLoadFailed(this.slots[firstSlot]!, run[0]!, error);
          this.afterChange();
        } else {
          // Each cluster again on its own, so each claim gets its own cluster's outcome.
          for (const [offset, claim] of run.entries()) this.loadAlone(this.slots[firstSlot + offset]!, claim);
        }
      },
    );
  }

  /** Loads one cluster of a failed run into its slot (still BUSY). */
  private loadAlone(slot: Slot, claim: Claim): void {
    this.counters.loads += 1;
    this.options.load(claim.cluster, slot.data).then(
      () => {
        this.onLoaded(slot, claim);
        this.afterChange();
      },
      (error: unknown) => {
        this.onLoadFailed(slot, claim, error);
        this.afterChange();
      },
    );
  }

  private onLoaded(slot: Slot, claim: Claim): void {
    assert(slot.state === 'busy' && slot.cluster === claim.cluster, 'loaded slot changed under its load');
    this.counters.loaded += 1;
    if (this.abandoned) {
      this.claims.delete(claim.cluster);
      this.freeSlot(slot);
      claim.resolve();
      return;
    }
    // These steps are one synchronous transition: see "Rules" above.
    slot.state = 'valid';
    this.validCount += 1;
    this.resident.set(claim.cluster, slot);
    this.options.copied.add(claim.cluster);
    if (this.options.releaseAfterStore === true) {
      slot.claim = claim; // released in onStored (see "Durable mode")
    } else {
      this.claims.delete(claim.cluster);
      claim.resolve();
    }
  }

  private onLoadFailed(slot: Slot, claim: Claim, error: unknown): void {
    assert(slot.state === 'busy' && slot.cluster === claim.cluster, 'failed slot changed under its load');
    this.claims.delete(claim.cluster);
    this.freeSlot(slot);
    if (this.abandoned) claim.resolve();
    else claim.reject(error);
  }

  private freeSlot(slot: Slot): void {
    slot.state = 'free';
    slot.cluster = -1;
    this.freeCount += 1;
    assert(this.freeCount <= this.slots.length, 'no more FREE slots than slots');
  }

  /** After slots changed state: new loads, new write-backs, idle waiters. */
  private afterChange(): void {
    this.dispatch();
    this.startWriteBacks();
    this.notifyIfIdle();
  }

  // --- Write-back ---

  private startWriteBacks(): void {
    while (!this.abandoned && this.writeBacks.size < this.writeBacksInFlightMax && this.validCount > 0) {
      if (this.writeBacks.size > 0 && this.validCount < this.overlapBatchMin) return;
      const batch = this.pickBatch();
      assert(batch.length > 0, 'VALID slots make a batch');
      const dirty = batch.map((slot) => ({ cluster: slot.cluster, data: slot.data }));
      const settled: Promise<void> = this.options.writeBack(dirty).then(
        () => this.onStored(batch, settled),
        (error: unknown) => this.onStoreFailed(error, settled),
      );
      this.writeBacks.add(settled);
    }
  }

  /** Every VALID slot up to maxBatch, round-robin from the cleaning cursor, by cluster. */
  private pickBatch(): Slot[] {
    const batch: Slot[] = [];
    const slotCount = this.slots.length;
    let last = -1;
    for (let step = 0; step < slotCount && batch.length < this.maxBatch; step++) {
      const slot = this.slots[(this.cleaningCursor + step) % slotCount]!;
      if (slot.state === 'valid') {
        slot.state = 'writing';
        batch.push(slot);
        last = slot.index;
      }
    }
    if (last >= 0) this.cleaningCursor = (last + 1) % slotCount;
    this.validCount -= batch.length;
    assert(this.validCount >= 0, 'VALID count stays non-negative');
    return batch.sort((a, b) => a.cluster - b.cluster);
  }

  private onStored(batch: Slot[], settled: Promise<void>): void {
    this.writeBacks.delete(settled);
    this.counters.batches += 1;
    this.counters.stored += batch.length;
    for (const slot of batch) {
      assert(slot.state === 'writing', `stored slot ${slot.index} is ${slot.state}`);
      this.resident.delete(slot.cluster);
      const { claim } = slot;
      if (claim !== undefined) {
        slot.claim = undefined;
        this.claims.delete(claim.cluster);
        claim.resolve();
      }
      this.freeSlot(slot);
    }
    this.afterChange();
  }

  private onStoreFailed(error: unknown, settled: Promise<void>): void {
    this.writeBacks.delete(settled);
    if (this.abandoned) return;
    this.abandonNow();
    this.options.onWriteBackError(error);
  }

  private abandonNow(): void {
    if (this.abandoned) return;
    this.abandoned = true;
    for (let claim = this.waiting.shift(); claim !== undefined; claim = this.waiting.shift()) {
      this.claims.delete(claim.cluster);
      claim.resolve();
    }
    for (const claim of this.claims.values()) claim.resolve(); // loads in flight: ignored when done
    // Durable mode: claims of unstored slots are released with the rest; loads still in flight
    // keep theirs in the map until they finish (onLoaded frees their slot).
    for (const slot of this.slots) {
      if (slot.claim !== undefined) {
        this.claims.delete(slot.claim.cluster);
        slot.claim = undefined;
      }
    }
    this.resident.clear();
    this.notifyIfIdle();
  }

  private isIdle(): boolean {
    return this.claims.size === 0 && this.resident.size === 0 && this.writeBacks.size === 0;
  }

  private notifyIfIdle(): void {
    if (!this.abandoned && !this.isIdle()) return;
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }
}

/** A FIFO of claims: shift and peek in O(1) (a long write may queue thousands of clusters). */
class ClaimQueue {
  private items: Claim[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(claim: Claim): void {
    this.items.push(claim);
  }

  peek(): Claim | undefined {
    return this.items[this.head];
  }

  shift(): Claim | undefined {
    if (this.head >= this.items.length) return undefined;
    const claim = this.items[this.head++]!;
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return claim;
  }
}

function newClaim(cluster: number): Claim {
  const { promise, resolve, reject } = deferred();
  // A claim nobody awaits (its writers were released by abandon) must not crash the process.
  promise.catch(() => undefined);
  return { cluster, promise, resolve, reject };
}
