/**
 * The copied bitmap: one bit per origin cluster, set once the cluster's point-in-time
 * contents are safe in a cache slot or on the backing store. Bits are only ever set.
 *
 * Range queries skip 32 clusters at a time, so checking a 1 MiB request of 512-byte
 * clusters costs a few word reads, not 2048 bit tests.
 */
import { assert } from './assert';

const WORD_BITS = 32;
const FULL_WORD = 0xffffffff;

export class CopiedBitmap {
  readonly size: number;
  private readonly words: Uint32Array;
  private setBits = 0;

  constructor(size: number) {
    assert(Number.isSafeInteger(size) && size >= 0, `bitmap size ${size} is not a count`);
    this.size = size;
    this.words = new Uint32Array(Math.ceil(size / WORD_BITS));
  }

  /** Clusters whose bit is set. */
  get count(): number {
    return this.setBits;
  }

  has(index: number): boolean {
    this.assertIndex(index);
    return ((this.words[index >>> 5]! >>> (index & 31)) & 1) === 1;
  }

  /** Sets a bit; setting a set bit is allowed and changes nothing. */
  add(index: number): void {
    this.assertIndex(index);
    const word = this.words[index >>> 5]!;
    const mask = 1 << (index & 31);
    if ((word & mask) !== 0) return;
    this.words[index >>> 5] = word | mask;
    this.setBits += 1;
  }

  /** The first set index in [from, end), or -1. */
  nextSet(from: number, end: number): number {
    return this.scan(from, end, 0);
  }

  /** The first clear index in [from, end), or -1. */
  nextClear(from: number, end: number): number {
    return this.scan(from, end, FULL_WORD);
  }

  /** True when every bit in [from, end) is set. */
  allSet(from: number, end: number): boolean {
    return this.nextClear(from, end) === -1;
  }

  /** A copy of the raw words, e.g. to persist the bitmap. */
  toWords(): Uint32Array {
    return this.words.slice();
  }

  private scan(from: number, end: number, skipWord: number): number {
    assert(from >= 0 && end <= this.size && from <= end, `bitmap range [${from}, ${end}) out of bounds`);
    const wantSet = skipWord === 0;
    let index = from;
    while (index < end) {
      const word = this.words[index >>> 5]!;
      if ((index & 31) === 0 && word === skipWord) {
        index += WORD_BITS;
        continue;
      }
      const bit = ((word >>> (index & 31)) & 1) === 1;
      if (bit === wantSet) return index;
      index += 1;
    }
    return -1;
  }

  private assertIndex(index: number): void {
    assert(
      Number.isInteger(index) && index >= 0 && index < this.size,
      `bit ${index} out of range 0..${this.size - 1}`,
    );
  }
}
