/**
 * The store-full policy `block` (a Linux addition; NetBSD only invalidates): a backing store
 * wrapper whose writes, when the store answers ENOSPC, wait for space instead of failing.
 *
 * Notes on the design
 *
 * Why a wrapper: every write the snapshot makes (data batches, indirect-table clusters, the
 * header) may be the one that finds the store full, and each must be retried as it was, at
 * the same offset. Retrying below the snapshot keeps the cache, the table and the commit
 * protocol unaware of it: to them the write is only slow. A retried write rewrites the same
 * bytes at the same offset, so a partial first attempt (a short write before ENOSPC) is
 * harmless.
 *
 * How space is noticed: by trying again every `retryMs` (nothing tells a process that a
 * filesystem gained space; a failed attempt costs one system call).
 *
 * When it gives up: a write that still finds no space `timeoutMs` after its first ENOSPC
 * fails with ENOSPC, and the snapshot is invalidated as under the `invalidate` policy; so do
 * the writes waiting with it once `stop` is called (the snapshot was invalidated for another
 * reason, or closed). Other errors are never retried, and neither is a write `shouldWait`
 * refuses (the snapshot's own writes while it is created: a store full from the start fails
 * the configuration at once).
 *
 * What waits: while any write is waiting for space, `spaceAwaited` is a promise that settles
 * when none is any more (space came back, or the writes gave up). The snapshot makes origin
 * writes that need a new copy wait on it (Snapshot.preserve), so they wait for space too,
 * instead of filling the cache with copies that cannot be stored. Origin writes to clusters
 * already copied never wait. Writes waiting hold the origin's write gate, so a new snapshot
 * of the same origin is taken only once they are through.
 */
import { assert, type BackingStore, deferred, FssError, isFssError } from '@fss/core';

export interface SpaceWaitOptions {
  /** How long a write waits for space before it fails with ENOSPC (ms, > 0). */
  timeoutMs: number;
  /** How often a waiting write tries again (ms, > 0). */
  retryMs: number;
  /** Whether a write that found no space waits (e.g. not while the snapshot is being created). */
  shouldWait?: () => boolean;
  /** Called when the store first finds itself full, and when space came back. */
  onChange?: (waiting: boolean) => void;
}

export class SpaceWaitingStore implements BackingStore {
  readonly writev?: (sources: readonly Uint8Array[], offset: number) => Promise<void>;
  readonly allocateBuffer?: (length: number) => Uint8Array;
  private waiters = 0;
  private awaited: { promise: Promise<void>; resolve: () => void } | undefined;
  private stopped = false;
  /** Timers of the writes waiting to try again, so `stop` can end them at once. */
  private readonly sleeping = new Map<NodeJS.Timeout, () => void>();

  constructor(
    readonly inner: BackingStore,
    private readonly options: SpaceWaitOptions,
  ) {
    assert(options.timeoutMs > 0, 'the space wait timeout is positive');
    assert(options.retryMs > 0, 'the space retry interval is positive');
    const { writev, allocateBuffer } = inner;
    if (writev !== undefined) {
      this.writev = (sources, offset) => this.withSpace(() => writev.call(inner, sources, offset));
    }
    if (allocateBuffer !== undefined) this.allocateBuffer = (length) => allocateBuffer.call(inner, length);
  }

  get blockSize(): number {
    return this.inner.blockSize;
  }

  get path(): string | undefined {
    return this.inner.path;
  }

  /** True while some write waits for space. */
  get waitingForSpace(): boolean {
    return this.waiters > 0;
  }

  /** Settles when no write waits for space any more; undefined while none does. */
  get spaceAwaited(): Promise<void> | undefined {
    return this.awaited?.promise;
  }

  read(target: Uint8Array, offset: number): Promise<void> {
    return this.inner.read(target, offset);
  }

  write(source: Uint8Array, offset: number): Promise<void> {
    return this.withSpace(() => this.inner.write(source, offset));
  }

  flush(): Promise<void> {
    return this.inner.flush();
  }

  /** Ends every wait: waiting writes fail with ENOSPC now, later ones are not retried. */
  stop(): void {
    this.stopped = true;
    for (const [timer, wake] of this.sleeping) {
      clearTimeout(timer);
      wake();
    }
    this.sleeping.clear();
  }

  async close(): Promise<void> {
    this.stop();
    await this.inner.close();
  }

  /** Runs `write`; on ENOSPC, again every retryMs until it succeeds or the wait ends. */
  private async withSpace(write: () => Promise<void>): Promise<void> {
    try {
      return await write();
    } catch (error) {
      if (!isFssError(error, 'ENOSPC') || this.stopped) throw error;
      if (this.options.shouldWait?.() === false) throw error;
    }
    const deadline = Date.now() + this.options.timeoutMs;
    this.enterWait();
    try {
      for (;;) {
        await this.sleep(this.options.retryMs);
        if (this.stopped) throw this.gaveUp('the snapshot stopped waiting');
        try {
          return await write();
        } catch (error) {
          if (!isFssError(error, 'ENOSPC')) throw error;
          if (Date.now() >= deadline) {
            throw this.gaveUp(`still no space after ${Math.round(this.options.timeoutMs / 1000)} s`);
          }
        }
      }
    } finally {
      this.leaveWait();
    }
  }

  private gaveUp(why: string): FssError {
    return new FssError('ENOSPC', `backing store full (on-full block: ${why})`, {
      syscall: 'write',
      path: this.path,
    });
  }

  private enterWait(): void {
    this.waiters += 1;
    if (this.waiters > 1) return;
    const { promise, resolve } = deferred();
    this.awaited = { promise, resolve };
    this.options.onChange?.(true);
  }

  private leaveWait(): void {
    assert(this.waiters > 0, 'leaving a wait nobody entered');
    this.waiters -= 1;
    if (this.waiters > 0) return;
    const awaited = this.awaited;
    this.awaited = undefined;
    awaited?.resolve();
    this.options.onChange?.(false);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.sleeping.delete(timer);
        resolve();
      }, ms);
      this.sleeping.set(timer, resolve);
    });
  }
}
