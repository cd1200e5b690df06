/**
 * Reopening a persistent store after its daemon stopped (cleanly or not): what the store
 * durably says the snapshot had copied. No I/O of its own: it reads and writes through the
 * BackingStore it is given, like readTableCluster.
 *
 * The commit protocol (engine/src/snapshot.ts, durable mode) writes, for each batch of saved
 * clusters: the data, then their table entries, then the header with the new next cluster
 * and commit sequence; an origin write is issued only after the commit holding its clusters.
 * So on reopening:
 *   - an entry below the header's next cluster points at saved data: its cluster is copied;
 *   - an entry at or past next cluster belongs to a commit whose header never landed: its
 *     origin write was never issued, so the origin still holds that cluster's snapshot data.
 *     The entry is torn: it is cleared (written back as 0) and the cluster counts as not
 *     copied, so the next copy of it can take a table entry again;
 *   - anything else (an entry pointing into the header or table, a store cluster mapped
 *     twice) means the store is damaged: reopening refuses (fssck says more).
 * Only a store whose table region reads as zero where never written (format flag
 * STORE_FLAG_TABLE_ZEROED) can be reopened: elsewhere a raw device's old bytes would look
 * like entries.
 */
import { CopiedBitmap } from './bitmap';
import type { BackingStore } from './device';
import { FssError } from './errors';
import {
  type DecodedHeader,
  decodeHeader,
  HEADER_BYTES,
  readTableCluster,
  readTableEntry,
  STORE_FLAG_TABLE_ZEROED,
  type StoreLayout,
  writeTableCluster,
  writeTableEntry,
} from './format';

/** Reads and decodes a store's header (EINVAL, naming the store, when it is not one). */
export async function readStoreHeader(
  store: BackingStore,
  allocate: (length: number) => Uint8Array = (length) => new Uint8Array(length),
): Promise<DecodedHeader> {
  const block = allocate(Math.max(HEADER_BYTES, store.blockSize));
  await store.read(block, 0);
  try {
    return decodeHeader(block.subarray(0, HEADER_BYTES));
  } catch (error) {
    const why = error instanceof FssError ? error.description : String(error);
    throw new FssError('EINVAL', `not a usable backing store: ${why}`, { path: store.path });
  }
}

export interface RecoveredTable {
  /** Entries past next cluster, cleared on the store. */
  tornEntries: number;
}

/**
 * Scans the table of a store laid out as `layout` whose header is `header`, clears torn
 * entries on the store, and sets in `copied` (the snapshot's bitmap, empty) every origin
 * cluster the store holds. `buffer` is one cluster of scratch memory.
 */
export async function recoverTable(
  store: BackingStore,
  layout: StoreLayout,
  header: DecodedHeader,
  buffer: Uint8Array,
  copied: CopiedBitmap,
): Promise<RecoveredTable> {
  const damaged = (why: string) =>
    new FssError('EINVAL', `backing store damaged (run fssck): ${why}`, { path: store.path });
  if ((header.flags & STORE_FLAG_TABLE_ZEROED) === 0) {
    throw new FssError(
      'EINVAL',
      'backing store was not made by a persistent unit (its table was not zeroed)',
      {
        path: store.path,
      },
    );
  }
  const { clusterCount } = layout.geometry;
  const mapped = new CopiedBitmap(Math.max(1, header.nextCluster));
  let tornEntries = 0;
  for (let tableCluster = 0; tableCluster < layout.tableClusters; tableCluster++) {
    await readTableCluster(store, layout, tableCluster, true, buffer);
    let torn = false;
    const firstCluster = tableCluster * layout.entriesPerTableCluster;
    for (let index = 0; index < layout.entriesPerTableCluster; index++) {
      const entry = readTableEntry(buffer, index);
      if (entry === 0) continue;
      const cluster = firstCluster + index;
      if (entry >= header.nextCluster || cluster >= clusterCount) {
        writeTableEntry(buffer, index, 0);
        tornEntries += 1;
        torn = true;
        continue;
      }
      if (entry < layout.firstDataCluster) {
        throw damaged(`cluster ${cluster} maps to store cluster ${entry}, inside the header or table`);
      }
      if (mapped.has(entry)) throw damaged(`store cluster ${entry} is mapped twice`);
      mapped.add(entry);
      copied.add(cluster);
    }
    if (torn) await writeTableCluster(store, layout, tableCluster, buffer);
  }
  return { tornEntries };
}
