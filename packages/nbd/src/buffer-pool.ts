/**
 * BufferPool: reusable request and reply buffers, shared by every connection of a server.
 *
 * Why: a READ of 256 KiB needs a 256 KiB reply buffer. Allocating a fresh one per request
 * costs an mmap, 64 page faults and a munmap (glibc serves large blocks straight from mmap),
 * plus garbage-collector pressure at gigabytes per second; reusing buffers removes all three
 * and is most of the difference between us and a C server on sequential reads.
 *
 * Buffers are kept by exact size: clients repeat the same request sizes (nbdcopy 256 KiB,
 * qemu 64 KiB, the kernel its max_sectors), so exact buckets hit nearly always and waste
 * nothing; an odd size simply allocates. A buffer is returned with `release()` once nothing refers to it any more: for a
 * reply, when the socket's write callback fires (the bytes are in the kernel); for a WRITE
 * payload, when the device's write has resolved. Forgetting a release is harmless (the
 * garbage collector takes the buffer); releasing too early would not be, so only the two
 * call sites above release. The pool keeps at most `retainedBytesMax` idle bytes; beyond
 * that released buffers are dropped.
 */
import { assert } from '@fss/core';

export class BufferPool {
  private readonly idle = new Map<number, Buffer[]>();
  private idleBytes = 0;

  constructor(
    private readonly bufferBytesMax: number,
    private readonly retainedBytesMax: number,
  ) {
    assert(bufferBytesMax > 0, 'buffer size limit must be positive');
    assert(retainedBytesMax >= 0, 'retained bytes limit must not be negative');
  }

  /** A buffer of at least `length` bytes (its contents are garbage). */
  acquire(length: number): Buffer {
    assert(Number.isSafeInteger(length) && length >= 0, 'length must be a byte count');
    assert(length <= this.bufferBytesMax, 'length must not exceed the pool limit');
    const buffer = this.idle.get(length)?.pop();
    if (buffer !== undefined) {
      this.idleBytes -= length;
      return buffer;
    }
    return Buffer.allocUnsafeSlow(length);
  }

  /** Gives back a buffer from acquire(); the caller must not touch it afterwards. */
  release(buffer: Buffer): void {
    const size = buffer.length;
    // Only whole allocations from acquire() (views of other memory are not ours to reuse).
    if (buffer.byteOffset !== 0 || buffer.buffer.byteLength !== size) return;
    if (this.idleBytes + size > this.retainedBytesMax) return;
    let list = this.idle.get(size);
    if (list === undefined) {
      list = [];
      this.idle.set(size, list);
    }
    list.push(buffer);
    this.idleBytes += size;
    assert(this.idleBytes <= this.retainedBytesMax, 'idle bytes stay within the limit');
  }
}
