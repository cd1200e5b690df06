import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { dataRuns, HOLE_BLOCK_BYTES, isAllZero } from './zero-runs';

describe('dataRuns', () => {
  it('finds the non-zero blocks, aligned to file offsets, merged where they touch', () => {
    const data = Buffer.alloc(5 * 4096);
    // The piece sits at 4086 in the file: byte 10 is file offset 4096 (block [4096, 8192)),
    // byte 8192 is 12278 (block [8192, 12288), touching: merged), byte 13192 is 17278.
    data[10] = 1;
    data[8192] = 1;
    data[13_192] = 1;
    expect(dataRuns(data, 4086)).toEqual([
      { start: 4096, end: 12_288 },
      { start: 16_384, end: 20_480 },
    ]);
    expect(dataRuns(Buffer.alloc(8192), 0)).toEqual([]);
  });

  it('outside the runs every byte is zero, inside each run every block has data (random pieces)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 3 * HOLE_BLOCK_BYTES }),
        fc.integer({ min: 1, max: 8 * HOLE_BLOCK_BYTES }),
        fc.array(fc.nat(), { maxLength: 12 }),
        (offset, length, marks) => {
          const data = Buffer.alloc(length);
          for (const mark of marks) data[mark % length] = 0xff;
          const runs = dataRuns(data, offset);
          const covered = Buffer.alloc(length);
          let previousEnd = -1;
          for (const run of runs) {
            expect(run.start).toBeGreaterThan(previousEnd);
            previousEnd = run.end;
            covered.fill(1, run.start - offset, run.end - offset);
            for (
              let block = run.start;
              block < run.end;
              block = (Math.floor(block / HOLE_BLOCK_BYTES) + 1) * HOLE_BLOCK_BYTES
            ) {
              const blockEnd = Math.min(
                run.end,
                (Math.floor(block / HOLE_BLOCK_BYTES) + 1) * HOLE_BLOCK_BYTES,
              );
              expect(isAllZero(data, block - offset, blockEnd - offset)).toBe(false);
            }
          }
          for (let index = 0; index < length; index += 1)
            if (covered[index] === 0) expect(data[index]).toBe(0);
        },
      ),
    );
  });

  it('isAllZero looks at every byte of the range, across its 64 KiB comparison chunks', () => {
    const data = Buffer.alloc(200_000);
    expect(isAllZero(data)).toBe(true);
    data[199_999] = 1;
    expect(isAllZero(data)).toBe(false);
    expect(isAllZero(data, 0, 199_999)).toBe(true);
  });
});
