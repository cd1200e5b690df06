/**
 * The backing-store format, version 1: the one place it is defined (SPEC §7).
 *
 * A backing store is a sequence of clusters of the snapshot's cluster size:
 *
 *   cluster 0                      header (this file), padded with zeroes to a cluster
 *   clusters 1 .. tableClusters    the indirect table: one little-endian uint32 per origin
 *                                  cluster, the backing-store cluster holding its saved data,
 *                                  0 = not stored (cluster 0 is the header, so 0 is never data)
 *   clusters firstDataCluster ..   saved origin clusters, appended in write-back order
 *
 * Header layout (all integers little-endian; 512 bytes, so it fits the smallest cluster):
 *
 *   offset size  field
 *   0      8     magic, ASCII "FSSSTORE"
 *   8      4     format version (1)
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
 *   448    60    reserved, zero
 *   508    4     CRC-32 (IEEE) of bytes 0..507
 *
 * Fields are read and written only through encodeHeader/decodeHeader.
 */
import { assert } from './assert';
import { FssError } from './errors';
import { HEADER_CLUSTERS, type SnapshotGeometry, TABLE_ENTRY_BYTES } from './geometry';

export const STORE_MAGIC = 'FSSSTORE';
export const STORE_FORMAT_VERSION = 1;
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
}

export function headerFromGeometry(
  geometry: SnapshotGeometry,
  fields: { timeMicros: number; originIdentity: string; nextCluster: number },
): StoreHeader {
  return {
    clusterShift: geometry.clusterShift,
    state: 'valid',
    deviceBytes: geometry.deviceBytes,
    clusterCount: geometry.clusterCount,
    tableClusters: geometry.tableClusters,
    nextCluster: fields.nextCluster,
    timeMicros: fields.timeMicros,
    originIdentity: fields.originIdentity,
    invalidReason: '',
  };
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
  view.setUint32(OFFSET.crc, crc32(bytes.subarray(0, OFFSET.crc)), true);
  return bytes;
}

/** Decodes and checks a header; EINVAL names what is wrong with it. */
export function decodeHeader(bytes: Uint8Array): StoreHeader {
  if (bytes.length < HEADER_BYTES) throw badHeader(`only ${bytes.length} bytes`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, HEADER_BYTES);
  const magic = new TextDecoder().decode(bytes.subarray(OFFSET.magic, OFFSET.magic + 8));
  if (magic !== STORE_MAGIC) throw badHeader('bad magic, not an fss backing store');
  const version = view.getUint32(OFFSET.version, true);
  if (version !== STORE_FORMAT_VERSION) throw badHeader(`unsupported format version ${version}`);
  const crc = view.getUint32(OFFSET.crc, true);
  if (crc !== crc32(bytes.subarray(0, OFFSET.crc))) throw badHeader('checksum mismatch');
  const stateCode = view.getUint32(OFFSET.state, true);
  const state = (Object.keys(STATE_CODE) as StoreState[]).find((name) => STATE_CODE[name] === stateCode);
  if (state === undefined) throw badHeader(`unknown state ${stateCode}`);
  return {
    clusterShift: view.getUint32(OFFSET.clusterShift, true),
    state,
    deviceBytes: getUint64(view, OFFSET.deviceBytes),
    clusterCount: getUint64(view, OFFSET.clusterCount),
    tableClusters: getUint64(view, OFFSET.tableClusters),
    nextCluster: getUint64(view, OFFSET.nextCluster),
    timeMicros: getUint64(view, OFFSET.timeMicros),
    originIdentity: readText(bytes, OFFSET.identityLength),
    invalidReason: readText(bytes, OFFSET.reasonLength),
  };
}

/** Byte offset of a backing-store cluster. */
export function storeClusterOffset(geometry: SnapshotGeometry, storeCluster: number): number {
  return storeCluster * geometry.clusterSize;
}

/** Where an origin cluster's indirect entry lives: which table cluster, which entry in it. */
export function tableLocation(
  geometry: SnapshotGeometry,
  cluster: number,
): { tableCluster: number; entryIndex: number } {
  assert(cluster >= 0 && cluster < geometry.clusterCount, `cluster ${cluster} has no table entry`);
  const tableCluster = Math.floor(cluster / geometry.entriesPerTableCluster);
  return { tableCluster, entryIndex: cluster - tableCluster * geometry.entriesPerTableCluster };
}

/** The backing-store cluster that holds table cluster `tableCluster`. */
export function tableStoreCluster(geometry: SnapshotGeometry, tableCluster: number): number {
  assert(
    tableCluster >= 0 && tableCluster < geometry.tableClusters,
    `table cluster ${tableCluster} out of range`,
  );
  return HEADER_CLUSTERS + tableCluster;
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
