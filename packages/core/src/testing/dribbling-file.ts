/**
 * An in-memory file whose every call moves 1..maxChunk bytes, chosen by a seeded PRNG, as
 * the kernel may: for tests of the complete-transfer loops (positioned-io.ts) and of the
 * adapters that drive them over real handles (backing-file). Reads stop at the end of `bytes`.
 */
import type { ReadAt, WriteAt, WritevAt } from '../positioned-io';
import { SeededRandom } from '../random';

export class DribblingFile {
  readonly bytes: Uint8Array;
  /** Transfer calls so far. */
  calls = 0;
  private readonly random: SeededRandom;

  constructor(
    size: number,
    private readonly maxChunk: number,
    seed: number,
  ) {
    this.bytes = new Uint8Array(size);
    this.random = new SeededRandom(seed);
  }

  private chunk(wanted: number): number {
    this.calls += 1;
    return Math.min(wanted, this.random.integer(1, this.maxChunk));
  }

  readonly readAt: ReadAt = async (buffer, offset, length, position) => {
    const count = Math.min(this.chunk(length), Math.max(0, this.bytes.length - position));
    buffer.set(this.bytes.subarray(position, position + count), offset);
    return count;
  };

  readonly writeAt: WriteAt = async (buffer, offset, length, position) => {
    const count = this.chunk(length);
    this.bytes.set(buffer.subarray(offset, offset + count), position);
    return count;
  };

  readonly writevAt: WritevAt = async (buffers, position) => {
    const joined = Buffer.concat(buffers);
    const count = this.chunk(joined.length);
    this.bytes.set(joined.subarray(0, count), position);
    return count;
  };
}
