/**
 * The write gate: lets a snapshot be taken at a moment when no origin write is in flight.
 *
 * fss suspends the file system (vfs_suspend) while it establishes a snapshot, so every write
 * is either wholly before the snapshot (not copied, and its data is the snapshot's) or wholly
 * after it (copied first). Here the origin's writes pass through this gate: `suspend()`
 * closes it to new writes, waits for the ones in flight to finish and returns a `resume`
 * function. Suspensions are serialised, so two snapshots taken at once get distinct moments.
 */
import { assert } from '@fss/core';

export class WriteGate {
  private inFlight = 0;
  /** Resolves when the current suspension ends; undefined while open. */
  private closed: Promise<void> | undefined;
  private drained: (() => void) | undefined;
  /** The tail of the queue of suspend() callers. */
  private suspensionQueue: Promise<void> = Promise.resolve();

  /** Enters the gate; call `leave()` exactly once afterwards. */
  async enter(): Promise<void> {
    while (this.closed !== undefined) await this.closed;
    this.inFlight += 1;
  }

  /** True when `enter` would pass without waiting (lets callers skip an await). */
  get isOpen(): boolean {
    return this.closed === undefined;
  }

  /** Enters without waiting; only when `isOpen`. */
  enterOpen(): void {
    assert(this.closed === undefined, 'enterOpen on a closed gate');
    this.inFlight += 1;
  }

  leave(): void {
    assert(this.inFlight > 0, 'leave without enter');
    this.inFlight -= 1;
    if (this.inFlight === 0) this.drained?.();
  }

  /** Closes the gate, waits for writes in flight, and returns the function that reopens it. */
  async suspend(): Promise<() => void> {
    const previous = this.suspensionQueue;
    let release!: () => void;
    this.suspensionQueue = new Promise<void>((resolve) => {
      release = resolve;
    });
    await previous;
    let reopen!: () => void;
    this.closed = new Promise<void>((resolve) => {
      reopen = resolve;
    });
    if (this.inFlight > 0) {
      await new Promise<void>((resolve) => {
        this.drained = resolve;
      });
      this.drained = undefined;
    }
    assert(this.inFlight === 0, 'writes in flight while suspended');
    return () => {
      this.closed = undefined;
      reopen();
      release();
    };
  }
}
