/**
 * The write lease of an origin with persistent units (state-dir.ts says what it is for): a
 * recorded time until which this daemon may have written the origin. After a crash, an image
 * modified later than its lease was written by someone else, and its units cannot be exact.
 *
 * The lease runs LEASE_MS ahead. An origin write renews it once less than RENEW_AHEAD_MS is
 * left (in the background), and waits for the renewal only when less than WAIT_AHEAD_MS is
 * left, so under steady writes the record is rewritten about once a second and no write
 * waits. A failed renewal never fails a write (the origin never loses a write because of
 * fss): it is logged, and after a crash the units of that origin then come back invalid,
 * which is the safe side.
 *
 * `LeasedDevice` puts the lease in front of an origin device's writes, with the device's own
 * capabilities (writeZeroes, discard and allocation only when the device has them).
 */
import type { BlockDevice } from '@fss/core';

export const LEASE_MS = 5000;
const RENEW_AHEAD_MS = 4000;
const WAIT_AHEAD_MS = 1000;

export class WriteLease {
  private untilMs = 0;
  private enabled = false;
  private renewing: Promise<void> | undefined;

  constructor(
    /** Records the lease (the origin record's writesUntilMs). */
    private readonly persist: (untilMs: number) => Promise<void>,
    private readonly log: (line: string) => void,
    private readonly now: () => number = Date.now,
  ) {}

  get isEnabled(): boolean {
    return this.enabled;
  }

  /** Starts leasing (the origin's first persistent unit); resolves once the lease is recorded. */
  async enable(): Promise<void> {
    this.enabled = true;
    await this.renew();
  }

  /** Stops leasing (no persistent unit left). */
  disable(): void {
    this.enabled = false;
  }

  /**
   * Records that every write has landed (a clean stop): the lease ends now, so the mtime the
   * writes left is within it. Waits for a renewal in flight first.
   */
  async settle(): Promise<void> {
    if (!this.enabled) return;
    await this.renewing;
    const now = this.now();
    await this.persist(now);
    this.untilMs = now;
  }

  /** Called before every origin write; a promise only when the write must wait for the lease. */
  beforeWrite(): Promise<void> | undefined {
    if (!this.enabled) return undefined;
    const left = this.untilMs - this.now();
    if (left >= RENEW_AHEAD_MS) return undefined;
    const renewal = this.renew();
    return left < WAIT_AHEAD_MS ? renewal : undefined;
  }

  private renew(): Promise<void> {
    this.renewing ??= (async () => {
      const untilMs = this.now() + LEASE_MS;
      try {
        await this.persist(untilMs);
        this.untilMs = untilMs;
      } catch (error) {
        // Writes go on; after a crash this origin's units come back invalid (the safe side).
        this.log(`origin write lease not recorded: ${String(error)}`);
        this.untilMs = this.now() + WAIT_AHEAD_MS; // try again soon, without stalling writes
      } finally {
        this.renewing = undefined;
      }
    })();
    return this.renewing;
  }
}

/** An origin device whose writes first pass the lease. */
export function leasedDevice(device: BlockDevice, lease: WriteLease): BlockDevice {
  // No extra promise on the hot path: only a write that must wait for the lease chains one.
  const gated = <A extends unknown[]>(operation: (...args: A) => Promise<void>) => {
    return (...args: A): Promise<void> => {
      const wait = lease.beforeWrite();
      return wait === undefined ? operation(...args) : wait.then(() => operation(...args));
    };
  };
  const wrapped: BlockDevice = {
    get size() {
      return device.size;
    },
    get logicalSectorSize() {
      return device.logicalSectorSize;
    },
    get readOnly() {
      return device.readOnly;
    },
    read: (target, offset) => device.read(target, offset),
    write: gated((source: Uint8Array, offset: number) => device.write(source, offset)),
    flush: () => device.flush(),
    close: () => device.close(),
  };
  if (device.preferredIoSize !== undefined) {
    Object.defineProperty(wrapped, 'preferredIoSize', { get: () => device.preferredIoSize });
  }
  const { writeZeroes, discard, allocateBuffer, allocation } = device;
  if (writeZeroes !== undefined) {
    wrapped.writeZeroes = gated((offset: number, length: number) => writeZeroes.call(device, offset, length));
  }
  if (discard !== undefined) {
    wrapped.discard = gated((offset: number, length: number) => discard.call(device, offset, length));
  }
  if (allocateBuffer !== undefined) wrapped.allocateBuffer = (length) => allocateBuffer.call(device, length);
  // Worker writes (an attached origin's FUSE readers) skip the lease. The engine permits them
  // only while no snapshot is active, and an active persistent unit is what the lease exists
  // for; a lease that runs out sooner only makes a unit come back invalid, the safe side.
  const { workerIo } = device;
  if (workerIo !== undefined) wrapped.workerIo = () => workerIo.call(device);
  // Reading where the holes are is not a write: no lease needed.
  if (allocation !== undefined) {
    wrapped.allocation = (offset, length, runsMax) => allocation.call(device, offset, length, runsMax);
  }
  return wrapped;
}
