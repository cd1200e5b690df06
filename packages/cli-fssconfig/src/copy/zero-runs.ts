/**
 * Finding the data in a piece of a snapshot: the runs of blocks that are not all zero. A
 * block is `blockBytes` long and aligned to the *file's* offsets (not the piece's), so a hole
 * left in the file is always whole filesystem blocks and `stat` sees it as unallocated.
 */
import { assert } from '@fss/core';

/** The filesystem block size holes are kept at (ext4, xfs and btrfs use 4 KiB). */
export const HOLE_BLOCK_BYTES = 4096;

/** A half-open run [start, end) of offsets in the file. */
export interface Run {
  readonly start: number;
  readonly end: number;
}

/** Zeros to compare with: Buffer.compare is a native memcmp, far faster than a JS loop. */
const ZEROS = Buffer.alloc(64 * 1024);

/** True when every byte of `data[start, end)` is zero. */
export function isAllZero(data: Uint8Array, start = 0, end = data.length): boolean {
  assert(start >= 0 && start <= end && end <= data.length, 'isAllZero: range outside the data');
  for (let at = start; at < end; at += ZEROS.length) {
    const length = Math.min(ZEROS.length, end - at);
    if (Buffer.compare(data.subarray(at, at + length), ZEROS.subarray(0, length)) !== 0) return false;
  }
  return true;
}

/**
 * The runs of `data` (which sits at `offset` in the file) that hold non-zero blocks, merged
 * where they touch. Everything outside them is zero.
 */
export function dataRuns(data: Uint8Array, offset: number, blockBytes = HOLE_BLOCK_BYTES): Run[] {
  assert(Number.isSafeInteger(offset) && offset >= 0, 'offset must be a non-negative integer');
  assert(blockBytes > 0 && (blockBytes & (blockBytes - 1)) === 0, 'blockBytes must be a power of two');
  const runs: Run[] = [];
  const end = offset + data.length;
  let at = offset;
  while (at < end) {
    const blockEnd = Math.min(end, (Math.floor(at / blockBytes) + 1) * blockBytes);
    if (!isAllZero(data, at - offset, blockEnd - offset)) {
      const last = runs[runs.length - 1];
      if (last !== undefined && last.end === at) runs[runs.length - 1] = { start: last.start, end: blockEnd };
      else runs.push({ start: at, end: blockEnd });
    }
    at = blockEnd;
  }
  return runs;
}
