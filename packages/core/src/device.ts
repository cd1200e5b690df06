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
 */

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
  /** Releases the device; further calls fail with EBADF. */
  close(): Promise<void>;
  /** Deallocates a range (TRIM); contents of the range are then unspecified. */
  discard?(offset: number, length: number): Promise<void>;
  /** Writes zeroes over a range without sending them. */
  writeZeroes?(offset: number, length: number): Promise<void>;
  /** A buffer this device can read into and write from without a bounce copy. */
  allocateBuffer?(length: number): Uint8Array;
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
