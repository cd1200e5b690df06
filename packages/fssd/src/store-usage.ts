/**
 * How full a unit's backing store is, for `fss status`: the bytes in use (header, indirect
 * table and stored clusters, in whole clusters), the most it will ever need (every cluster
 * copied), and what it can hold.
 */
import { statfs } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Snapshot } from '@fss/engine';
import type { OpenedBackup } from './backup';

export interface StoreUsage {
  usedBytes: number;
  /** The store's size once every cluster of the origin is copied. */
  maxBytes: number;
}

export function storeUsage(snapshot: Snapshot): StoreUsage {
  const { clusterSize, clusterCount } = snapshot.geometry;
  return {
    usedBytes: snapshot.storeClustersInUse * clusterSize,
    maxBytes: (snapshot.layout.firstDataCluster + clusterCount) * clusterSize,
  };
}

/**
 * Bytes the store can hold: a raw device's size; a file's bytes in use plus the space its
 * filesystem has left for unprivileged writers (f_bavail: fssd may run as root and dig into
 * the reserve, so this errs low). The directory is asked, not the file, because a temporary
 * or unlinked backup has no name; undefined when statfs fails.
 */
export async function storeBytesLimit(backup: OpenedBackup, usedBytes: number): Promise<number | undefined> {
  if (backup.capacityBytes !== undefined) return backup.capacityBytes;
  const stats = await statfs(dirname(backup.path)).catch(() => undefined);
  if (stats === undefined) return undefined;
  return usedBytes + stats.bavail * stats.bsize;
}

/** A store's use when its snapshot was taken: header and table, nothing copied yet. */
export function storeStart(snapshot: Snapshot): { bytes: number; ms: number } {
  return { bytes: snapshot.layout.firstDataCluster * snapshot.geometry.clusterSize, ms: snapshot.takenAtMs };
}
