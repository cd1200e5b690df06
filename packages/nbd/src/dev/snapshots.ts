/**
 * Snapshots for the development binary: wraps the image in the engine's Origin and takes one
 * snapshot per request at start-up, each kept in a MemoryBackingStore. The Origin is looked up
 * at run time so the binary still serves plain images while the engine is being written; once
 * it is part of @fss/core this becomes a plain import.
 */
import * as core from '@fss/core';
import { type BackingStore, type BlockDevice, FssError, MemoryBackingStore } from '@fss/core';
import type { NbdExportOptions } from '../export';

export interface SnapshotRequest {
  readonly name: string;
  readonly socketPath: string;
}

/** The shape of @fss/core's Origin that we use. */
interface OriginLike extends BlockDevice {
  createSnapshot(store: BackingStore, options: { name?: string }): Promise<BlockDevice>;
}
type OriginConstructor = new (device: BlockDevice, options: { name?: string }) => OriginLike;

export async function attachSnapshots(
  device: BlockDevice,
  requests: readonly SnapshotRequest[],
): Promise<{ origin: BlockDevice; snapshots: { export: NbdExportOptions; socketPath: string }[] }> {
  const Origin = (core as Record<string, unknown>)['Origin'] as OriginConstructor | undefined;
  if (Origin === undefined) {
    throw new FssError('EOPNOTSUPP', 'this @fss/core has no copy-on-write engine (Origin) yet');
  }
  const origin = new Origin(device, { name: 'origin' });
  const snapshots = [];
  for (const request of requests) {
    const snapshot = await origin.createSnapshot(new MemoryBackingStore(), { name: request.name });
    snapshots.push({ export: { name: request.name, device: snapshot }, socketPath: request.socketPath });
  }
  return { origin, snapshots };
}
