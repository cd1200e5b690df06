import { FssError } from '@fss/core';
import { describe, expect, it } from 'vitest';
import { clipExtents } from './block-status';

describe('clipExtents', () => {
  it('merges neighbours with the same flags and clips the last extent to the request', () => {
    const extents = [
      { length: 512, flags: 0 },
      { length: 512, flags: 0 },
      { length: 1024, flags: 3 },
      { length: 4096, flags: 1 },
    ];
    expect(clipExtents('x:y', extents, 2560, 100)).toEqual([
      { length: 1024, flags: 0 },
      { length: 1024, flags: 3 },
      { length: 512, flags: 1 },
    ]);
  });

  it('keeps at most extentsMax extents (REQ_ONE: one, no longer than the request)', () => {
    const extents = [
      { length: 8192, flags: 1 },
      { length: 512, flags: 0 },
    ];
    expect(clipExtents('x:y', extents, 4096, 1)).toEqual([{ length: 4096, flags: 1 }]);
    expect(clipExtents('x:y', extents, 10000, 1)).toEqual([{ length: 8192, flags: 1 }]);
    expect(clipExtents('x:y', extents, 10000, 2)).toEqual(extents);
  });

  it('refuses no extents and empty extents with EIO naming the context', () => {
    expect(() => clipExtents('qemu:dirty-bitmap:a', [], 512, 10)).toThrow(
      /qemu:dirty-bitmap:a returned no extents/,
    );
    const empty = () => clipExtents('x:y', [{ length: 0, flags: 0 }], 512, 10);
    expect(empty).toThrow(FssError);
    expect(empty).toThrow(/extent of 0 bytes/);
  });
});
