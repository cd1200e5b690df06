/**
 * Cluster geometry, exactly as fss computes it (SPEC §2), in fss's vocabulary.
 *
 * A snapshot divides the origin into clusters of `clusterSize = 2^clusterShift` bytes:
 *
 *   requested size   csize (0 means 65536, NetBSD's MAXPHYS)
 *   the 2^24 cap     if deviceBytes / csize > 2^24 (integer division, as fss's C does) then
 *                    csize = floor(deviceBytes / 2^24) + 1, so the copied bitmap stays near
 *                    2 MiB; a device of 2^24 full clusters plus a few bytes keeps its csize
 *                    and gets one more cluster: at most CLUSTER_COUNT_MAX + 1 clusters
 *   cluster size     the smallest power of two >= csize and >= the backing store's block size;
 *                    a shift reaching 32 is EINVAL
 *   cluster count    ((deviceBytes - 1) >> shift) + 1
 *   last cluster     holds ((deviceBytes - 1) & mask) + 1 bytes, zero-filled past that
 *   cache slots      32 when cluster <= 8 KiB, 8 when <= 64 KiB, else 4
 *
 * Only cluster math lives here. Where clusters go on a backing store (the header, the
 * indirect table's size and place, the first data cluster) is the store format's, format.ts.
 *
 * Offsets are plain numbers: every value passes Number.isSafeInteger (2^53 bytes is 8 PiB),
 * and shifts are written as multiplications because JavaScript's bit operators are 32-bit.
 */
import { assert } from './assert';
import { FssError } from './errors';

/**
 * FSS_CLUSTER_MAX: the cluster count past which fss raises the cluster size. Because fss
 * compares `deviceBytes / csize` in integer arithmetic, a snapshot can have one cluster more
 * than this (the partial last one): CLUSTER_COUNT_MAX + 1 is the true limit.
 */
export const CLUSTER_COUNT_MAX = 2 ** 24;
/** The cluster size used when the caller asks for 0 (NetBSD's MAXPHYS). */
export const CLUSTER_SIZE_DEFAULT = 65536;
/** A cluster shift may not reach this (a cluster is at most 2 GiB). */
export const CLUSTER_SHIFT_LIMIT = 32;

export interface SnapshotGeometry {
  /** Size of the origin, in bytes. */
  readonly deviceBytes: number;
  readonly clusterShift: number;
  /** 2^clusterShift. */
  readonly clusterSize: number;
  /** clusterSize - 1: the offset-in-cluster mask. */
  readonly clusterMask: number;
  /** Clusters covering the origin (the last one may be partial). */
  readonly clusterCount: number;
  /** Bytes of the origin in the last cluster (fss's sc_clresid), 1..clusterSize. */
  readonly lastClusterBytes: number;
  /** Cache slots for this cluster size. */
  readonly cacheSlotCount: number;
}

export function isPowerOfTwo(value: number): boolean {
  return Number.isSafeInteger(value) && value > 0 && 2 ** Math.round(Math.log2(value)) === value;
}

/**
 * The cluster size to aim for: the caller's request (0 = default) raised when the device
 * holds more than CLUSTER_COUNT_MAX whole clusters of it (fss.c: `bsize/csize > FSS_CLUSTER_MAX`,
 * an integer division, so 2^40 + 1 bytes keep 64 KiB clusters).
 */
export function requestedClusterSize(requestedBytes: number, deviceBytes: number): number {
  assertByteCount(requestedBytes, 'requested cluster size');
  assertByteCount(deviceBytes, 'device size');
  let clusterBytes = requestedBytes > 0 ? requestedBytes : CLUSTER_SIZE_DEFAULT;
  if (Math.floor(deviceBytes / clusterBytes) > CLUSTER_COUNT_MAX) {
    clusterBytes = Math.floor(deviceBytes / CLUSTER_COUNT_MAX) + 1;
  }
  assert(clusterBytes > 0, 'cluster size must be positive');
  return clusterBytes;
}

/**
 * The cluster shift: start at the store's block shift and grow until 2^shift >= the
 * requested size. EINVAL when it would reach 32, or when the block size is not a power of two.
 */
export function clusterShiftFor(requestedBytes: number, storeBlockBytes: number): number {
  if (!isPowerOfTwo(storeBlockBytes)) {
    throw new FssError('EINVAL', `backing store block size ${storeBlockBytes} is not a power of two`);
  }
  let shift = Math.log2(storeBlockBytes);
  while (2 ** shift < requestedBytes) {
    shift += 1;
    if (shift >= CLUSTER_SHIFT_LIMIT) break;
  }
  if (shift >= CLUSTER_SHIFT_LIMIT) {
    throw new FssError(
      'EINVAL',
      `cluster size ${requestedBytes} needs a shift of ${CLUSTER_SHIFT_LIMIT} or more`,
    );
  }
  return shift;
}

export function clusterCountFor(deviceBytes: number, clusterShift: number): number {
  return Math.floor((deviceBytes - 1) / 2 ** clusterShift) + 1;
}

export function lastClusterBytesFor(deviceBytes: number, clusterShift: number): number {
  return ((deviceBytes - 1) % 2 ** clusterShift) + 1;
}

export function cacheSlotCountFor(clusterSize: number): number {
  if (clusterSize <= 8192) return 32;
  if (clusterSize <= 65536) return 8;
  return 4;
}

export interface GeometryRequest {
  deviceBytes: number;
  /** The caller's cluster size (fss_csize); 0 or absent means the default. */
  clusterSize?: number;
  /** The backing store's block size (file: its filesystem's block size; raw device: sector). */
  storeBlockSize: number;
  /** A tunable that may raise (never lower) the cache slot count. */
  cacheSlotsMin?: number;
}

export function computeGeometry(request: GeometryRequest): SnapshotGeometry {
  const { deviceBytes, storeBlockSize } = request;
  if (!Number.isSafeInteger(deviceBytes) || deviceBytes <= 0) {
    throw new FssError('EINVAL', `device size ${deviceBytes} is not a positive byte count`);
  }
  const wanted = requestedClusterSize(request.clusterSize ?? 0, deviceBytes);
  const clusterShift = clusterShiftFor(wanted, storeBlockSize);
  const clusterSize = 2 ** clusterShift;
  const clusterCount = clusterCountFor(deviceBytes, clusterShift);
  assert(clusterCount <= CLUSTER_COUNT_MAX + 1, 'cluster count exceeds CLUSTER_COUNT_MAX + 1');
  assert(clusterSize >= storeBlockSize, 'cluster smaller than the store block');
  return geometryOf(
    deviceBytes,
    clusterShift,
    Math.max(cacheSlotCountFor(clusterSize), request.cacheSlotsMin ?? 0),
  );
}

/** The geometry of a device of `deviceBytes` in clusters of 2^clusterShift bytes (no checks). */
export function geometryOf(
  deviceBytes: number,
  clusterShift: number,
  cacheSlotCount: number,
): SnapshotGeometry {
  const clusterSize = 2 ** clusterShift;
  return {
    deviceBytes,
    clusterShift,
    clusterSize,
    clusterMask: clusterSize - 1,
    clusterCount: clusterCountFor(deviceBytes, clusterShift),
    lastClusterBytes: lastClusterBytesFor(deviceBytes, clusterShift),
    cacheSlotCount,
  };
}

/** The cluster holding a byte of the origin (FSS_BTOCL). */
export function byteToCluster(geometry: SnapshotGeometry, offsetInDevice: number): number {
  return Math.floor(offsetInDevice / geometry.clusterSize);
}

/** The first byte of a cluster (FSS_CLTOB). */
export function clusterToByte(geometry: SnapshotGeometry, cluster: number): number {
  return cluster * geometry.clusterSize;
}

/** Where a byte of the origin lies inside its cluster (FSS_CLOFF). */
export function clusterOffset(geometry: SnapshotGeometry, offsetInDevice: number): number {
  return offsetInDevice - clusterToByte(geometry, byteToCluster(geometry, offsetInDevice));
}

/** The clusters [first, end) that `length` bytes at `offsetInDevice` touch (length > 0). */
export function clusterRange(
  geometry: SnapshotGeometry,
  offsetInDevice: number,
  length: number,
): { first: number; end: number } {
  assert(length > 0, 'a cluster range covers at least one byte');
  assert(offsetInDevice >= 0, 'a cluster range starts inside the device');
  return {
    first: byteToCluster(geometry, offsetInDevice),
    end: byteToCluster(geometry, offsetInDevice + length - 1) + 1,
  };
}

/**
 * The part of a request of `length` bytes at `offsetInDevice` that lies in `cluster`: where
 * it starts inside the cluster, where inside the request, and how long it is. The request
 * and the cluster must overlap.
 */
export function clusterPiece(
  geometry: SnapshotGeometry,
  cluster: number,
  offsetInDevice: number,
  length: number,
): { offsetInCluster: number; offsetInRequest: number; length: number } {
  const clusterStart = clusterToByte(geometry, cluster);
  const from = Math.max(offsetInDevice, clusterStart);
  const to = Math.min(offsetInDevice + length, clusterStart + geometry.clusterSize);
  assert(from < to, `cluster ${cluster} does not overlap ${offsetInDevice}+${length}`);
  return { offsetInCluster: from - clusterStart, offsetInRequest: from - offsetInDevice, length: to - from };
}

/** Bytes of the origin in a cluster: clusterSize, or lastClusterBytes for the last one. */
export function clusterBytes(geometry: SnapshotGeometry, cluster: number): number {
  assert(cluster >= 0 && cluster < geometry.clusterCount, `cluster ${cluster} out of range`);
  return cluster === geometry.clusterCount - 1 ? geometry.lastClusterBytes : geometry.clusterSize;
}

function assertByteCount(value: number, what: string): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new FssError('EINVAL', `${what} ${value} is not a byte count`);
  }
}
