/**
 * The backing-store format, version 2: the one place it is defined (SPEC §7). Version 1
 * stores (no commit sequence, no flags) are still read. Everything about
 * where things are on a store lives here: the header and its state, the indirect table's size
 * and place, the first data cluster, the table's entry codec, and the rule that a table
 * cluster never written reads as zero. The engine and fssck only call these.
 *
 * A backing store is a sequence of clusters of the snapshot's cluster size:
 *
 *   cluster 0                      header (below), padded with zeroes to a cluster
 *   clusters 1 .. tableClusters    the indirect table: one little-endian uint32 per origin
 *                                  cluster, the backing-store cluster holding its saved data,
 *                                  0 = not stored (cluster 0 is the header, so 0 is never data);
 *                                  ((clusterCount * 4) >> shift) + 1 clusters, the +1 even on an
 *                                  exact multiple, as fss sizes it
 *   clusters firstDataCluster ..   saved origin clusters, appended in write-back order
 *
 * A table cluster that was never written holds no entries whatever bytes the store has there
 * (a raw device's old contents must never look like entries): it reads as all zeroes without
 * being read. Which table clusters were written is known to the writer of a fresh store.
 *
 * Header layout (all integers little-endian; 512 bytes, so it fits the smallest cluster):
 *
 *   offset size  field
 *   0      8     magic, ASCII "FSSSTORE"
 *   8      4     format version (2; 1 is read too)
 *   12     4     header bytes (512): readers of a later minor layout can skip what they lack
 *   16     4     cluster shift
 *   20     4     state: 1 valid, 2 invalid
 *   24     8     origin size in bytes
 *   32     8     cluster count
 *   40     8     table clusters
 *   48     8     next cluster: the first backing-store cluster not in use
 *   56     8     snapshot time, microseconds since the Unix epoch
 *   64     2     origin identity length n (bytes, <= 190)
 *   66     190   origin identity, UTF-8 (e.g. the path and device number), zero padded
 *   256    2     invalid reason length m (bytes, <= 190)
 *   258    190   invalid reason, UTF-8, zero padded
 *   448    8     commit sequence (v2): how many commits the store has had; a header is written
 *                 last in each commit, so what it says is what the store durably holds
 *   456    4     flags (v2): 1 = the table region was zeroed when the store was made (every
 *                 table cluster may be read, never-written ones read as zero on disk too)
 *   460    48    reserved, zero
 *   508    4     CRC-32 (IEEE) of bytes 0..507
 *
 * A version 1 header reads as commit sequence 0 and no flags.
 *
 * Fields are read and written only through encodeHeader/decodeHeader.
 */
import { assert } from './assert';
import type { BackingStore } from './device';
import { FssError } from './errors';
import type { SnapshotGeometry } from './geometry';

/** Bytes per indirect-table entry (little-endian uint32). */
export const TABLE_ENTRY_BYTES = 4;
/** The header occupies backing-store cluster 0 (SPEC §7). */
export const HEADER_CLUSTERS = 1;

export const STORE_MAGIC = 'FSSSTORE';
export const STORE_FORMAT_VERSION = 2;
/** Format versions decodeHeader reads. */
export const STORE_FORMAT_VERSIONS_READ = [1, 2] as const;
/** Header flag: the table region was zeroed when the store was made. */
export const STORE_FLAG_TABLE_ZEROED = 1;
export const HEADER_BYTES = 512;
export const HEADER_TEXT_BYTES_MAX = 190;

const OFFSET = {
  magic: 0,
  version: 8,
  headerBytes: 12,
  clusterShift: 16,
  state: 20,
  deviceBytes: 24,
  clusterCount: 32,
  tableClusters: 40,
  nextCluster: 48,
  timeMicros: 56,
  identityLength: 64,
  identity: 66,
  reasonLength: 256,
  reason: 258,
  commitSequence: 448,
  flags: 456,
  crc: 508,
} as const;

export type StoreState = 'valid' | 'invalid';
const STATE_CODE: Record<StoreState, number> = { valid: 1, invalid: 2 };

export interface StoreHeader {
  clusterShift: number;
  state: StoreState;
  deviceBytes: number;
  clusterCount: number;
  tableClusters: number;
  nextCluster: number;
  /** Snapshot time in microseconds since the Unix epoch. */
  timeMicros: number;
  /** Which origin this store belongs to (path, device number). */
  originIdentity: string;
  /** Why the snapshot became invalid; empty while valid. */
  invalidReason: string;
  /** Commits the store has had (0 in a version 1 store). */
  commitSequence: number;
  /** STORE_FLAG_* bits (0 in a version 1 store). */
  flags: number;
}

/** Where everything is on a store of this geometry. */
export interface StoreLayout {
  readonly geometry: SnapshotGeometry;
  /** Backing-store clusters holding the indirect table. */
  readonly tableClusters: number;
  /** Indirect-table entries per table cluster. */
  readonly entriesPerTableCluster: number;
  /** The first backing-store cluster that holds data (after header and table). */
  readonly firstDataCluster: number;
}

/** fss's table size: ((clusterCount * 4) >> shift) + 1 clusters. */
export function tableClustersFor(clusterCount: number, clusterShift: number): number {
  return Math.floor((clusterCount * TABLE_ENTRY_BYTES) / 2 ** clusterShift) + 1;
}

export function storeLayout(geometry: SnapshotGeometry): StoreLayout {
  const tableClusters = tableClustersFor(geometry.clusterCount, geometry.clusterShift);
  const entriesPerTableCluster = geometry.clusterSize / TABLE_ENTRY_BYTES;
  assert(Number.isInteger(entriesPerTableCluster), 'a cluster holds whole table entries');
  assert(tableClusters * entriesPerTableCluster >= geometry.clusterCount, 'the table covers every cluster');
  return {
    geometry,
    tableClusters,
    entriesPerTableCluster,
    firstDataCluster: HEADER_CLUSTERS + tableClusters,
  };
}

/** The least a store must hold: the header and the whole indirect table, in bytes. */
export function metadataBytes(layout: StoreLayout): number {
  return layout.firstDataCluster * layout.geometry.clusterSize;
}

/**
 * fsg_bs_size for a store whose first free cluster is `nextCluster`: what NetBSD's sc_clnext
 * counts (the table and the stored data), without our header cluster.
 */
export function netbsdClustersInUse(nextCluster: number): number {
  assert(nextCluster >= HEADER_CLUSTERS, 'the header cluster is always in use');
  return nextCluster - HEADER_CLUSTERS;
}

/** The header of a store laid out as `layout`: valid, or invalid with its reason. */
export function headerFor(
  layout: StoreLayout,
  fields: {
    timeMicros: number;
    originIdentity: string;
    nextCluster: number;
    invalidReason?: string;
    commitSequence?: number;
    flags?: number;
  },
): StoreHeader {
  const { geometry } = layout;
  assert(fields.nextCluster >= layout.firstDataCluster, 'data starts after the table');
  return {
    clusterShift: geometry.clusterShift,
    state: fields.invalidReason === undefined ? 'valid' : 'invalid',
    deviceBytes: geometry.deviceBytes,
    clusterCount: geometry.clusterCount,
    tableClusters: layout.tableClusters,
    nextCluster: fields.nextCluster,
    timeMicros: fields.timeMicros,
    originIdentity: fields.originIdentity,
    invalidReason: fields.invalidReason ?? '',
    commitSequence: fields.commitSequence ?? 0,
    flags: fields.flags ?? 0,
  };
}

/**
 * The header as the block written at offset 0: its 512 bytes zero-padded to `blockBytes`
 * (at least the header, a whole number of store blocks), in memory from `allocate`.
 */
export function encodeHeaderBlock(
  header: StoreHeader,
  blockBytes: number,
  allocate: (length: number) => Uint8Array = (length) => new Uint8Array(length),
): Uint8Array {
  const length = Math.max(HEADER_BYTES, blockBytes);
  const block = allocate(length);
  assert(block.length === length, 'allocate returned the wrong length');
  block.fill(0);
  block.set(encodeHeader(header));
  return block;
}

/** Encodes a header into its 512 bytes. */
export function encodeHeader(header: StoreHeader): Uint8Array {
  const bytes = new Uint8Array(HEADER_BYTES);
  const view = new DataView(bytes.buffer);
  bytes.set(new TextEncoder().encode(STORE_MAGIC), OFFSET.magic);
  view.setUint32(OFFSET.version, STORE_FORMAT_VERSION, true);
  view.setUint32(OFFSET.headerBytes, HEADER_BYTES, true);
  view.setUint32(OFFSET.clusterShift, header.clusterShift, true);
  view.setUint32(OFFSET.state, STATE_CODE[header.state], true);
  setUint64(view, OFFSET.deviceBytes, header.deviceBytes);
  setUint64(view, OFFSET.clusterCount, header.clusterCount);
  setUint64(view, OFFSET.tableClusters, header.tableClusters);
  setUint64(view, OFFSET.nextCluster, header.nextCluster);
  setUint64(view, OFFSET.timeMicros, header.timeMicros);
  writeText(bytes, OFFSET.identityLength, header.originIdentity);
  writeText(bytes, OFFSET.reasonLength, header.invalidReason);
  setUint64(view, OFFSET.commitSequence, header.commitSequence);
  assert(
    Number.isInteger(header.flags) && header.flags >= 0 && header.flags <= 0xffffffff,
    'flags are a u32',
  );
  view.setUint32(OFFSET.flags, header.flags, true);
  view.setUint32(OFFSET.crc, crc32(bytes.subarray(0, OFFSET.crc)), true);
  return bytes;
}

/** A header as read from a store: its fields, and the format version it was written in. */
export interface DecodedHeader extends StoreHeader {
  version: number;
}

/** Decodes and checks a header; EINVAL names what is wrong with it. */
export function decodeHeader(bytes: Uint8Array): DecodedHeader {
  if (bytes.length < HEADER_BYTES) throw badHeader(`only ${bytes.length} bytes`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, HEADER_BYTES);
  const magic = new TextDecoder().decode(bytes.subarray(OFFSET.magic, OFFSET.magic + 8));
  if (magic !== STORE_MAGIC) throw badHeader('bad magic, not an fss backing store');
  const version = view.getUint32(OFFSET.version, true);
  if (!(STORE_FORMAT_VERSIONS_READ as readonly number[]).includes(version)) {
    throw badHeader(`unsupported format version ${version}`);
  }
  const crc = view.getUint32(OFFSET.crc, true);
  if (crc !== crc32(bytes.subarray(0, OFFSET.crc))) throw badHeader('checksum mismatch');
  const stateCode = view.getUint32(OFFSET.state, true);
  const state = (Object.keys(STATE_CODE) as StoreState[]).find((name) => STATE_CODE[name] === stateCode);
  if (state === undefined) throw badHeader(`unknown state ${stateCode}`);
  return {
    version,
    clusterShift: view.getUint32(OFFSET.clusterShift, true),
    state,
    deviceBytes: getUint64(view, OFFSET.deviceBytes),
    clusterCount: getUint64(view, OFFSET.clusterCount),
    tableClusters: getUint64(view, OFFSET.tableClusters),
    nextCluster: getUint64(view, OFFSET.nextCluster),
    timeMicros: getUint64(view, OFFSET.timeMicros),
    originIdentity: readText(bytes, OFFSET.identityLength),
    invalidReason: readText(bytes, OFFSET.reasonLength),
    commitSequence: version >= 2 ? getUint64(view, OFFSET.commitSequence) : 0,
    flags: version >= 2 ? view.getUint32(OFFSET.flags, true) : 0,
  };
}

/** Byte offset of a backing-store cluster. */
export function storeClusterOffset(layout: StoreLayout, storeCluster: number): number {
  return storeCluster * layout.geometry.clusterSize;
}

/** Where an origin cluster's indirect entry lives: which table cluster, which entry in it. */
export function tableLocation(
  layout: StoreLayout,
  cluster: number,
): { tableCluster: number; entryIndex: number } {
  assert(cluster >= 0 && cluster < layout.geometry.clusterCount, `cluster ${cluster} has no table entry`);
  const tableCluster = Math.floor(cluster / layout.entriesPerTableCluster);
  return { tableCluster, entryIndex: cluster - tableCluster * layout.entriesPerTableCluster };
}

/** The backing-store cluster that holds table cluster `tableCluster`. */
export function tableStoreCluster(layout: StoreLayout, tableCluster: number): number {
  assert(
    tableCluster >= 0 && tableCluster < layout.tableClusters,
    `table cluster ${tableCluster} out of range`,
  );
  return HEADER_CLUSTERS + tableCluster;
}

/**
 * Reads table cluster `tableCluster` into `target` (one cluster). One never `written` reads
 * as all zeroes without touching the store: see the file comment.
 */
export async function readTableCluster(
  store: BackingStore,
  layout: StoreLayout,
  tableCluster: number,
  written: boolean,
  target: Uint8Array,
): Promise<void> {
  assert(target.length === layout.geometry.clusterSize, 'a table cluster is one cluster');
  if (!written) {
    target.fill(0);
    return;
  }
  await store.read(target, storeClusterOffset(layout, tableStoreCluster(layout, tableCluster)));
}

/** Writes table cluster `tableCluster` from `source` (one cluster). */
export function writeTableCluster(
  store: BackingStore,
  layout: StoreLayout,
  tableCluster: number,
  source: Uint8Array,
): Promise<void> {
  assert(source.length === layout.geometry.clusterSize, 'a table cluster is one cluster');
  return store.write(source, storeClusterOffset(layout, tableStoreCluster(layout, tableCluster)));
}

export function readTableEntry(tableClusterBytes: Uint8Array, entryIndex: number): number {
  const view = new DataView(tableClusterBytes.buffer, tableClusterBytes.byteOffset, tableClusterBytes.length);
  return view.getUint32(entryIndex * TABLE_ENTRY_BYTES, true);
}

export function writeTableEntry(
  tableClusterBytes: Uint8Array,
  entryIndex: number,
  storeCluster: number,
): void {
  assert(
    Number.isInteger(storeCluster) && storeCluster >= 0 && storeCluster <= 0xffffffff,
    'entry out of uint32 range',
  );
  const view = new DataView(tableClusterBytes.buffer, tableClusterBytes.byteOffset, tableClusterBytes.length);
  view.setUint32(entryIndex * TABLE_ENTRY_BYTES, storeCluster, true);
}

function badHeader(why: string): FssError {
  return new FssError('EINVAL', `backing store header: ${why}`);
}

function setUint64(view: DataView, offset: number, value: number): void {
  assert(Number.isSafeInteger(value) && value >= 0, `header field ${value} is not a uint64 we can hold`);
  view.setBigUint64(offset, BigInt(value), true);
}

function getUint64(view: DataView, offset: number): number {
  const value = view.getBigUint64(offset, true);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw badHeader(`field at ${offset} exceeds 2^53`);
  return Number(value);
}

/** A length-prefixed UTF-8 text, cut at a character boundary to HEADER_TEXT_BYTES_MAX. */
function writeText(bytes: Uint8Array, lengthOffset: number, text: string): void {
  let encoded = new TextEncoder().encode(text);
  if (encoded.length > HEADER_TEXT_BYTES_MAX) {
    let end = HEADER_TEXT_BYTES_MAX;
    while (end > 0 && (encoded[end]! & 0xc0) === 0x80) end -= 1; // back off a continuation byte
    encoded = encoded.subarray(0, end);
  }
  new DataView(bytes.buffer, bytes.byteOffset).setUint16(lengthOffset, encoded.length, true);
  bytes.set(encoded, lengthOffset + 2);
}

function readText(bytes: Uint8Array, lengthOffset: number): string {
  const length = new DataView(bytes.buffer, bytes.byteOffset).getUint16(lengthOffset, true);
  if (length > HEADER_TEXT_BYTES_MAX) throw badHeader(`text field of ${length} bytes`);
  return new TextDecoder().decode(bytes.subarray(lengthOffset + 2, lengthOffset + 2 + length));
}

let crcTable: Uint32Array | undefined;

/** CRC-32 (IEEE 802.3, reflected, as zlib's crc32). */
export function crc32(bytes: Uint8Array): number {
  if (crcTable === undefined) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) crc = crcTable[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}
