import { describe, expect, it } from 'vitest';
import { identitiesOverlap } from './identity';

const disk = new Set(['dev:8:0']);
const partition1 = new Set(['dev:8:1', 'disk:8:0']);
const partition2 = new Set(['dev:8:2', 'disk:8:0']);
const loop = new Set(['dev:7:0', 'file:2049:12']);
const image = new Set(['file:2049:12']);
const loopPartition = new Set(['dev:259:0', 'disk:7:0', 'file:2049:12']);

describe('identitiesOverlap', () => {
  it('overlaps a partition with its whole disk, either way round', () => {
    expect(identitiesOverlap(partition1, disk)).toBe(true);
    expect(identitiesOverlap(disk, partition2)).toBe(true);
  });

  it('does not overlap two partitions of one disk', () => {
    expect(identitiesOverlap(partition1, partition2)).toBe(false);
  });

  it('overlaps a loop device (or a partition of it) with its backing image', () => {
    expect(identitiesOverlap(loop, image)).toBe(true);
    expect(identitiesOverlap(loopPartition, image)).toBe(true);
    expect(identitiesOverlap(loopPartition, loop)).toBe(true);
  });

  it('does not overlap unrelated devices', () => {
    expect(identitiesOverlap(disk, loop)).toBe(false);
    expect(identitiesOverlap(new Set(['dev:8:16']), partition1)).toBe(false);
  });
});
