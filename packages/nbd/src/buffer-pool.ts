/**
 * BufferPool: reusable request and reply buffers for one export, shared by its connections.
 *
 * Why: a READ of 256 KiB needs a 256 KiB buffer. Allocating a fresh one per request costs an
 * mmap, 64 page faults and a munmap (glibc serves large blocks straight from mmap), plus
 * garbage-collector pressure at gigabytes per second; reusing buffers removes all three and
 * is most of the difference between us and a C server on sequential reads. For a device with
 * `allocateBuffer` (O_DIRECT alignment; the engine's origin and snapshots) the pool allocates
 * through it, so reused buffers keep the device's alignment.
 *
 * Buffers are kept by exact length: clients repeat the same request sizes (nbdcopy 256 KiB,
 * qemu 64 KiB, the kernel its max_sectors), so exact buckets hit nearly always and waste
 * nothing; an odd size simply allocates. A buffer is returned with `release()` once nothing
 * refers to it any more: for a reply, when the socket's write callback fires (the bytes are in
 * the kernel); for a WRITE payload, when the device's write has resolved. Forgetting a release
 * is harmless (the garbage collector takes the buffer); releasing too early would not be, so
 * only those call sites release. Buffers not handed out by this pool are ignored by release.
 * The pool keeps at most `retainedBytesMax` idle bytes; beyond that released buffers are
 * dropped.
 */
import { assert } from '@fss/core';

export type Allocate = (length: number) => Uint8Array;

export class BufferPool {
  private readonly idle = new Map<number, Uint8Array[]>();
  private readonly owned = new WeakSet<Uint8Array>();
  private idleBytes = 0;

  constructor(
    private readonly allocate: Allocate,
    private readonly retainedBytesMax: number,
  ) {
    assert(retainedBytesMax >= 0, 'retained bytes limit must not be negative');
  }

  /** A pool of plain Node buffers. */
  static ofBuffers(retainedBytesMax: number): BufferPool {
    return new BufferPool((length) => Buffer.allocUnsafeSlow(length), retainedBytesMax);
  }

  /** A buffer of exactly `length` bytes (its contents are garbage). */
  acquire(length: number): Uint8Array {
    assert(Number.isSafeInteger(length) && length > 0, 'length must be a positive byte count');
    const reused = this.idle.get(length)?.pop();
    if (reused !== undefined) {
      this.idleBytes -= length;
      return reused;
    }
    const buffer = this.allocate(length);
    assert(buffer.length >= length, 'the allocator returns at least the length asked');
    const exact = buffer.length === length ? buffer : buffer.subarray(0, length);
    this.owned.add(exact);
    return exact;
  }

  /** Gives back a buffer from acquire(); the caller must not touch it afterwards. */
  release(buffer: Uint8Array): void {
    if (!this.owned.has(buffer)) return;
    const length = buffer.length;
    if (this.idleBytes + length > this.retainedBytesMax) return;
    let list = this.idle.get(length);
    if (list === undefined) {
      list = [];
      this.idle.set(length, list);
    }
    list.push(buffer);
    this.idleBytes += length;
    assert(this.idleBytes <= this.retainedBytesMax, 'idle bytes stay within the limit');
  }
}
