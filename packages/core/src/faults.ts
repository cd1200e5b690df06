/**
 * Fault injection for the engine's tests: wrappers that make a BackingStore or BlockDevice
 * fail the way real storage does.
 *
 * Fault model (each one independent, all off by default):
 * - `readErrorRatio` / `writeErrorRatio`: each read / write fails with EIO with this
 *   probability, drawn from a PRNG seeded with `seed`, so a failing run replays exactly.
 * - `enospcAfterBytes`: once this many bytes have been written, every further write fails
 *   with ENOSPC; a write that would cross the limit fails whole and writes nothing, as a
 *   full filesystem refuses an allocation.
 * - `latencyMs`: every operation waits a random time in [min, max] ms first, which
 *   reorders concurrent operations the way a busy disk does.
 * - `jitterTicks`: every operation first yields to the event loop a random 0..n times
 *   (setImmediate): reorders concurrent operations without real time passing, so property
 *   tests explore many interleavings quickly and replay them exactly from the seed.
 * - `failNext(operation, code)`: the next call of that operation fails with `code`; for
 *   targeted tests that need one failure at one point.
 * A failed operation has no effect on the data: nothing is partially written. Flush and
 * close never fail (a failing close is tested where a store needs it).
 */
import type { BackingStore, BlockDevice } from './device';
import type { ErrnoCode } from './errno';
import { FssError } from './errors';
import { SeededRandom } from './random';

export interface FaultOptions {
  seed?: number;
  readErrorRatio?: number;
  writeErrorRatio?: number;
  enospcAfterBytes?: number;
  latencyMs?: { min: number; max: number };
  jitterTicks?: number;
}

export type FaultOperation = 'read' | 'write';

/** The fault decisions, shared by both wrappers. */
export class FaultInjector {
  readonly options: FaultOptions;
  readonly random: SeededRandom;
  bytesWritten = 0;
  faultsInjected = 0;
  private readonly scheduled = new Map<FaultOperation, ErrnoCode>();

  constructor(options: FaultOptions = {}) {
    this.options = options;
    this.random = new SeededRandom(options.seed ?? 1);
  }

  failNext(operation: FaultOperation, code: ErrnoCode = 'EIO'): void {
    this.scheduled.set(operation, code);
  }

  /** Changes the options from now on (e.g. start failing half way through a test). */
  update(options: Partial<FaultOptions>): void {
    Object.assign(this.options, options);
  }

  async beforeRead(path?: string): Promise<void> {
    await this.delay();
    this.maybeFail('read', this.options.readErrorRatio ?? 0, path);
  }

  async beforeWrite(length: number, path?: string): Promise<void> {
    await this.delay();
    this.maybeFail('write', this.options.writeErrorRatio ?? 0, path);
    const limit = this.options.enospcAfterBytes;
    if (limit !== undefined && this.bytesWritten + length > limit) {
      this.faultsInjected += 1;
      throw new FssError('ENOSPC', 'injected: store full', { syscall: 'write', path });
    }
    this.bytesWritten += length;
  }

  private maybeFail(operation: FaultOperation, ratio: number, path?: string): void {
    const scheduled = this.scheduled.get(operation);
    if (scheduled !== undefined) {
      this.scheduled.delete(operation);
      this.faultsInjected += 1;
      throw new FssError(scheduled, `injected ${operation} fault`, { syscall: operation, path });
    }
    if (ratio > 0 && this.random.next() < ratio) {
      this.faultsInjected += 1;
      throw new FssError('EIO', `injected ${operation} fault`, { syscall: operation, path });
    }
  }

  private async delay(): Promise<void> {
    const ticks = this.options.jitterTicks ?? 0;
    for (let tick = this.random.integer(0, ticks); tick > 0; tick--) {
      await new Promise((resolve) => setImmediate(resolve));
    }
    const latency = this.options.latencyMs;
    if (latency === undefined) return;
    const ms = latency.min + this.random.next() * (latency.max - latency.min);
    await new Promise((resolve) => setTimeout(resolve, ms));
  }
}

export class FaultyBackingStore implements BackingStore {
  readonly faults: FaultInjector;

  constructor(
    readonly inner: BackingStore,
    options: FaultOptions = {},
  ) {
    this.faults = new FaultInjector(options);
  }

  get blockSize(): number {
    return this.inner.blockSize;
  }

  get path(): string | undefined {
    return this.inner.path;
  }

  async read(target: Uint8Array, offset: number): Promise<void> {
    await this.faults.beforeRead(this.path);
    await this.inner.read(target, offset);
  }

  async write(source: Uint8Array, offset: number): Promise<void> {
    await this.faults.beforeWrite(source.length, this.path);
    await this.inner.write(source, offset);
  }

  flush(): Promise<void> {
    return this.inner.flush();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

export class FaultyBlockDevice implements BlockDevice {
  readonly faults: FaultInjector;

  constructor(
    readonly inner: BlockDevice,
    options: FaultOptions = {},
  ) {
    this.faults = new FaultInjector(options);
  }

  get size(): number {
    return this.inner.size;
  }

  get logicalSectorSize(): number {
    return this.inner.logicalSectorSize;
  }

  get readOnly(): boolean {
    return this.inner.readOnly;
  }

  async read(target: Uint8Array, offset: number): Promise<number> {
    await this.faults.beforeRead();
    return this.inner.read(target, offset);
  }

  async write(source: Uint8Array, offset: number): Promise<void> {
    await this.faults.beforeWrite(source.length);
    await this.inner.write(source, offset);
  }

  flush(): Promise<void> {
    return this.inner.flush();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
