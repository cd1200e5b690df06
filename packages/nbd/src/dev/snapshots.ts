/**
 * Snapshots for the development binary: wraps the image in the engine's Origin and takes one
 * snapshot per request at start-up, each kept in a MemoryBackingStore (this is a development
 * tool; fssd owns real units and their backing stores). The origin export then copies every
 * touched cluster before it changes, and each snapshot export serves the start-up contents.
 */
import { type BlockDevice, MemoryBackingStore, Origin } from '@fss/core';
import type { NbdExportOptions } from '../export';

export interface SnapshotRequest {
  readonly name: string;
  readonly socketPath: string;
}

export interface AttachedSnapshots {
  readonly origin: Origin;
  readonly snapshots: { readonly export: NbdExportOptions; readonly socketPath: string }[];
}

export async function attachSnapshots(
  device: BlockDevice,
  requests: readonly SnapshotRequest[],
  log: (line: string) => void,
): Promise<AttachedSnapshots> {
  const origin = new Origin(device, { name: 'origin', logger: log });
  const snapshots = [];
  for (const request of requests) {
    const snapshot = await origin.createSnapshot(new MemoryBackingStore(), { name: request.name });
    snapshots.push({
      export: {
        name: request.name,
        device: snapshot,
        description: `snapshot ${request.name}`,
      },
      socketPath: request.socketPath,
    });
  }
  return { origin, snapshots };
}
