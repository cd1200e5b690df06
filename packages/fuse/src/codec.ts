/**
 * Reading kernel messages and writing replies, field by field (layouts in abi.ts).
 *
 * Every accessor takes a DataView and the byte offset of the struct inside it, so the same
 * code reads a message in a shared reader slot and writes a reply into a scratch buffer,
 * without copying either. 64-bit fields are two little-endian u32 loads combined into a
 * number and asserted safe (offsets and sizes of a device below 2^53 bytes, request ids the
 * kernel counts up from 1): no BigInt on the hot path.
 */
import { assert } from '@fss/core';
import { FUSE_KERNEL_MINOR_VERSION, FUSE_KERNEL_VERSION, Size } from './abi';

// FUSE speaks the host's byte order; we only support little-endian hosts.
assert(new Uint8Array(new Uint16Array([1]).buffer)[0] === 1, '@fss/fuse needs a little-endian host');

const TWO_32 = 2 ** 32;

/** An unsigned 64-bit field as a number; asserts it is a safe integer. */
export function getU64(view: DataView, at: number): number {
  const value = view.getUint32(at + 4, true) * TWO_32 + view.getUint32(at, true);
  assert(Number.isSafeInteger(value), `u64 field at ${at} is beyond 2^53`);
  return value;
}

/** Stores a non-negative safe integer as an unsigned 64-bit field. */
export function setU64(view: DataView, at: number, value: number): void {
  assert(Number.isSafeInteger(value) && value >= 0, `u64 value ${value} is not a safe non-negative integer`);
  view.setUint32(at, value % TWO_32, true);
  view.setUint32(at + 4, Math.floor(value / TWO_32), true);
}

/** fuse_in_header, decoded. */
export interface InHeader {
  /** Bytes of the whole message, header included. */
  length: number;
  opcode: number;
  unique: number;
  nodeId: number;
  uid: number;
  gid: number;
  pid: number;
}

/** Decodes the header of the message at `at`; `received` is what read(2) returned. */
export function readInHeader(view: DataView, at: number, received: number): InHeader {
  assert(received >= Size.IN_HEADER, `a FUSE message of ${received} bytes has no header`);
  const length = view.getUint32(at, true);
  assert(length === received, `FUSE header says ${length} bytes, read(2) returned ${received}`);
  return {
    length,
    opcode: view.getUint32(at + 4, true),
    unique: getU64(view, at + 8),
    nodeId: getU64(view, at + 16),
    uid: view.getUint32(at + 24, true),
    gid: view.getUint32(at + 28, true),
    pid: view.getUint32(at + 32, true),
  };
}

/** fuse_init_in: what the kernel offers. */
export interface InitIn {
  major: number;
  minor: number;
  maxReadaheadBytes: number;
  flags: number;
}

export function readInitIn(view: DataView, at: number): InitIn {
  return {
    major: view.getUint32(at, true),
    minor: view.getUint32(at + 4, true),
    maxReadaheadBytes: view.getUint32(at + 8, true),
    flags: view.getUint32(at + 12, true),
  };
}

/** fuse_read_in and fuse_write_in share their first fields. */
export interface IoIn {
  fileHandle: number;
  offset: number;
  sizeBytes: number;
  /** read_flags or write_flags. */
  flags: number;
}

export function readIoIn(view: DataView, at: number): IoIn {
  return {
    fileHandle: getU64(view, at),
    offset: getU64(view, at + 8),
    sizeBytes: view.getUint32(at + 16, true),
    flags: view.getUint32(at + 20, true),
  };
}

/** fuse_open_in.flags: the open(2) flags (O_ACCMODE, O_TRUNC, ...). */
export function readOpenFlags(view: DataView, at: number): number {
  return view.getUint32(at, true);
}

/** fuse_setattr_in: the `valid` mask and the size it asks for. */
export function readSetattrIn(view: DataView, at: number): { valid: number; sizeBytes: number } {
  return { valid: view.getUint32(at, true), sizeBytes: getU64(view, at + 16) };
}

/** fuse_interrupt_in.unique: the request to interrupt. */
export function readInterruptIn(view: DataView, at: number): number {
  return getU64(view, at);
}

/** A NUL-terminated name (LOOKUP) in `bytes[start, end)`. */
export function readName(bytes: Uint8Array, start: number, end: number): string {
  const nul = bytes.indexOf(0, start);
  const stop = nul === -1 || nul > end ? end : nul;
  return Buffer.from(bytes.buffer, bytes.byteOffset + start, stop - start).toString('utf8');
}

/** fuse_out_header. `error` is 0 or a negative errno. */
export function writeOutHeader(
  view: DataView,
  at: number,
  length: number,
  error: number,
  unique: number,
): void {
  assert(error <= 0, `reply error ${error} must be 0 or a negative errno`);
  assert(length >= Size.OUT_HEADER, `reply of ${length} bytes is shorter than its header`);
  view.setUint32(at, length, true);
  view.setInt32(at + 4, error, true);
  setU64(view, at + 8, unique);
}

/** What fuse_attr says about an inode. Times are seconds since the epoch. */
export interface Attributes {
  inode: number;
  sizeBytes: number;
  mode: number;
  linkCount: number;
  uid: number;
  gid: number;
  timeSeconds: number;
  blockSizeBytes: number;
}

export function writeAttr(view: DataView, at: number, attr: Attributes): void {
  setU64(view, at, attr.inode);
  setU64(view, at + 8, attr.sizeBytes);
  setU64(view, at + 16, Math.ceil(attr.sizeBytes / 512)); // st_blocks counts 512-byte units
  for (const field of [24, 32, 40]) setU64(view, at + field, attr.timeSeconds); // a, m, ctime
  for (const field of [48, 52, 56]) view.setUint32(at + field, 0, true); // nsec
  view.setUint32(at + 60, attr.mode, true);
  view.setUint32(at + 64, attr.linkCount, true);
  view.setUint32(at + 68, attr.uid, true);
  view.setUint32(at + 72, attr.gid, true);
  view.setUint32(at + 76, 0, true); // rdev
  view.setUint32(at + 80, attr.blockSizeBytes, true);
  view.setUint32(at + 84, 0, true); // flags
}

/** fuse_entry_out (LOOKUP). Validity is how long the kernel may cache name and attributes. */
export function writeEntryOut(view: DataView, at: number, attr: Attributes, validSeconds: number): void {
  setU64(view, at, attr.inode); // nodeid: we use the inode number as the node id
  setU64(view, at + 8, 1); // generation
  setU64(view, at + 16, validSeconds); // entry_valid
  setU64(view, at + 24, validSeconds); // attr_valid
  view.setUint32(at + 32, 0, true);
  view.setUint32(at + 36, 0, true);
  writeAttr(view, at + 40, attr);
}

/** fuse_attr_out (GETATTR, SETATTR). */
export function writeAttrOut(view: DataView, at: number, attr: Attributes, validSeconds: number): void {
  setU64(view, at, validSeconds);
  view.setUint32(at + 8, 0, true);
  view.setUint32(at + 12, 0, true);
  writeAttr(view, at + 16, attr);
}

/** fuse_open_out. */
export function writeOpenOut(view: DataView, at: number, fileHandle: number, openFlags: number): void {
  setU64(view, at, fileHandle);
  view.setUint32(at + 8, openFlags, true);
  view.setUint32(at + 12, 0, true);
}

/** fuse_write_out. */
export function writeWriteOut(view: DataView, at: number, sizeBytes: number): void {
  view.setUint32(at, sizeBytes, true);
  view.setUint32(at + 4, 0, true);
}

/** fuse_init_out: what we accept. */
export interface InitOut {
  maxReadaheadBytes: number;
  flags: number;
  maxBackground: number;
  congestionThreshold: number;
  maxWriteBytes: number;
  maxPages: number;
}

export function writeInitOut(view: DataView, at: number, init: InitOut): void {
  assert(init.maxBackground <= 0xffff && init.congestionThreshold <= init.maxBackground, 'INIT background');
  assert(init.maxPages <= 0xffff && init.maxPages > 0, `INIT max_pages ${init.maxPages}`);
  view.setUint32(at, FUSE_KERNEL_VERSION, true);
  view.setUint32(at + 4, FUSE_KERNEL_MINOR_VERSION, true);
  view.setUint32(at + 8, init.maxReadaheadBytes, true);
  view.setUint32(at + 12, init.flags, true);
  view.setUint16(at + 16, init.maxBackground, true);
  view.setUint16(at + 18, init.congestionThreshold, true);
  view.setUint32(at + 20, init.maxWriteBytes, true);
  view.setUint32(at + 24, 1, true); // time_gran: 1 ns
  view.setUint16(at + 28, init.maxPages, true);
  view.setUint16(at + 30, 0, true); // map_alignment
  for (let field = 32; field < Size.INIT_OUT; field += 4) view.setUint32(at + field, 0, true); // flags2, unused
}

/** fuse_kstatfs, in units of `blockSizeBytes`. */
export function writeStatfsOut(view: DataView, at: number, blockCount: number, blockSizeBytes: number): void {
  setU64(view, at, blockCount); // blocks
  setU64(view, at + 8, 0); // bfree: a device has no free space to offer
  setU64(view, at + 16, 0); // bavail
  setU64(view, at + 24, 1); // files
  setU64(view, at + 32, 0); // ffree
  view.setUint32(at + 40, blockSizeBytes, true); // bsize
  view.setUint32(at + 44, 255, true); // namelen
  view.setUint32(at + 48, blockSizeBytes, true); // frsize
  for (let field = 52; field < Size.STATFS_OUT; field += 4) view.setUint32(at + field, 0, true);
}

/** One fuse_dirent at `at`; returns its padded length. `offset` is the cookie of the next entry. */
export function writeDirent(
  bytes: Uint8Array,
  view: DataView,
  at: number,
  entry: { inode: number; offset: number; type: number; name: string },
): number {
  const name = Buffer.from(entry.name, 'utf8');
  const length = Size.DIRENT + name.length;
  const padded = (length + 7) & ~7;
  setU64(view, at, entry.inode);
  setU64(view, at + 8, entry.offset);
  view.setUint32(at + 16, name.length, true);
  view.setUint32(at + 20, entry.type, true);
  bytes.set(name, at + Size.DIRENT);
  bytes.fill(0, at + length, at + padded);
  return padded;
}
