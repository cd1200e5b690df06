import { computeGeometry } from '@fss/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { dirtyBitmapContext, dirtyExtents } from './dirty-bitmaps';

describe('dirtyExtents', () => {
  it('equals the per-cluster model for any bitmap and range (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 300 }),
        fc.integer({ min: 0, max: 2 ** 31 - 1 }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.integer({ min: 1, max: 8 }),
        (deviceSectors, seed, startShare, lengthShare, extentsMax) => {
          const deviceBytes = deviceSectors * 512 + 512 * 64;
          const geometry = computeGeometry({ deviceBytes, clusterSize: 4096, storeBlockSize: 512 });
          const words = new Uint32Array(Math.ceil(geometry.clusterCount / 32));
          let state = seed;
          const dirty = new Set<number>();
          for (let cluster = 0; cluster < geometry.clusterCount; cluster++) {
            state = (state * 1103515245 + 12345) % 2 ** 31;
            // Long runs as well as single clusters.
            if (state % 7 < 3) {
              dirty.add(cluster);
              words[cluster >>> 5]! |= 1 << (cluster & 31);
            }
          }
          const offset = Math.floor(startShare * (deviceBytes - 1));
          const length = Math.max(1, Math.floor(lengthShare * (deviceBytes - offset)));
          const extents = dirtyExtents({ words, geometry }, offset, length, extentsMax);
          expect(extents.length).toBeGreaterThan(0);
          expect(extents.length).toBeLessThanOrEqual(extentsMax);
          let at = offset;
          for (const [index, extent] of extents.entries()) {
            expect(extent.length).toBeGreaterThan(0);
            if (index > 0) expect(extent.flags).not.toBe(extents[index - 1]!.flags);
            for (let byte = at; byte < at + extent.length; byte += 512) {
              expect(dirty.has(Math.floor(byte / 4096)) ? 1 : 0).toBe(extent.flags);
            }
            at += extent.length;
          }
          expect(at).toBeLessThanOrEqual(offset + length);
          if (extents.length < extentsMax) expect(at).toBe(offset + length);
        },
      ),
      { numRuns: Number(process.env['FSS_PROPERTY_RUNS'] ?? 300) },
    );
  });

  it('is qemu:dirty-bitmap:NAME, and fails the request when the bitmap is unknown', async () => {
    const context = dirtyBitmapContext('fss0', () => {
      throw new Error('fss0 is invalid');
    });
    expect(context.name).toBe('qemu:dirty-bitmap:fss0');
    await expect(context.extents(0, 512, 1)).rejects.toThrow('fss0 is invalid');
  });
});
