/**
 * The origin: the device whose point-in-time contents snapshots preserve, and the only path
 * writes take to it (SPEC §1, "the interception rule").
 *
 * `write`, `writeZeroes` and `discard` first ask every active snapshot to preserve the
 * clusters they touch, and only then reach the device; a store failure invalidates that
 * snapshot and never fails or blocks the write. Reads go straight to the device.
 *
 * Taking a snapshot suspends writes for a moment (see WriteGate): writes in flight finish,
 * the snapshot becomes active, writes resume. Its backing store is prepared (header written)
 * before that, so the suspension is short.
 */
import { type BackingStore, type BlockDevice, checkWriteRange, FssError } from '@fss/core';
import { type Logger, Snapshot, type SnapshotHost, type SnapshotOptions } from './snapshot';
import { WriteGate } from './write-gate';

export interface OriginOptions {
  /** What to call the origin in messages and FSSIOCGET (default `origin`). */
  name?: string;
  /** Where `snapshot invalid` lines go (default console.warn); snapshots inherit it. */
  logger?: Logger;
  /** The clock, in ms since the epoch. */
  now?: () => number;
}

/** Zero-writes without device support are sent in chunks of this size. */
const ZERO_CHUNK_BYTES = 1024 * 1024;

export class Origin implements BlockDevice {
  readonly device: BlockDevice;
  readonly name: string;
  private readonly options: OriginOptions;
  private readonly gate = new WriteGate();
  /** Snapshots taking copies, in creation order. */
  private active: Snapshot[] = [];
  /** Every snapshot not yet closed. */
  private readonly open = new Set<Snapshot>();
  private closed = false;
  private zeroChunk: Uint8Array | undefined;
  private readonly host: SnapshotHost;

  constructor(device: BlockDevice, options: OriginOptions = {}) {
    this.device = device;
    this.options = options;
    this.name = options.name ?? 'origin';
    const origin = this;
    this.host = {
      device,
      name: this.name,
      detach(snapshot) {
        origin.active = origin.active.filter((candidate) => candidate !== snapshot);
        if (snapshot.state === 'closed') origin.open.delete(snapshot);
      },
    };
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

  /** Snapshots of this origin that are not closed (active or invalid). */
  get snapshots(): readonly Snapshot[] {
    return [...this.open];
  }

  allocateBuffer(length: number): Uint8Array {
    return this.device.allocateBuffer?.(length) ?? new Uint8Array(length);
  }

  read(target: Uint8Array, offset: number): Promise<number> {
    this.checkOpen('read');
    return this.device.read(target, offset);
  }

  async write(source: Uint8Array, offset: number): Promise<void> {
    this.checkWritable(offset, source.length, 'write');
    if (source.length === 0) return;
    await this.guarded(offset, source.length, () => this.device.write(source, offset));
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.checkWritable(offset, length, 'write');
    if (length === 0) return;
    await this.guarded(offset, length, () =>
      this.device.writeZeroes !== undefined
        ? this.device.writeZeroes(offset, length)
        : this.writeZeroChunks(offset, length),
    );
  }

  /** Discard is advisory: snapshots copy first, then the device discards if it can. */
  async discard(offset: number, length: number): Promise<void> {
    this.checkWritable(offset, length, 'discard');
    if (length === 0 || this.device.discard === undefined) return;
    await this.guarded(offset, length, () => this.device.discard!(offset, length));
  }

  flush(): Promise<void> {
    this.checkOpen('fsync');
    return this.device.flush();
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
      await snapshot.writeHeader();
    } catch (error) {
      await store.close().catch(() => undefined);
      throw error;
    }
    const now = options.now ?? this.options.now ?? Date.now;
    const resume = await this.gate.suspend();
    const originOpen = !this.closed; // it may have closed while we waited for the gate
    let observerFailure: unknown;
    try {
      if (originOpen) {
        snapshot.activate(now());
        this.active.push(snapshot);
        this.open.add(snapshot);
        options.onActivate?.(snapshot);
      }
    } catch (error) {
      observerFailure = error;
    } finally {
      resume();
    }
    if (observerFailure !== undefined) {
      await snapshot.close().catch(() => undefined);
      throw observerFailure;
    }
    if (!originOpen) {
      await store.close().catch(() => undefined);
      this.checkOpen('snapshot');
    }
    await this.commitHeader(snapshot);
    return snapshot;
  }

  /**
   * Closes the origin: writes in flight finish, snapshots still open become invalid (their
   * reads need the origin) and the device is closed.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    const resume = await this.gate.suspend();
    this.closed = true;
    resume();
    for (const snapshot of this.active) snapshot.invalidate('origin went away');
    await this.device.close();
  }

  /** Runs `operation` on the device once every active snapshot has preserved the range. */
  private async guarded(offset: number, length: number, operation: () => Promise<void>): Promise<void> {
    if (this.gate.isOpen) this.gate.enterOpen();
    else await this.gate.enter();
    try {
      this.checkOpen('write');
      const waits: Promise<unknown>[] = [];
      for (const snapshot of this.active) {
        const wait = snapshot.preserve(offset, length);
        if (wait !== undefined) waits.push(wait);
      }
      if (waits.length > 0) await (waits.length === 1 ? waits[0] : Promise.all(waits));
      await operation();
    } finally {
      this.gate.leave();
    }
  }

  /** The header now carries the snapshot time; a store that cannot take it invalidates. */
  private async commitHeader(snapshot: Snapshot): Promise<void> {
    try {
      await snapshot.writeHeader();
    } catch (error) {
      snapshot.invalidate('write error on backing store: cannot write the header');
      await snapshot.close().catch(() => undefined);
      throw error;
    }
  }

  private async writeZeroChunks(offset: number, length: number): Promise<void> {
    this.zeroChunk ??= this.allocateBuffer(ZERO_CHUNK_BYTES).fill(0);
    for (let done = 0; done < length; ) {
      const chunk = Math.min(this.zeroChunk.length, length - done);
      await this.device.write(this.zeroChunk.subarray(0, chunk), offset + done);
      done += chunk;
    }
  }

  private checkWritable(offset: number, length: number, syscall: string): void {
    this.checkOpen(syscall);
    if (this.device.readOnly)
      throw new FssError('EROFS', 'origin is read-only', { syscall, path: this.name });
    checkWriteRange(this.size, offset, length, this.name);
  }

  private checkOpen(syscall: string): void {
    if (this.closed) throw new FssError('EBADF', 'origin is closed', { syscall, path: this.name });
  }
}
