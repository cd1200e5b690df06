/**
 * Aligned memory for O_DIRECT, and a fixed pool of bounce buffers.
 *
 * O_DIRECT needs the buffer address, the file offset and the length aligned (EINVAL
 * otherwise), and ordinary Buffers are not: `Buffer.alloc(65536)` often lands at an address
 * that is 16 bytes past a page. We over-allocate a GC-managed buffer and take the aligned
 * slice (node-ecosystem.md §3.3, pattern B): no external memory to free, no use-after-free,
 * and it keeps working under the V8 sandbox. V8 never moves ArrayBuffer backing stores, so
 * the alignment holds for the buffer's lifetime.
 *
 * The pool has a fixed number of buffers: requests that cannot use the caller's buffer
 * directly borrow a bounce buffer and queue when all are out, so the memory a device can use
 * is bounded. Buffers are made on first need (a device that only ever sees aligned requests
 * never pays for them) and then reused for the device's lifetime, so once warm the hot path
 * allocates nothing.
 */
import { assert, isPowerOfTwo } from '@fss/core';
import { addressOf } from './libc';

/** A zeroed buffer of `length` bytes whose address is a multiple of `alignment`. */
export function alignedBuffer(length: number, alignment: number): Buffer {
  assert(Number.isSafeInteger(length) && length >= 0, `buffer length ${length}`);
  assert(isPowerOfTwo(alignment), `alignment ${alignment} is not a power of two`);
  const raw = Buffer.alloc(length + alignment);
  const misalignment = Number(addressOf(raw) % BigInt(alignment));
  const skip = misalignment === 0 ? 0 : alignment - misalignment;
  const aligned = raw.subarray(skip, skip + length);
  assert(addressOf(aligned) % BigInt(alignment) === 0n, 'aligned buffer is not aligned');
  return aligned;
}

/** True when `bytes` starts at an address that is a multiple of `alignment`. */
export function isAddressAligned(bytes: Uint8Array, alignment: number): boolean {
  return bytes.length > 0 && addressOf(bytes) % BigInt(alignment) === 0n;
}

/** A fixed set of equal-sized aligned buffers, handed out first come, first served. */
export class BufferPool {
  readonly bufferBytes: number;
  readonly bufferCount: number;
  private readonly alignment: number;
  private readonly free: Buffer[] = [];
  private readonly waiters: Array<(buffer: Buffer) => void> = [];
  /** Buffers made so far (free or lent out); never more than bufferCount. */
  private made = 0;

  constructor(bufferCount: number, bufferBytes: number, alignment: number) {
    assert(bufferCount >= 1, 'a pool needs at least one buffer');
    assert(bufferBytes % alignment === 0, 'pool buffers must be a multiple of the alignment');
    this.bufferBytes = bufferBytes;
    this.bufferCount = bufferCount;
    this.alignment = alignment;
  }

  /** A buffer for exclusive use until `release`; waits when all are out. */
  acquire(): Promise<Buffer> {
    const buffer = this.free.pop();
    if (buffer !== undefined) return Promise.resolve(buffer);
    if (this.made < this.bufferCount) {
      this.made++;
      return Promise.resolve(alignedBuffer(this.bufferBytes, this.alignment));
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  release(buffer: Buffer): void {
    assert(buffer.length === this.bufferBytes, 'released a buffer that is not from this pool');
    const waiter = this.waiters.shift();
    if (waiter !== undefined) waiter(buffer);
    else {
      this.free.push(buffer);
      assert(this.free.length <= this.made, 'pool buffer released twice');
    }
  }

  /** Runs `use` with a borrowed buffer and always gives it back. */
  async with<T>(use: (buffer: Buffer) => Promise<T>): Promise<T> {
    const buffer = await this.acquire();
    try {
      return await use(buffer);
    } finally {
      this.release(buffer);
    }
  }
}
