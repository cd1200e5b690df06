import { describe, expect, it } from 'vitest';
import { PayloadPool } from './payload-pool';

describe('PayloadPool', () => {
  it('reuses released buffers of the same length, and only its own', () => {
    const pool = PayloadPool.ofBuffers(1024 * 1024);
    const first = pool.acquire(4096);
    expect(first.length).toBe(4096);
    pool.release(first);
    expect(pool.acquire(4096)).toBe(first);
    expect(pool.acquire(4096)).not.toBe(first);
    const stranger = Buffer.alloc(4096);
    pool.release(stranger);
    expect(pool.acquire(4096)).not.toBe(stranger);
  });

  it('keeps at most retainedBytesMax idle', () => {
    const pool = PayloadPool.ofBuffers(8192);
    const buffers = [pool.acquire(4096), pool.acquire(4096), pool.acquire(4096)];
    for (const buffer of buffers) pool.release(buffer);
    const again = [pool.acquire(4096), pool.acquire(4096), pool.acquire(4096)];
    expect(again.filter((buffer) => buffers.includes(buffer))).toHaveLength(2);
  });

  it('allocates through the given allocator and trims to the length', () => {
    const pool = new PayloadPool((length) => new Uint8Array(length + 512), 1 << 20);
    const buffer = pool.acquire(1000);
    expect(buffer.length).toBe(1000);
    pool.release(buffer);
    expect(pool.acquire(1000)).toBe(buffer);
  });
});
