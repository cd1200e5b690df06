/**
 * The cluster cache of fss: where an origin cluster's old contents wait between being read
 * from the origin (before the origin write that would destroy them proceeds) and being
 * written to the backing store in the background.
 *
 * Notes on the design
 *
 * A fixed table of slots, allocated once, each one cluster long (memory is bounded by
 * slotCount x slotBytes). A slot moves through:
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
 * - `preserve(cluster)` registers the cluster synchronously, before its first await, so a
 *   second writer of the same cluster joins the first one's promise instead of loading again,
 *   also while both wait for a FREE slot.
 * - The copied bit (owned by the caller, passed in as `copied`) is set in the same
 *   synchronous step that makes the slot VALID. A writer checks the bit first; a reader that
 *   sees the bit finds the data through `lookup` or the store.
 *
 * Back-pressure: when no slot is FREE, `preserve` waits in FIFO order until write-back frees
 * one; the origin write it guards waits with it, as fss's writers sleep on "cowwait".
 *
 * Write-back: one batch in flight at a time, started whenever a slot becomes VALID. A batch
 * takes every VALID slot (up to `maxBatch`), round-robin from where the last batch stopped,
 * so no slot starves; the caller appends the batch to the store contiguously. While one batch
 * is being written, newly VALID slots accumulate into the next, so batches grow under load.
 *
 * Failure: a failed load frees the slot and rejects every writer waiting on that cluster
 * (the origin write fails with the origin's read error, as fss does). A failed write-back
 * abandons the cache: every waiter is released at once (their origin writes proceed: a store
 * failure must never fail or block an origin write), nothing more is loaded or stored, and
 * `onWriteBackError` is called once so the owner can invalidate the snapshot.
 */

import { assert, type CopiedBitmap } from '@fss/core';

export type SlotState = 'free' | 'busy' | 'valid' | 'writing';

/** A cluster handed to write-back: its number and the slot memory holding its old data. */
export interface DirtyCluster {
  readonly cluster: number;
  readonly data: Uint8Array;
}

export interface ClusterCacheOptions {
  /** Number of slots (fss: 32, 8 or 4 by cluster size). */
  slotCount: number;
  /** Bytes per slot: the cluster size. */
  slotBytes: number;
  /** The snapshot's copied bitmap (@fss/core); the cache sets bits as slots become VALID. */
  copied: CopiedBitmap;
  /** Reads a cluster's current contents into `target` (slotBytes long). */
  load(cluster: number, target: Uint8Array): Promise<void>;
  /**
   * Writes a batch out; resolves once every cluster of it can be found on the store.
   * The slots' memory must not be kept after it resolves.
   */
  writeBack(batch: readonly DirtyCluster[]): Promise<void>;
  /** Called once, with the error, when a write-back fails. */
  onWriteBackError(error: unknown): void;
  /** Allocates slot memory (e.g. aligned for O_DIRECT); default `new Uint8Array`. */
  allocate?(bytes: number): Uint8Array;
  /** Most clusters per write-back batch (default: slotCount). */
  maxBatch?: number;
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
  private readonly freeSlots: Slot[];
  /** Clusters being loaded or waiting for a slot. */
  private readonly claims = new Map<number, Claim>();
  /** Claims waiting for a FREE slot, oldest first. */
  private readonly slotWaiters: Claim[] = [];
  /** VALID and WRITING slots by cluster: the data `lookup` serves. */
  private readonly resident = new Map<number, Slot>();
  private readonly maxBatch: number;
  private cleaningCursor = 0;
  private writeBackInFlight: Promise<void> | undefined;
  private idleWaiters: Array<() => void> = [];
  private abandoned = false;
  private counters = { loaded: 0, stored: 0, batches: 0 };

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
    assert(this.maxBatch > 0, 'maxBatch must be positive');
    const allocate = options.allocate ?? ((bytes: number) => new Uint8Array(bytes));
    this.slots = Array.from({ length: options.slotCount }, (_, index) => {
      const data = allocate(options.slotBytes);
      assert(data.length === options.slotBytes, 'allocate returned the wrong length');
      return { index, data, state: 'free' as SlotState, cluster: -1 };
    });
    this.freeSlots = [...this.slots].reverse();
  }

  /** True once a write-back failed or `abandon` was called. */
  get isAbandoned(): boolean {
    return this.abandoned;
  }

  /**
   * Makes sure `cluster`'s old contents are saved (in a slot or already on the store).
   * Returns undefined when nothing needs doing, so the hot path allocates no promise.
   */
  preserve(cluster: number): Promise<void> | undefined {
    if (this.abandoned || this.options.copied.has(cluster)) return undefined;
    const existing = this.claims.get(cluster);
    if (existing !== undefined) return existing.promise;
    const claim = newClaim(cluster);
    this.claims.set(cluster, claim);
    const slot = this.freeSlots.pop();
    if (slot === undefined) this.slotWaiters.push(claim);
    else this.startLoad(slot, claim);
    return claim.promise;
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
    if (this.writeBackInFlight !== undefined) await this.writeBackInFlight.catch(() => undefined);
  }

  /**
   * Stops the cache: waiting writers are released, loads in flight are ignored when they
   * finish, nothing more is stored. Resolves once no write-back is in flight, so the caller
   * may close the store afterwards.
   */
  async abandon(): Promise<void> {
    this.abandonNow();
    if (this.writeBackInFlight !== undefined) await this.writeBackInFlight.catch(() => undefined);
  }

  stats(): CacheStats {
    const count = (state: SlotState) => this.slots.filter((slot) => slot.state === state).length;
    return {
      free: count('free'),
      busy: count('busy'),
      valid: count('valid'),
      writing: count('writing'),
      waiting: this.slotWaiters.length,
      ...this.counters,
    };
  }

  private startLoad(slot: Slot, claim: Claim): void {
    assert(slot.state === 'free', `slot ${slot.index} is ${slot.state}, not free`);
    slot.state = 'busy';
    slot.cluster = claim.cluster;
    this.options.load(claim.cluster, slot.data).then(
      () => this.onLoaded(slot, claim),
      (error: unknown) => this.onLoadFailed(slot, claim, error),
    );
  }

  private onLoaded(slot: Slot, claim: Claim): void {
    assert(slot.state === 'busy' && slot.cluster === claim.cluster, 'loaded slot changed under its load');
    this.claims.delete(claim.cluster);
    this.counters.loaded += 1;
    if (this.abandoned) {
      this.releaseSlot(slot);
      claim.resolve();
      return;
    }
    // These three steps are one synchronous transition: see "Rules" above.
    slot.state = 'valid';
    this.resident.set(claim.cluster, slot);
    this.options.copied.add(claim.cluster);
    claim.resolve();
    this.startWriteBack();
  }

  private onLoadFailed(slot: Slot, claim: Claim, error: unknown): void {
    this.claims.delete(claim.cluster);
    this.releaseSlot(slot);
    if (this.abandoned) claim.resolve();
    else claim.reject(error);
  }

  /** Returns a slot to FREE, or hands it straight to the oldest waiting claim. */
  private releaseSlot(slot: Slot): void {
    slot.state = 'free';
    slot.cluster = -1;
    const next = this.abandoned ? undefined : this.slotWaiters.shift();
    if (next === undefined) this.freeSlots.push(slot);
    else this.startLoad(slot, next);
    this.notifyIfIdle();
  }

  private startWriteBack(): void {
    if (this.writeBackInFlight !== undefined || this.abandoned) return;
    const batch = this.pickBatch();
    if (batch.length === 0) return;
    const dirty = batch.map((slot) => ({ cluster: slot.cluster, data: slot.data }));
    this.writeBackInFlight = this.options.writeBack(dirty).then(
      () => this.onStored(batch),
      (error: unknown) => this.onStoreFailed(error),
    );
  }

  /** Every VALID slot up to maxBatch, round-robin from the cleaning cursor. */
  private pickBatch(): Slot[] {
    const batch: Slot[] = [];
    const slotCount = this.slots.length;
    for (let step = 0; step < slotCount && batch.length < this.maxBatch; step++) {
      const slot = this.slots[(this.cleaningCursor + step) % slotCount]!;
      if (slot.state === 'valid') {
        slot.state = 'writing';
        batch.push(slot);
      }
    }
    if (batch.length > 0) this.cleaningCursor = (batch[batch.length - 1]!.index + 1) % slotCount;
    return batch;
  }

  private onStored(batch: Slot[]): void {
    this.writeBackInFlight = undefined;
    this.counters.batches += 1;
    this.counters.stored += batch.length;
    for (const slot of batch) {
      assert(slot.state === 'writing' || this.abandoned, `stored slot ${slot.index} is ${slot.state}`);
      this.resident.delete(slot.cluster);
      this.releaseSlot(slot);
    }
    this.startWriteBack();
    this.notifyIfIdle();
  }

  private onStoreFailed(error: unknown): void {
    this.writeBackInFlight = undefined;
    if (this.abandoned) return;
    this.abandonNow();
    this.options.onWriteBackError(error);
  }

  private abandonNow(): void {
    if (this.abandoned) return;
    this.abandoned = true;
    for (const claim of this.slotWaiters.splice(0)) {
      this.claims.delete(claim.cluster);
      claim.resolve();
    }
    for (const claim of this.claims.values()) claim.resolve(); // loads in flight: ignored when done
    this.resident.clear();
    this.notifyIfIdle();
  }

  private isIdle(): boolean {
    return this.claims.size === 0 && this.resident.size === 0 && this.writeBackInFlight === undefined;
  }

  private notifyIfIdle(): void {
    if (!this.abandoned && !this.isIdle()) return;
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }
}

function newClaim(cluster: number): Claim {
  let resolve!: () => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // A claim nobody awaits (its writers were released by abandon) must not crash the process.
  promise.catch(() => undefined);
  return { cluster, promise, resolve, reject };
}
