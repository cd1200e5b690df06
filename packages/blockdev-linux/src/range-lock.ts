/**
 * Exclusive locks on byte ranges, for writes.
 *
 * A write that is not sector-aligned is a read-modify-write of its first and last sectors.
 * If another write touches those sectors between our read and our write, our write puts
 * back the stale bytes and that write is lost, even though the two writes never overlapped
 * byte for byte. So every write locks the sector-aligned extent it covers; writes to disjoint
 * sectors never wait, and overlapping ones run in arrival order. Reads take no lock: like any
 * block device, a read racing a write may see either.
 */
import { assert } from '@fss/core';

interface Held {
  start: number;
  end: number;
  /** Settles when this range is released. */
  released: Promise<void>;
}

export class RangeLock {
  private readonly held = new Set<Held>();

  /** Locks [start, end); resolves with the function that unlocks it. */
  async lock(start: number, end: number): Promise<() => void> {
    assert(start < end, `empty lock range ${start}..${end}`);
    // Register first, then wait for every earlier overlapping holder: arrival order, no starvation.
    const earlier = [...this.held].filter((other) => other.start < end && start < other.end);
    let unlock!: () => void;
    const entry: Held = { start, end, released: new Promise<void>((resolve) => (unlock = resolve)) };
    this.held.add(entry);
    await Promise.all(earlier.map((other) => other.released));
    return () => {
      assert(this.held.delete(entry), 'range unlocked twice');
      unlock();
    };
  }

  get size(): number {
    return this.held.size;
  }
}
