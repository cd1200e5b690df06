/**
 * The origin: the device whose point-in-time contents snapshots preserve, and the only path
 * writes take to it (SPEC §1, "the interception rule").
 *
 * Every write (`write`, and `writeZeroes` and `discard` when the device has them) goes through
 * the copy-on-write rule (copy-on-write.ts) before it reaches the device; a store failure
 * invalidates that snapshot and never fails or blocks the write. Reads go straight to the
 * device.
 *
 * Capabilities are the device's: an origin has `writeZeroes` and `discard` exactly when its
 * device has them (an export then advertises WRITE_ZEROES and TRIM, nothing silently does
 * nothing), `allocateBuffer` hands out the device's memory, and `allocation` (where the
 * device's holes are) is the device's own answer, present exactly when the device has it.
 *
 * Reserved writes (`reserveWrites`, for a rollback): one writer at a time may keep every other
 * writer out; their writes fail EBUSY, naming why, until it releases the origin. Its own
 * writes take the same copy-on-write path as any other.
 *
 * Taking a snapshot suspends writes for a moment (the write gate): writes in flight finish,
 * the snapshot becomes active, writes resume. Its backing store is prepared (header written)
 * before that, so the suspension is short.
 */
import {
  type AllocationRun,
  assert,
  type BackingStore,
  type BlockDevice,
  checkWriteRange,
  FssError,
  readStoreHeader,
  type WorkerIo,
} from '@fss/core';
import { CopyOnWrite } from './copy-on-write';
import { type Logger, Snapshot, type SnapshotHost, type SnapshotOptions } from './snapshot';

export interface OriginOptions {
  /** What to call the origin in messages and FSSIOCGET (default `origin`). */
  name?: string;
  /** Where `snapshot invalid` lines go (default console.warn); snapshots inherit it. */
  logger?: Logger;
  /** The clock, in ms since the epoch. */
  now?: () => number;
}

/** The one writer of a reserved origin (Origin.reserveWrites). */
export interface OriginWriter {
  /** An origin write, through copy-on-write, that the reservation lets through. */
  write(source: Uint8Array, offset: number): Promise<void>;
  /** Lets every writer in again. */
  release(): void;
}

export class Origin implements BlockDevice {
  readonly device: BlockDevice;
  readonly name: string;
  /** Writes zeroes over a range, copy-on-write; present when the device has writeZeroes. */
  readonly writeZeroes?: (offset: number, length: number) => Promise<void>;
  /** Discards a range, copy-on-write first; present when the device has discard. */
  readonly discard?: (offset: number, length: number) => Promise<void>;
  /** The device's allocation (its holes); present when the device has allocation. */
  readonly allocation?: (offset: number, length: number, runsMax: number) => Promise<AllocationRun[]>;
  private readonly options: OriginOptions;
  private readonly copyOnWrite: CopyOnWrite;
  /** Every snapshot not yet closed. */
  private readonly open = new Set<Snapshot>();
  private readonly host: SnapshotHost;
  private deviceClosed = false;
  private written = 0;
  /** Set while one writer keeps the others out: why (in their EBUSY). */
  private reservation: { readonly why: string } | undefined;

  constructor(device: BlockDevice, options: OriginOptions = {}) {
    this.device = device;
    this.options = options;
    this.name = options.name ?? 'origin';
    this.copyOnWrite = new CopyOnWrite(this.name, !device.readOnly);
    const { copyOnWrite, open } = this;
    this.host = {
      device,
      name: this.name,
      detach(snapshot) {
        copyOnWrite.detach(snapshot);
        if (snapshot.state === 'closed') open.delete(snapshot);
      },
    };
    const { writeZeroes, discard, allocation } = device;
    if (allocation !== undefined) {
      this.allocation = async (offset, length, runsMax) => {
        this.checkOpen('lseek');
        return allocation.call(device, offset, length, runsMax);
      };
    }
    if (writeZeroes !== undefined) {
      this.writeZeroes = (offset, length) =>
        this.guarded(offset, length, 'write', () => writeZeroes.call(device, offset, length));
    }
    if (discard !== undefined) {
      this.discard = (offset, length) =>
        this.guarded(offset, length, 'discard', () => discard.call(device, offset, length));
    }
  }

  get size(): number {
    return this.device.size;
  }

  get logicalSectorSize(): number {
    return this.device.logicalSectorSize;
  }

  get readOnly(): boolean {
    return this.device.readOnly;
  }

  /**
   * Bytes that writes and write-zeroes (not discards) landed on the origin since it was
   * opened: what fssd's moving average of the origin's write rate is computed from.
   */
  get bytesWritten(): number {
    return this.written;
  }

  /** Snapshots of this origin that are not closed (active or invalid). */
  get snapshots(): readonly Snapshot[] {
    return [...this.open];
  }

  allocateBuffer(length: number): Uint8Array {
    return this.device.allocateBuffer?.(length) ?? new Uint8Array(length);
  }

  /**
   * The device's descriptor for other threads, under the copy-on-write rule's gate (see
   * "Worker writes" in copy-on-write.ts): reads while the origin is open, writes only while
   * no snapshot is active. Undefined when the device offers none or the origin is closed.
   */
  workerIo(): WorkerIo | undefined {
    if (this.copyOnWrite.isClosed) return undefined;
    const base = this.device.workerIo?.();
    if (base === undefined) return undefined;
    const { fd, offsetAlignment, memoryAlignment, size } = base;
    return this.copyOnWrite.workerGate.workerIo({ fd, offsetAlignment, memoryAlignment, size });
  }

  async read(target: Uint8Array, offset: number): Promise<number> {
    this.checkOpen('read');
    return this.device.read(target, offset);
  }

  write(source: Uint8Array, offset: number): Promise<void> {
    return this.guarded(offset, source.length, 'write', () => this.device.write(source, offset));
  }

  async flush(): Promise<void> {
    this.checkOpen('fsync');
    return this.device.flush();
  }

  /**
   * Keeps every other writer out: from now on their writes (write, writeZeroes, discard) fail
   * EBUSY with `why`, and only the returned writer's pass; writes already in flight land
   * before this resolves. EBUSY when the origin is reserved already.
   */
  async reserveWrites(why: string): Promise<OriginWriter> {
    this.checkOpen('reserve');
    if (this.reservation !== undefined) {
      throw new FssError('EBUSY', `origin is reserved: ${this.reservation.why}`, {
        syscall: 'reserve',
        path: this.name,
      });
    }
    const reservation = { why };
    this.reservation = reservation;
    await this.copyOnWrite.drain();
    return {
      write: (source, offset) =>
        this.guarded(offset, source.length, 'write', () => this.device.write(source, offset), reservation),
      release: () => {
        if (this.reservation === reservation) this.reservation = undefined;
      },
    };
  }

  /**
   * Takes a snapshot onto `store`. The store is the snapshot's from now on: it is closed
   * with the snapshot, or here if the snapshot cannot be created.
   */
  async createSnapshot(store: BackingStore, options: SnapshotOptions = {}): Promise<Snapshot> {
    this.checkOpen('snapshot');
    let snapshot: Snapshot;
    try {
      snapshot = new Snapshot(this.host, store, { logger: this.options.logger, ...options });
      await snapshot.prepareStore();
      await snapshot.writeHeader();
    } catch (error) {
      await store.close().catch(() => undefined);
      throw error;
    }
    const now = options.now ?? this.options.now ?? Date.now;
    let joined: boolean;
    try {
      joined = await this.copyOnWrite.takeSnapshotMoment(snapshot, () => {
        snapshot.activate(now());
        options.onActivate?.(snapshot);
      });
    } catch (error) {
      await snapshot.close().catch(() => undefined);
      throw error;
    }
    if (!joined) {
      await store.close().catch(() => undefined);
      this.checkOpen('snapshot'); // the origin closed while we waited for the gate
    }
    assert(joined, 'a snapshot of an open origin joins it');
    this.open.add(snapshot);
    await this.commitHeader(snapshot);
    return snapshot;
  }

  /**
   * Reopens a persistent snapshot (durability process or power) from its store, as it was
   * when its daemon stopped: its copied clusters, its time, its validity. The caller vouches
   * that the origin was not written since (fssd checks its records first): the snapshot is
   * exact only then. The store must match this origin's size; a damaged store or one not
   * made persistent is refused (EINVAL) and closed. A store whose header says invalid comes
   * back invalid with its reason; one never activated (its daemon died while configuring)
   * comes back invalid too.
   */
  async resumeSnapshot(store: BackingStore, options: SnapshotOptions = {}): Promise<Snapshot> {
    this.checkOpen('snapshot');
    let snapshot: Snapshot;
    try {
      const header = await readStoreHeader(store, (bytes) => this.allocateBuffer(bytes));
      const mismatch = (why: string) =>
        new FssError('EINVAL', `backing store is not a snapshot of this origin: ${why}`, {
          path: store.path,
        });
      if (header.deviceBytes !== this.size) {
        throw mismatch(`it is of ${header.deviceBytes} bytes, the origin has ${this.size}`);
      }
      snapshot = new Snapshot(this.host, store, {
        logger: this.options.logger,
        durability: 'process',
        ...options,
        clusterSize: 2 ** header.clusterShift,
        tableZeroed: true,
      });
      if (snapshot.geometry.clusterShift !== header.clusterShift) {
        throw mismatch(`cluster shift ${header.clusterShift}, expected ${snapshot.geometry.clusterShift}`);
      }
      if (
        snapshot.geometry.clusterCount !== header.clusterCount ||
        snapshot.layout.tableClusters !== header.tableClusters
      ) {
        throw mismatch('its cluster count or table size differ from the origin geometry');
      }
      const { tornEntries } = await snapshot.restore(header);
      if (tornEntries > 0) {
        options.debug?.(`${snapshot.name}: ${tornEntries} entries of an incomplete commit cleared`);
      }
      if (header.state === 'invalid')
        snapshot.restoreInvalid(header.invalidReason || 'invalid before restart');
      else if (header.timeMicros === 0)
        snapshot.restoreInvalid('the snapshot was never taken (its daemon stopped while configuring)');
    } catch (error) {
      await store.close().catch(() => undefined);
      throw error;
    }
    if (snapshot.state === 'invalid') {
      this.open.add(snapshot);
      return snapshot;
    }
    const joined = await this.copyOnWrite.takeSnapshotMoment(snapshot, () => snapshot.resume());
    if (!joined) {
      await store.close().catch(() => undefined);
      this.checkOpen('snapshot');
    }
    this.open.add(snapshot);
    return snapshot;
  }

  /**
   * Closes the origin: writes in flight finish, snapshots still open become invalid (their
   * reads need the origin) and the device is closed.
   */
  async close(): Promise<void> {
    if (this.deviceClosed) return;
    if (!this.copyOnWrite.isClosed) {
      for (const snapshot of await this.copyOnWrite.close()) snapshot.invalidate('origin went away');
    }
    this.deviceClosed = true;
    await this.device.close();
  }

  /**
   * Lets the writes in flight land, then refuses every later write (EBADF), leaving the
   * snapshots as they are: a daemon that stops closes its persistent snapshots afterwards,
   * valid, holding every write the origin took. `close` still closes the device.
   */
  async stopWrites(): Promise<void> {
    if (this.copyOnWrite.isClosed) return;
    await this.copyOnWrite.close(); // the snapshots it returns keep their state
  }

  /** Checks the request, then runs `operation` under the copy-on-write rule. */
  private async guarded(
    offset: number,
    length: number,
    syscall: string,
    operation: () => Promise<void>,
    by?: { readonly why: string },
  ): Promise<void> {
    this.checkOpen(syscall);
    if (this.device.readOnly)
      throw new FssError('EROFS', 'origin is read-only', { syscall, path: this.name });
    checkWriteRange(this.size, offset, length, this.name);
    this.checkReservation(syscall, by);
    if (length === 0) return;
    // Checked again inside the gate: a write that waited there may find the origin reserved.
    await this.copyOnWrite.write(offset, length, () => {
      this.checkReservation(syscall, by);
      return operation();
    });
    if (syscall === 'write') this.written += length;
  }

  /** EBUSY for a write while someone else holds the reservation. */
  private checkReservation(syscall: string, by: { readonly why: string } | undefined): void {
    const reservation = this.reservation;
    if (reservation === undefined || reservation === by) return;
    throw new FssError('EBUSY', `origin is reserved: ${reservation.why}`, { syscall, path: this.name });
  }

  /** The header now carries the snapshot time; a store that cannot take it invalidates. */
  private async commitHeader(snapshot: Snapshot): Promise<void> {
    try {
      await snapshot.writeHeader();
      if (snapshot.durability === 'power') await snapshot.store.flush();
    } catch (error) {
      snapshot.invalidate('write error on backing store: cannot write the header');
      await snapshot.close().catch(() => undefined);
      throw error;
    }
  }

  private checkOpen(syscall: string): void {
    if (this.copyOnWrite.isClosed) {
      throw new FssError('EBADF', 'origin is closed', { syscall, path: this.name });
    }
  }
}
