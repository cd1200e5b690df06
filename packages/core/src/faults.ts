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
 *   targeted tests that need one failure at one point. `write` covers write, writev and
 *   writeZeroes; `discard` is its own operation (it fails with `writeErrorRatio` too, and
 *   counts no bytes towards `enospcAfterBytes`).
 * The wrappers are honest about capabilities: an optional method (writev, writeZeroes,
 * discard, allocateBuffer) exists exactly when the wrapped object has it, so a test through a
 * wrapper takes the same code paths as production does without one.
 * A failed operation has no effect on the data: nothing is partially written. Flush and
 * close never fail (a failing close is tested where a store needs it); close lets the
 * requests in flight finish first, as real storage does.
 */
import type { AllocationRun, BackingStore, BlockDevice } from './device';
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

export type FaultOperation = 'read' | 'write' | 'discard';

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

  /** Discards fail like writes (writeErrorRatio, failNext('discard')) but count no bytes. */
  async beforeDiscard(path?: string): Promise<void> {
    await this.delay();
    this.maybeFail('discard', this.options.writeErrorRatio ?? 0, path);
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

/**
 * The requests a wrapper has in flight, so close can let them finish first. Without it a
 * request still waiting out its injected delay would reach an inner object closed under it
 * and fail with EBADF, which no real store or device does to a request accepted before close.
 */
class InFlight {
  private readonly pending = new Set<Promise<unknown>>();
  private closing: Promise<void> | undefined;

  /**
   * Runs `before` (the fault checks) and then `operation`, tracked until it settles. Once
   * close has begun, `operation` runs straight after it, so the closed inner object answers
   * (EBADF) in its own words.
   */
  run<T>(before: () => Promise<void>, operation: () => Promise<T>): Promise<T> {
    if (this.closing !== undefined) return this.closing.then(operation, operation);
    const work = before().then(operation);
    this.pending.add(work);
    const forget = () => this.pending.delete(work);
    work.then(forget, forget);
    return work;
  }

  /** Waits for the requests in flight, then runs `close`; later calls share the first close. */
  close(close: () => Promise<void>): Promise<void> {
    this.closing ??= Promise.allSettled([...this.pending]).then(close);
    return this.closing;
  }
}

const noFaults = (): Promise<void> => Promise.resolve();

/**
 * A BackingStore that fails on purpose. Capabilities are the inner store's: `writev` and
 * `allocateBuffer` exist exactly when the inner store has them (so the engine takes the same
 * path as in production), and `writev` faults as one write of its total length. Close waits
 * for the requests in flight, as every real store does.
 */
export class FaultyBackingStore implements BackingStore {
  readonly faults: FaultInjector;
  /** Present when the inner store has writev: the fault checks of write, then its writev. */
  readonly writev?: (sources: readonly Uint8Array[], offset: number) => Promise<void>;
  /** Present when the inner store has allocateBuffer: its memory, never a fault. */
  readonly allocateBuffer?: (length: number) => Uint8Array;
  private readonly inFlight = new InFlight();

  constructor(
    readonly inner: BackingStore,
    options: FaultOptions = {},
  ) {
    this.faults = new FaultInjector(options);
    const { writev, allocateBuffer } = inner;
    if (writev !== undefined) {
      this.writev = (sources, offset) => {
        let length = 0;
        for (const source of sources) length += source.length;
        return this.inFlight.run(
          () => this.faults.beforeWrite(length, this.path),
          () => writev.call(inner, sources, offset),
        );
      };
    }
    if (allocateBuffer !== undefined) this.allocateBuffer = (length) => allocateBuffer.call(inner, length);
  }

  get blockSize(): number {
    return this.inner.blockSize;
  }

  get path(): string | undefined {
    return this.inner.path;
  }

  read(target: Uint8Array, offset: number): Promise<void> {
    return this.inFlight.run(
      () => this.faults.beforeRead(this.path),
      () => this.inner.read(target, offset),
    );
  }

  write(source: Uint8Array, offset: number): Promise<void> {
    return this.inFlight.run(
      () => this.faults.beforeWrite(source.length, this.path),
      () => this.inner.write(source, offset),
    );
  }

  flush(): Promise<void> {
    return this.inFlight.run(noFaults, () => this.inner.flush());
  }

  close(): Promise<void> {
    return this.inFlight.close(() => this.inner.close());
  }
}

/**
 * A BlockDevice that fails on purpose. Capabilities are the inner device's: `writeZeroes`,
 * `discard`, `allocateBuffer` and `allocation` exist exactly when the inner device has them, and
 * `preferredIoSize` is the inner one's. `writeZeroes` faults as a write of its length (the
 * zeroes count towards `enospcAfterBytes`); `discard` as the operation `discard`, with
 * `writeErrorRatio` and no bytes counted (it frees space). Close waits for the requests in
 * flight, as every real device does.
 */
export class FaultyBlockDevice implements BlockDevice {
  readonly faults: FaultInjector;
  /** Present when the inner device has writeZeroes: the fault checks of write, then its writeZeroes. */
  readonly writeZeroes?: (offset: number, length: number) => Promise<void>;
  /** Present when the inner device has discard: the discard fault checks, then its discard. */
  readonly discard?: (offset: number, length: number) => Promise<void>;
  /** Present when the inner device has allocateBuffer: its memory, never a fault. */
  readonly allocateBuffer?: (length: number) => Uint8Array;
  /** Present when the inner device has allocation: its answer, never a fault. */
  readonly allocation?: (offset: number, length: number, runsMax: number) => Promise<AllocationRun[]>;
  private readonly inFlight = new InFlight();

  constructor(
    readonly inner: BlockDevice,
    options: FaultOptions = {},
  ) {
    this.faults = new FaultInjector(options);
    const { writeZeroes, discard, allocateBuffer, allocation } = inner;
    if (allocation !== undefined) {
      this.allocation = (offset, length, runsMax) => allocation.call(inner, offset, length, runsMax);
    }
    if (writeZeroes !== undefined) {
      this.writeZeroes = (offset, length) =>
        this.inFlight.run(
          () => this.faults.beforeWrite(length),
          () => writeZeroes.call(inner, offset, length),
        );
    }
    if (discard !== undefined) {
      this.discard = (offset, length) =>
        this.inFlight.run(
          () => this.faults.beforeDiscard(),
          () => discard.call(inner, offset, length),
        );
    }
    if (allocateBuffer !== undefined) this.allocateBuffer = (length) => allocateBuffer.call(inner, length);
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

  get preferredIoSize(): number | undefined {
    return this.inner.preferredIoSize;
  }

  read(target: Uint8Array, offset: number): Promise<number> {
    return this.inFlight.run(
      () => this.faults.beforeRead(),
      () => this.inner.read(target, offset),
    );
  }

  write(source: Uint8Array, offset: number): Promise<void> {
    return this.inFlight.run(
      () => this.faults.beforeWrite(source.length),
      () => this.inner.write(source, offset),
    );
  }

  flush(): Promise<void> {
    return this.inFlight.run(noFaults, () => this.inner.flush());
  }

  close(): Promise<void> {
    return this.inFlight.close(() => this.inner.close());
  }
}
