/**
 * The copy-on-write rule: the one invariant fss exists for, enforced here and nowhere else.
 *
 *   An origin write of bytes [offset, offset + length) reaches the device only after every
 *   active snapshot has preserved every cluster those bytes touch: the cluster's old contents
 *   are in one of the snapshot's cache slots (or already on its store) and its copied bit is
 *   set. A snapshot then reads that cluster from the slot or the store, never from the origin.
 *
 * The moment a snapshot is taken is part of the same rule. Writes pass a write gate
 * (write-gate.ts): taking a snapshot closes it to new writes, waits until the writes in
 * flight have landed, activates the snapshot (from then on every write preserves for it) and
 * reopens the gate. So each write is wholly before a snapshot (not copied: its data is the
 * snapshot's) or wholly after it (copied first); none is torn between the two.
 *
 * Read top to bottom: `write` is every origin write (Origin.write, writeZeroes and discard all
 * call it with the device operation to run), `takeSnapshotMoment` is every snapshot's start,
 * `detach` ends a snapshot's protection (invalid or closed), `close` ends the origin's.
 *
 * Worker writes. A server may let other threads write the origin's descriptor themselves
 * (@fss/core worker-io.ts; the FUSE readers of an attached origin do): this is where they are
 * permitted, and only while no snapshot is active, since such a write skips `preserve`. The
 * snapshot moment revokes the permit (and waits for the worker writes in flight) before it
 * activates a snapshot, inside the suspended gate, so a worker write too is wholly before
 * the snapshot; the permit comes back when the last active snapshot detaches. A write a
 * worker may not do comes here as usual. Worker reads are permitted until `close`.
 *
 * A snapshot whose store fails is invalidated and detached by the snapshot itself; its
 * `preserve` then returns nothing to wait for, so a store failure never fails or blocks an
 * origin write. A failure to *read* the origin while copying fails the write that needed the
 * copy, and the device operation is not issued (the cluster was not saved).
 */
import { assert, FssError, WorkerIoGate, WorkerIoPermit } from '@fss/core';
import type { Snapshot } from './snapshot';
import { WriteGate } from './write-gate';

export class CopyOnWrite {
  private readonly gate = new WriteGate();
  /** Snapshots taking copies, in creation order. */
  private active: Snapshot[] = [];
  private closed = false;
  /** What other threads may do with the origin's descriptor (see "Worker writes"). */
  readonly workerGate: WorkerIoGate;

  /** `writable`: the origin takes writes at all (a read-only one never permits worker writes). */
  constructor(
    private readonly originName: string,
    private readonly writable = true,
  ) {
    this.workerGate = new WorkerIoGate(this.workerPermits());
  }

  /** Reads while open; writes only while open, writable and no snapshot is active. */
  private workerPermits(): number {
    if (this.closed) return 0;
    const writes = this.writable && this.active.length === 0 ? WorkerIoPermit.WRITE : 0;
    return WorkerIoPermit.READ | writes;
  }

  /** True once `close` ran: no write passes any more. */
  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Runs `operation` (the device write of [offset, offset + length)) once every active
   * snapshot has preserved the clusters it touches. `length` > 0.
   */
  async write(offset: number, length: number, operation: () => Promise<void>): Promise<void> {
    assert(length > 0, 'an empty write needs no copy');
    if (this.gate.isOpen) this.gate.enterOpen();
    else await this.gate.enter();
    try {
      if (this.closed) throw this.closedError();
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

  /**
   * The snapshot moment: with no write in flight, `activate` turns `snapshot` on and it joins
   * the snapshots every later write preserves for. `activate` runs synchronously inside the
   * gate (it may record the origin's state: nothing changes it meanwhile); if it throws, the
   * snapshot does not join and the error is rethrown. False when the origin closed while we
   * waited for the gate.
   */
  async takeSnapshotMoment(snapshot: Snapshot, activate: () => void): Promise<boolean> {
    const resume = await this.gate.suspend();
    try {
      // No worker write in flight either, and none starts: they would skip the copy.
      await this.workerGate.revoke(WorkerIoPermit.WRITE);
      if (this.closed) return false;
      activate();
      assert(snapshot.state === 'active', 'activate turns the snapshot on');
      this.active.push(snapshot);
      return true;
    } finally {
      this.workerGate.permit(this.workerPermits());
      resume();
    }
  }

  /** Resolves once every write in flight now has landed (writes after it are not waited for). */
  async drain(): Promise<void> {
    const resume = await this.gate.suspend();
    resume();
  }

  /** Stops preserving for `snapshot` (it became invalid or was closed). */
  detach(snapshot: Snapshot): void {
    this.active = this.active.filter((candidate) => candidate !== snapshot);
    this.workerGate.permit(this.workerPermits());
  }

  /**
   * Lets the writes in flight land, then refuses every later write (EBADF) and returns the
   * snapshots that were still active: they lose their origin.
   */
  async close(): Promise<Snapshot[]> {
    const resume = await this.gate.suspend();
    this.closed = true;
    await this.workerGate.revoke(WorkerIoPermit.READ | WorkerIoPermit.WRITE);
    resume();
    const orphans = this.active;
    this.active = [];
    return orphans;
  }

  private closedError(): FssError {
    return new FssError('EBADF', 'origin is closed', { syscall: 'write', path: this.originName });
  }
}
