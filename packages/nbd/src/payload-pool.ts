/**
 * PayloadPool: reusable READ reply and WRITE payload buffers for one export, shared by its
 * connections. (Not blockdev-linux's `BufferPool`, a fixed set of O_DIRECT bounce buffers:
 * this one keeps idle buffers of any length, up to a byte limit.)
 *
 * Why: a READ of 256 KiB needs a 256 KiB buffer. Allocating a fresh one per request costs an
 * mmap, 64 page faults and a munmap (glibc serves large blocks straight from mmap), plus
 * garbage-collector pressure at gigabytes per second; reusing buffers removes all three and
 * is most of the difference between us and a C server on sequential reads. Plain buffers are
 * page-aligned (allocatePageAligned, below). For a device with `allocateBuffer` (O_DIRECT
 * alignment; the engine's origin and snapshots) the pool allocates through it, so reused
 * buffers keep the device's alignment.
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

export class PayloadPool {
  private readonly idle = new Map<number, Uint8Array[]>();
  private readonly owned = new WeakSet<Uint8Array>();
  private idleBytes = 0;

  constructor(
    private readonly allocate: Allocate,
    private readonly retainedBytesMax: number,
  ) {
    assert(retainedBytesMax >= 0, 'retained bytes limit must not be negative');
  }

  /** A pool of page-aligned buffers (see allocatePageAligned). */
  static ofBuffers(retainedBytesMax: number): PayloadPool {
    return new PayloadPool(allocatePageAligned, retainedBytesMax);
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

/** `new ArrayBuffer(length, { maxByteLength })` (ES2024; the lib we compile against is older). */
const ResizableArrayBuffer = ArrayBuffer as unknown as new (
  length: number,
  options: { maxByteLength: number },
) => ArrayBuffer;

/**
 * Memory that starts on a page boundary. Where a buffer starts within its page decides what
 * the kernel's copies into it cost: a pread from the page cache into memory 8–24 bytes past a
 * page boundary runs 1.5–3.5× slower on the machines we measured (AMD EPYC; loads alias the
 * copy's own recent stores, "4K aliasing"), and that is exactly where glibc puts a large
 * malloc (a 16-byte header in front of an mmap), i.e. Buffer.allocUnsafeSlow: 0.155 against
 * 0.105 CPU-s per GiB for 512 KiB preads. JavaScript has no aligned allocation, but V8
 * reserves a resizable ArrayBuffer's memory from the page allocator, so it starts on a page
 * boundary (if a V8 ever did otherwise, only the speed would change). The buffer cannot grow
 * (maxByteLength = length) and is used through a fixed-length view.
 */
function allocatePageAligned(length: number): Uint8Array {
  return new Uint8Array(new ResizableArrayBuffer(length, { maxByteLength: length }), 0, length);
}
