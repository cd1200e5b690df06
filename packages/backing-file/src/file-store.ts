/**
 * FileBackingStore: a BackingStore on a regular file.
 *
 * Design notes:
 * - Sparse by construction. Nothing is preallocated; a cluster takes space when the engine
 *   first writes it, and bytes never written (holes, or past the end of the file) read as
 *   zeroes, which is what BackingStore promises for sparse stores.
 * - Positioned I/O only (pread/pwrite/pwritev through Node's FileHandle), so concurrent
 *   requests never share a file offset. The kernel may transfer less than asked (a signal, the
 *   0x7ffff000-byte cap per call); every call is looped until it is complete, as
 *   random-access-file does. A read that reaches the end of the file zero-fills the rest.
 * - Errors are FssErrors with the syscall and the path; the errno is the kernel's (ENOSPC,
 *   EIO, EFBIG, EDQUOT stay what they are). A write that fails part-way may have written a
 *   prefix of its range (a full filesystem does that); the engine invalidates the snapshot on
 *   any store write error, so it never reads such a range back.
 * - Close waits for the requests already in flight, then closes the descriptor: a request
 *   accepted before close completes, one issued after it fails with EBADF.
 */
import type { FileHandle } from 'node:fs/promises';
import type { BackingStore } from '@fss/core';
import { assert, FssError, isPowerOfTwo, toFssError } from '@fss/core';
import { preadFully, pwriteFully, pwritevFully } from './io';
import { type FileBackingStoreOptions, type OpenedFile, openBackingFile } from './open';

/** Apparent and allocated size of the file, as fstat reports them. */
export interface FileBackingStoreStat {
  /** The file's length (st_size). */
  sizeBytes: number;
  /** Space actually allocated to it (st_blocks × 512): far below sizeBytes when sparse. */
  allocatedBytes: number;
}

export class FileBackingStore implements BackingStore {
  /** The filesystem's block size (fstatfs f_bsize), a power of two. */
  readonly blockSize: number;
  /** The path the store was opened at (kept for messages after unlinkOnOpen). */
  readonly path: string;
  /** True when `open` created the file, false when it opened an existing one. */
  readonly created: boolean;
  /** True when the path was unlinked once open (unlinkOnOpen). */
  readonly unlinked: boolean;
  private readonly handle: FileHandle;
  private readonly inFlight = new Set<Promise<unknown>>();
  private closing: Promise<void> | undefined;

  private constructor(path: string, opened: OpenedFile) {
    this.path = path;
    this.handle = opened.handle;
    this.blockSize = opened.blockSize;
    this.created = opened.created;
    this.unlinked = opened.unlinked;
    assert(isPowerOfTwo(this.blockSize) && this.blockSize >= 512, `block size ${this.blockSize}`);
  }

  /**
   * Opens (by default: creates, mode 0600) the backing file at `path`. See
   * FileBackingStoreOptions for reusing an existing file, sizing it, and unlinking it.
   */
  static async open(path: string, options: FileBackingStoreOptions = {}): Promise<FileBackingStore> {
    const opened = await openBackingFile(path, options);
    return new FileBackingStore(path, opened);
  }

  /** True once close has been called. */
  get isClosed(): boolean {
    return this.closing !== undefined;
  }

  read(target: Uint8Array, offset: number): Promise<void> {
    return this.track('pread', offset, target.length, () => preadFully(this.handle, target, offset));
  }

  write(source: Uint8Array, offset: number): Promise<void> {
    return this.track('pwrite', offset, source.length, () =>
      pwriteFully(this.handle, source, offset, this.path),
    );
  }

  writev(sources: readonly Uint8Array[], offset: number): Promise<void> {
    const length = sources.reduce((sum, source) => sum + source.length, 0);
    return this.track('pwritev', offset, length, () => pwritevFully(this.handle, sources, offset, this.path));
  }

  flush(): Promise<void> {
    return this.track('fdatasync', 0, 0, async () => {
      await this.handle.datasync();
    });
  }

  /** fstat: the file's apparent and allocated size. */
  stat(): Promise<FileBackingStoreStat> {
    return this.track('fstat', 0, 0, async () => {
      const stats = await this.handle.stat();
      return { sizeBytes: stats.size, allocatedBytes: stats.blocks * 512 };
    });
  }

  /** Waits for requests in flight, then closes the file. Calling it again is harmless. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await Promise.allSettled([...this.inFlight]);
      try {
        await this.handle.close();
      } catch (error) {
        throw toFssError(error, { syscall: 'close', path: this.path });
      }
    })();
    return this.closing;
  }

  /**
   * Runs one request: checks the store is open and the range is a byte range, keeps the
   * request in `inFlight` until it settles, and turns whatever it throws into an FssError.
   */
  private track<T>(syscall: string, offset: number, length: number, run: () => Promise<T>): Promise<T> {
    if (this.closing !== undefined) {
      return Promise.reject(new FssError('EBADF', 'backing store is closed', { syscall, path: this.path }));
    }
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(offset + length)) {
      return Promise.reject(
        new FssError('EINVAL', `offset ${offset} (length ${length}) is not a byte range`, {
          syscall,
          path: this.path,
        }),
      );
    }
    const request = run().catch((error: unknown) => {
      throw toFssError(error, { syscall, path: this.path });
    });
    this.inFlight.add(request);
    const forget = () => this.inFlight.delete(request);
    request.then(forget, forget);
    return request;
  }
}

/** Opens a FileBackingStore; the same as `FileBackingStore.open`. */
export function openFileBackingStore(
  path: string,
  options: FileBackingStoreOptions = {},
): Promise<FileBackingStore> {
  return FileBackingStore.open(path, options);
}
