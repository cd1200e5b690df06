/**
 * qemu's `qemu:dirty-bitmap:NAME` metadata contexts over fssd's exports (issue 13 item 2),
 * so incremental-backup readers that speak qemu's dirty bitmaps work unchanged:
 *
 *   fssN.sock          qemu:dirty-bitmap:fssM  for each older unit fssM of the same origin:
 *                                              changed between fssM and fssN (fssN's baseline
 *                                              for fssM, changed-blocks.ts)
 *   origin/NAME.sock   qemu:dirty-bitmap:fssN  for each unit of the origin: changed since fssN
 *                                              (fssN's copied bitmap, live)
 *
 * Extent flag bit 0 (ExtentFlag.DIRTY) = dirty, at the cluster granularity of the unit whose
 * bitmap it is. The bitmap is asked for at every BLOCK_STATUS, so the origin's contexts follow
 * its writes; a bitmap that is not known (an invalid unit, a unit gone meanwhile) fails the
 * request (ENXIO, EIO on the wire) rather than claim nothing changed.
 */

import { assert, type SnapshotGeometry } from '@fss/core';
import type { NbdExtent, NbdMetaContext } from '@fss/nbd';
import { ExtentFlag, QEMU_DIRTY_BITMAP_PREFIX } from '@fss/nbd';

/** A dirty bitmap: one bit per cluster of `geometry`, set = changed. */
export interface DirtyBitmap {
  readonly words: Uint32Array;
  readonly geometry: SnapshotGeometry;
}

/** `qemu:dirty-bitmap:LEAF`, answered from `bitmap()` (which throws when it is not known). */
export function dirtyBitmapContext(leaf: string, bitmap: () => DirtyBitmap): NbdMetaContext {
  return {
    name: `${QEMU_DIRTY_BITMAP_PREFIX}${leaf}`,
    extents: async (offset, length, extentsMax) => dirtyExtents(bitmap(), offset, length, extentsMax),
  };
}

/**
 * The extents of `[offset, offset + length)` by dirtiness: consecutive from `offset`, runs of
 * clusters with the same bit merged, at most `extentsMax`, the last clipped to the range.
 */
export function dirtyExtents(
  bitmap: DirtyBitmap,
  offset: number,
  length: number,
  extentsMax: number,
): NbdExtent[] {
  const { words, geometry } = bitmap;
  const { clusterSize, clusterCount, deviceBytes } = geometry;
  assert(words.length === Math.ceil(clusterCount / 32), 'a bitmap of the geometry');
  assert(offset >= 0 && length > 0 && offset + length <= deviceBytes, 'the range lies in the device');
  assert(extentsMax >= 1, 'at least one extent');
  const isSet = (cluster: number) => ((words[cluster >>> 5]! >>> (cluster & 31)) & 1) === 1;
  const end = offset + length;
  const extents: NbdExtent[] = [];
  let position = offset;
  while (position < end && extents.length < extentsMax) {
    let cluster = Math.floor(position / clusterSize);
    const dirty = isSet(cluster);
    // Whole words of the same state are skipped 32 clusters at a time.
    const same = dirty ? 0xffffffff : 0;
    cluster += 1;
    while (cluster < clusterCount && cluster * clusterSize < end) {
      if ((cluster & 31) === 0 && words[cluster >>> 5] === same) cluster += 32;
      else if (isSet(cluster) === dirty) cluster += 1;
      else break;
    }
    const runEnd = Math.min(cluster * clusterSize, end);
    extents.push({ length: runEnd - position, flags: dirty ? ExtentFlag.DIRTY : 0 });
    position = runEnd;
  }
  return extents;
}
