/**
 * Goal: aligned buffers are aligned, the bounce pool is bounded and reuses its buffers, and
 * the range lock serializes only overlapping ranges. Pure units: no root needed.
 */
import { describe, expect, it } from 'vitest';
import { alignedBuffer, BufferPool, isAddressAligned, RangeLock } from '../src';

describe('alignedBuffer', () => {
  it('returns zeroed buffers aligned to every power of two asked for', () => {
    for (const alignment of [512, 4096, 65536]) {
      for (const length of [1, 512, 4096 * 3, 1 << 20]) {
        const buffer = alignedBuffer(length, alignment);
        expect(buffer.length).toBe(length);
        expect(isAddressAligned(buffer, alignment)).toBe(true);
        expect(buffer.every((byte) => byte === 0)).toBe(true);
      }
    }
    expect(isAddressAligned(alignedBuffer(8192, 4096).subarray(1), 512)).toBe(false);
  });
});

describe('BufferPool', () => {
  it('lends at most bufferCount buffers, queues the rest in order and reuses them', async () => {
    const pool = new BufferPool(2, 4096, 4096);
    const first = await pool.acquire();
    const second = await pool.acquire();
    expect(first).not.toBe(second);
    const order: string[] = [];
    const third = pool.acquire().then((buffer) => {
      order.push('third');
      return buffer;
    });
    const fourth = pool.acquire().then((buffer) => {
      order.push('fourth');
      return buffer;
    });
    await Promise.resolve();
    expect(order).toEqual([]);
    pool.release(second);
    expect(await third).toBe(second);
    pool.release(first);
    expect(await fourth).toBe(first);
    expect(order).toEqual(['third', 'fourth']);
  });
});

describe('RangeLock', () => {
  it('lets disjoint ranges run together and orders overlapping ones by arrival', async () => {
    const lock = new RangeLock();
    const events: string[] = [];
    const unlockA = await lock.lock(0, 4096);
    const disjoint = await lock.lock(4096, 8192); // no wait
    events.push('disjoint locked');
    const b = lock.lock(4000, 5000).then((unlock) => {
      events.push('b locked');
      return unlock;
    });
    const c = lock.lock(0, 10).then((unlock) => {
      events.push('c locked');
      return unlock;
    });
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(events).toEqual(['disjoint locked']);
    unlockA();
    const unlockC = await c; // only waited for A
    expect(events).toEqual(['disjoint locked', 'c locked']);
    disjoint();
    (await b)();
    unlockC();
    expect(lock.size).toBe(0);
  });
});
