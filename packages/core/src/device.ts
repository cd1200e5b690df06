/**
 * The two storage interfaces of fss. Both are a handful of async byte-offset methods;
 * capabilities come from what an implementation provides, never from separate config.
 *
 * - A BlockDevice is something with a size that can be read and written: an origin (a Linux
 *   block device or disk image, or the in-memory device), and also what a snapshot or an
 *   origin looks like to the NBD server.
 * - A BackingStore is where a snapshot keeps the clusters it saved: a regular file, a raw
 *   device, or memory.
 *
 * Buffers are caller-owned `Uint8Array`s: the implementation reads into or writes from
 * exactly that memory, so the data path makes no copies of its own. `allocateBuffer`, when
 * present, returns memory the implementation can use without a bounce copy (for O_DIRECT:
 * aligned to the device's direct-I/O alignment).
 *
 * Optional methods are capabilities: a device or store has `discard`, `writeZeroes`,
 * `writev` or `allocateBuffer` only when it can do that, so `x.method !== undefined` is how
 * callers (an NBD export advertising TRIM, the write-back choosing writev) find out. A wrapper
 * passes a capability through exactly when what it wraps has it.
 *
 * `writeZeroesByWriting` is the one fallback for writing zeroes without device support:
 * devices whose zeroing ioctl or fallocate mode is refused use it for the rest.
 */
import { assert } from './assert';
import { checkWriteRange } from './range';
import type { WorkerIo } from './worker-io';

export interface BlockDevice {
  /** Size in bytes; a safe integer. */
  readonly size: number;
  /** Logical sector size in bytes: the smallest unit clients should read or write. */
  readonly logicalSectorSize: number;
  /** True when every write fails with EROFS. */
  readonly readOnly: boolean;
  /**
   * The request size this device serves best, when it has one (a snapshot: its cluster size,
   * since reading part of a cluster costs as much as all of it). Exports advertise it as the
   * preferred block size instead of guessing from the device's class.
   */
  readonly preferredIoSize?: number;
  /**
   * Reads into `target` from byte `offset` and returns the bytes read. A request crossing
   * the end is truncated; a start exactly at the end reads 0 bytes; a start beyond the end is
   * EINVAL.
   */
  read(target: Uint8Array, offset: number): Promise<number>;
  /** Writes all of `source` at byte `offset`; past the end is ENOSPC, read-only is EROFS. */
  write(source: Uint8Array, offset: number): Promise<void>;
  /** Makes completed writes durable. */
  flush(): Promise<void>;
  /**
   * Releases the device once the writes in flight have completed; further calls fail with
   * EBADF. (A snapshot answers as an unconfigured NetBSD fss unit does instead: reads ENXIO,
   * writes EROFS.) Closing twice is harmless.
   */
  close(): Promise<void>;
  /**
   * Deallocates a range (TRIM): afterwards the range reads successfully with unspecified
   * contents, and bytes outside it are unchanged. Read-only is EROFS, past the end ENOSPC.
   */
  discard?(offset: number, length: number): Promise<void>;
  /**
   * Writes zeroes over a range, without sending them where the device can; bytes outside it
   * are unchanged. Read-only is EROFS, past the end ENOSPC (and nothing is zeroed).
   */
  writeZeroes?(offset: number, length: number): Promise<void>;
  /** A buffer this device can read into and write from without a bounce copy. */
  allocateBuffer?(length: number): Uint8Array;
  /**
   * Its descriptor for other threads' positioned I/O, under a gate it controls (worker-io.ts),
   * when it has one: what a server may read and write without calling `read`/`write`.
   */
  workerIo?(): WorkerIo | undefined;
  /**
   * How `[offset, offset + length)` is allocated, as consecutive runs from `offset`: each
   * non-empty, at most `runsMax` of them, together covering at least one byte and at most
   * `length` (a caller wanting the rest asks again from where the answer ended). Only devices
   * that can tell have it (an image file: SEEK_DATA/SEEK_HOLE); without it every byte counts as
   * allocated data, which is always a true answer. Past the end is EINVAL.
   */
  allocation?(offset: number, length: number, runsMax: number): Promise<AllocationRun[]>;
}

/**
 * A run of bytes with one allocation state. `hole`: no storage is allocated to it; `zero`: it
 * reads as zeroes. Both false means "allocated, contents unknown", the answer that is never
 * wrong; a run is only marked when that is known to be true.
 */
export interface AllocationRun {
  readonly length: number;
  readonly hole: boolean;
  readonly zero: boolean;
}

/**
 * Appends a run to `runs`, merging it into the last one when both have the same state (runs
 * from different sources, cluster by cluster, come out as few runs as the states allow).
 */
export function appendRun(runs: AllocationRun[], run: AllocationRun): void {
  assert(Number.isSafeInteger(run.length) && run.length > 0, 'a run is a positive byte count');
  const last = runs.at(-1);
  if (last !== undefined && last.hole === run.hole && last.zero === run.zero) {
    runs[runs.length - 1] = { length: last.length + run.length, hole: run.hole, zero: run.zero };
    return;
  }
  runs.push(run);
}

export interface BackingStore {
  /** The store's block size: file stores use their filesystem's, raw devices their sector size. */
  readonly blockSize: number;
  /** What to call the store in messages (its path), if it has a name. */
  readonly path?: string;
  /**
   * Fills all of `target` from byte `offset`. Bytes never written read as zeroes on stores
   * that are sparse (files, memory) and as whatever was there on raw devices; the engine never
   * depends on either.
   */
  read(target: Uint8Array, offset: number): Promise<void>;
  /** Writes all of `source` at byte `offset`. A full store fails with ENOSPC. */
  write(source: Uint8Array, offset: number): Promise<void>;
  /** Writes `sources` back to back from byte `offset`, in one request where possible. */
  writev?(sources: readonly Uint8Array[], offset: number): Promise<void>;
  /** Makes completed writes durable. */
  flush(): Promise<void>;
  /** Releases the store (closing the file or device). */
  close(): Promise<void>;
  /** A buffer this store can read into and write from without a bounce copy. */
  allocateBuffer?(length: number): Uint8Array;
}

/** Writes back-to-back buffers through `writev` when the store has it, else one by one. */
export async function writeAll(
  store: BackingStore,
  sources: readonly Uint8Array[],
  offset: number,
): Promise<void> {
  if (store.writev !== undefined) {
    await store.writev(sources, offset);
    return;
  }
  let position = offset;
  for (const source of sources) {
    await store.write(source, position);
    position += source.length;
  }
}

/** Bytes of the zero buffer `writeZeroesByWriting` writes at a time unless given its own. */
export const ZERO_CHUNK_BYTES = 1024 * 1024;

/** What `writeZeroesByWriting` needs of a device: its size, `write`, and maybe its memory. */
export interface ZeroWritable {
  readonly size: number;
  /** What to call the device in errors, when it has a name. */
  readonly path?: string;
  write(source: Uint8Array, offset: number): Promise<void>;
  allocateBuffer?(length: number): Uint8Array;
}

/**
 * Writes zeroes over `[offset, offset + length)` of `device` with ordinary writes, one zero
 * buffer at a time: the fallback of a device that cannot zero (part of) a range by itself.
 * Checks the whole range first, so a request crossing the end is ENOSPC with nothing written.
 *
 * The zero buffer is bounded and reused, and only ever read from. It is `zeroChunk` when
 * given (all zeroes; a device whose `write` is not its public one passes memory that write
 * takes without a bounce copy), else ZERO_CHUNK_BYTES made once per device through its
 * `allocateBuffer` (aligned for O_DIRECT), else one buffer shared by every device without it.
 */
export async function writeZeroesByWriting(
  device: ZeroWritable,
  offset: number,
  length: number,
  zeroChunk?: Uint8Array,
): Promise<void> {
  checkWriteRange(device.size, offset, length, device.path);
  if (length === 0) return;
  const zeroes = zeroChunk ?? zeroChunkFor(device);
  assert(zeroes.length > 0, 'a zero chunk holds at least one byte');
  assert(zeroes[0] === 0 && zeroes[zeroes.length - 1] === 0, 'the zero chunk holds only zeroes');
  for (let done = 0; done < length; ) {
    const piece = Math.min(zeroes.length, length - done);
    await device.write(piece === zeroes.length ? zeroes : zeroes.subarray(0, piece), offset + done);
    done += piece;
  }
}

/** Zero chunks made through a device's allocateBuffer, one per device, freed with it. */
const zeroChunks = new WeakMap<ZeroWritable, Uint8Array>();
/** The zero chunk of devices without allocateBuffer; any memory will do for them. */
let sharedZeroChunk: Uint8Array | undefined;

function zeroChunkFor(device: ZeroWritable): Uint8Array {
  if (device.allocateBuffer === undefined) {
    sharedZeroChunk ??= new Uint8Array(ZERO_CHUNK_BYTES);
    return sharedZeroChunk;
  }
  let chunk = zeroChunks.get(device);
  if (chunk === undefined) {
    chunk = device.allocateBuffer(ZERO_CHUNK_BYTES).fill(0);
    assert(chunk.length === ZERO_CHUNK_BYTES, 'allocateBuffer returns the length asked');
    zeroChunks.set(device, chunk);
  }
  return chunk;
}
