import { describe, expect, it } from 'vitest';
import {
  byteToCluster,
  CLUSTER_COUNT_MAX,
  cacheSlotCountFor,
  clusterBytes,
  clusterCountFor,
  clusterOffset,
  clusterPiece,
  clusterRange,
  clusterShiftFor,
  clusterToByte,
  computeGeometry,
  isPowerOfTwo,
  lastClusterBytesFor,
  requestedClusterSize,
} from './geometry';

const BLOCK_SIZES = [512, 1024, 2048, 4096, 8192, 16384, 65536];
const REQUESTS = [1, 511, 512, 513, 4095, 4096, 4097, 65535, 65536, 65537, 1 << 20, (1 << 20) + 1, 2 ** 31];

describe('requested cluster size', () => {
  it('treats 0 as 65536 (MAXPHYS)', () => {
    expect(requestedClusterSize(0, 1 << 30)).toBe(65536);
  });

  it('keeps the request while the device has at most 2^24 clusters of it', () => {
    expect(requestedClusterSize(65536, 2 ** 40)).toBe(65536); // exactly 2^24 clusters
    expect(requestedClusterSize(512, 512 * CLUSTER_COUNT_MAX)).toBe(512);
  });

  it("compares whole clusters, as fss.c's integer division does", () => {
    // 2^40 + 1 bytes are 2^24 whole 64 KiB clusters and one byte: not past the cap.
    expect(requestedClusterSize(65536, 2 ** 40 + 1)).toBe(65536);
    expect(requestedClusterSize(512, 512 * CLUSTER_COUNT_MAX + 511)).toBe(512);
    const geometry = computeGeometry({ deviceBytes: 2 ** 40 + 1, storeBlockSize: 4096 });
    expect(geometry.clusterSize).toBe(65536);
    expect(geometry.clusterCount).toBe(CLUSTER_COUNT_MAX + 1);
    expect(geometry.lastClusterBytes).toBe(1);
  });

  it('raises it to floor(device / 2^24) + 1 past the cap', () => {
    expect(requestedClusterSize(65536, 2 ** 40 + 65536)).toBe(Math.floor((2 ** 40 + 65536) / 2 ** 24) + 1);
    expect(requestedClusterSize(512, 512 * (CLUSTER_COUNT_MAX + 1))).toBe(513);
    const geometry = computeGeometry({ deviceBytes: 2 ** 40 + 65536, storeBlockSize: 4096 });
    expect(geometry.clusterSize).toBe(131072);
    expect(geometry.clusterCount).toBe(2 ** 23 + 1);
  });

  it('never gives more than CLUSTER_COUNT_MAX + 1 clusters', () => {
    for (const deviceBytes of [
      2 ** 40 - 1,
      2 ** 40,
      2 ** 40 + 1,
      2 ** 40 + 65535,
      2 ** 40 + 65536,
      2 ** 50 + 3,
    ]) {
      for (const clusterSize of [0, 512, 65536, 1 << 20]) {
        const geometry = computeGeometry({ deviceBytes, clusterSize, storeBlockSize: 512 });
        expect(geometry.clusterCount).toBeLessThanOrEqual(CLUSTER_COUNT_MAX + 1);
      }
    }
  });
});

describe('cluster shift', () => {
  for (const block of BLOCK_SIZES) {
    it(`is the smallest power of two >= the request and >= a ${block}-byte block`, () => {
      for (const request of REQUESTS) {
        const shift = clusterShiftFor(request, block);
        const size = 2 ** shift;
        expect(size).toBeGreaterThanOrEqual(request);
        expect(size).toBeGreaterThanOrEqual(block);
        if (size > block) expect(size / 2).toBeLessThan(request); // minimal
      }
    });
  }

  it('is EINVAL when the shift would reach 32', () => {
    expect(clusterShiftFor(2 ** 31, 512)).toBe(31);
    expect(() => clusterShiftFor(2 ** 31 + 1, 512)).toThrowError(expect.objectContaining({ code: 'EINVAL' }));
    expect(() =>
      computeGeometry({ deviceBytes: 1 << 20, clusterSize: 2 ** 32, storeBlockSize: 512 }),
    ).toThrowError(/EINVAL/);
  });

  it('is EINVAL for a store block size that is not a power of two', () => {
    expect(() => clusterShiftFor(4096, 3000)).toThrowError(expect.objectContaining({ code: 'EINVAL' }));
  });
});

describe('cluster count and the partial last cluster', () => {
  it('covers the device exactly, for sizes around cluster multiples', () => {
    for (const shift of [9, 12, 16, 20]) {
      const size = 2 ** shift;
      for (const deviceBytes of [1, size - 1, size, size + 1, 3 * size - 1, 3 * size, 3 * size + 7]) {
        const count = clusterCountFor(deviceBytes, shift);
        const last = lastClusterBytesFor(deviceBytes, shift);
        expect(count).toBe(Math.ceil(deviceBytes / size));
        expect(last).toBeGreaterThanOrEqual(1);
        expect(last).toBeLessThanOrEqual(size);
        expect((count - 1) * size + last).toBe(deviceBytes);
      }
    }
  });

  it('gives clusterBytes = lastClusterBytes only for the last cluster', () => {
    const geometry = computeGeometry({ deviceBytes: 10_000, clusterSize: 4096, storeBlockSize: 512 });
    expect(geometry.clusterCount).toBe(3);
    expect(clusterBytes(geometry, 0)).toBe(4096);
    expect(clusterBytes(geometry, 2)).toBe(10_000 - 8192);
    expect(() => clusterBytes(geometry, 3)).toThrow();
  });
});

describe('cache slots and table size', () => {
  it('has 32 slots up to 8 KiB, 8 up to 64 KiB, else 4', () => {
    expect([512, 4096, 8192].map(cacheSlotCountFor)).toEqual([32, 32, 32]);
    expect([16384, 65536].map(cacheSlotCountFor)).toEqual([8, 8]);
    expect([131072, 1 << 20].map(cacheSlotCountFor)).toEqual([4, 4]);
  });

  it('lets a tunable raise the slot count but never lower it', () => {
    expect(
      computeGeometry({ deviceBytes: 1 << 20, storeBlockSize: 512, cacheSlotsMin: 64 }).cacheSlotCount,
    ).toBe(64);
    expect(
      computeGeometry({ deviceBytes: 1 << 20, storeBlockSize: 512, cacheSlotsMin: 2 }).cacheSlotCount,
    ).toBe(8);
  });

  it("matches fss for t_fss's 2 MiB image: 32 clusters of 64K", () => {
    const geometry = computeGeometry({ deviceBytes: 2 * 1024 * 1024, storeBlockSize: 4096 });
    expect(geometry.clusterSize).toBe(65536);
    expect(geometry.clusterCount).toBe(32);
  });

  it('refuses an empty or non-integer device with EINVAL', () => {
    expect(() => computeGeometry({ deviceBytes: 0, storeBlockSize: 512 })).toThrowError(/EINVAL/);
    expect(() => computeGeometry({ deviceBytes: 1.5, storeBlockSize: 512 })).toThrowError(/EINVAL/);
  });

  it('recognises powers of two', () => {
    expect([1, 2, 512, 2 ** 40].every(isPowerOfTwo)).toBe(true);
    expect([0, 3, 513, -2, 0.5].some(isPowerOfTwo)).toBe(false);
  });
});

describe('byte and cluster conversions', () => {
  it('map bytes to clusters and back, beyond 32-bit offsets', () => {
    const geometry = computeGeometry({ deviceBytes: 2 ** 40, clusterSize: 65536, storeBlockSize: 512 });
    expect(byteToCluster(geometry, 0)).toBe(0);
    expect(byteToCluster(geometry, 65535)).toBe(0);
    expect(byteToCluster(geometry, 65536)).toBe(1);
    expect(byteToCluster(geometry, 2 ** 40 - 1)).toBe(2 ** 24 - 1); // a 32-bit shift would wrap here
    expect(clusterToByte(geometry, 2 ** 24 - 1)).toBe(2 ** 40 - 65536);
  });
});

describe('offsets inside clusters', () => {
  for (const clusterSize of [512, 4096, 65536, 1 << 20]) {
    it(`agree with byte-by-byte arithmetic for ${clusterSize}-byte clusters`, () => {
      const geometry = computeGeometry({ deviceBytes: 2 ** 41 + 7, clusterSize, storeBlockSize: 512 });
      const size = geometry.clusterSize;
      for (const offset of [0, 1, size - 1, size, size + 1, 3 * size - 5, 2 ** 40 + 3]) {
        expect(clusterOffset(geometry, offset)).toBe(offset % size);
        for (const length of [1, size - clusterOffset(geometry, offset), size + 1, 3 * size]) {
          const { first, end } = clusterRange(geometry, offset, length);
          expect(first).toBe(Math.floor(offset / size));
          expect(end).toBe(Math.floor((offset + length - 1) / size) + 1);
          let covered = 0;
          for (let cluster = first; cluster < end; cluster++) {
            const piece = clusterPiece(geometry, cluster, offset, length);
            expect(piece.offsetInRequest).toBe(covered); // pieces tile the request in order
            expect(cluster * size + piece.offsetInCluster).toBe(offset + covered);
            expect(piece.offsetInCluster + piece.length).toBeLessThanOrEqual(size);
            covered += piece.length;
          }
          expect(covered).toBe(length);
        }
      }
    });
  }

  it('refuses a piece of a cluster the request does not touch', () => {
    const geometry = computeGeometry({ deviceBytes: 1 << 20, clusterSize: 4096, storeBlockSize: 512 });
    expect(() => clusterPiece(geometry, 3, 0, 4096)).toThrow(/does not overlap/);
    expect(() => clusterRange(geometry, 0, 0)).toThrow(/at least one byte/);
  });
});
