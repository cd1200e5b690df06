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
import { FssError, toFssError } from '@fss/core';
import { type FileBackingStoreOptions, type OpenedFile, openBackingFile } from './open';

/** The most bytes handed to one read or write call; larger requests are split (Node caps at 2 GiB). */
const IO_BYTES_MAX = 1024 * 1024 * 1024;

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
    return this.track('pread', offset, target.length, () => this.readAll(target, offset));
  }

  write(source: Uint8Array, offset: number): Promise<void> {
    return this.track('pwrite', offset, source.length, () => this.writeAll(source, offset));
  }

  writev(sources: readonly Uint8Array[], offset: number): Promise<void> {
    const length = sources.reduce((sum, source) => sum + source.length, 0);
    return this.track('pwritev', offset, length, () => this.writevAll(sources, offset));
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

  /** pread until `target` is full; past the end of the file, zeroes. */
  private async readAll(target: Uint8Array, offset: number): Promise<void> {
    let done = 0;
    while (done < target.length) {
      const wanted = Math.min(target.length - done, IO_BYTES_MAX);
      const { bytesRead } = await this.handle.read(target, done, wanted, offset + done);
      if (bytesRead === 0) {
        target.fill(0, done); // end of file: the sparse tail reads as zeroes
        return;
      }
      done += bytesRead;
    }
  }

  /** pwrite until all of `source` is written. */
  private async writeAll(source: Uint8Array, offset: number): Promise<void> {
    let done = 0;
    while (done < source.length) {
      const wanted = Math.min(source.length - done, IO_BYTES_MAX);
      const { bytesWritten } = await this.handle.write(source, done, wanted, offset + done);
      if (bytesWritten === 0) throw noProgress('pwrite', this.path, offset + done);
      done += bytesWritten;
    }
  }

  /** pwritev until every buffer is written, resuming a short write where it stopped. */
  private async writevAll(sources: readonly Uint8Array[], offset: number): Promise<void> {
    let pending = sources.filter((source) => source.length > 0);
    let position = offset;
    while (pending.length > 0) {
      const { bytesWritten } = await this.handle.writev(pending, position);
      if (bytesWritten === 0) throw noProgress('pwritev', this.path, position);
      position += bytesWritten;
      pending = dropWritten(pending, bytesWritten);
    }
  }
}

/** The buffers still to write after the first `written` bytes of `buffers` went out. */
function dropWritten(buffers: readonly Uint8Array[], written: number): Uint8Array[] {
  let skip = written;
  let index = 0;
  while (index < buffers.length && skip >= buffers[index]!.length) {
    skip -= buffers[index]!.length;
    index += 1;
  }
  const rest = buffers.slice(index);
  if (skip > 0) rest[0] = rest[0]!.subarray(skip);
  return rest;
}

function noProgress(syscall: string, path: string, position: number): FssError {
  return new FssError('EIO', `${syscall} at ${position} wrote nothing`, { syscall, path });
}

/** Opens a FileBackingStore; the same as `FileBackingStore.open`. */
export function openFileBackingStore(
  path: string,
  options: FileBackingStoreOptions = {},
): Promise<FileBackingStore> {
  return FileBackingStore.open(path, options);
}
