/**
 * In-memory implementations of both storage interfaces: first-class backends for tests and
 * for programs that snapshot a buffer. They keep the same contracts as the Linux ones,
 * errno for errno.
 */
import { assert } from './assert';
import type { BackingStore, BlockDevice } from './device';
import { FssError } from './errors';
import { isPowerOfTwo } from './geometry';
import { checkWriteRange, readableLength } from './range';

export interface MemoryBlockDeviceOptions {
  logicalSectorSize?: number;
  readOnly?: boolean;
  /** Name used in error messages. */
  path?: string;
}

/** A block device held in one buffer. `bytes` is the live contents (tests compare it). */
export class MemoryBlockDevice implements BlockDevice {
  readonly bytes: Uint8Array;
  readonly logicalSectorSize: number;
  readonly readOnly: boolean;
  readonly path: string | undefined;
  private closed = false;

  constructor(sizeOrContents: number | Uint8Array, options: MemoryBlockDeviceOptions = {}) {
    this.bytes = typeof sizeOrContents === 'number' ? new Uint8Array(sizeOrContents) : sizeOrContents;
    this.logicalSectorSize = options.logicalSectorSize ?? 512;
    this.readOnly = options.readOnly ?? false;
    this.path = options.path;
    assert(isPowerOfTwo(this.logicalSectorSize), 'sector size must be a power of two');
  }

  get size(): number {
    return this.bytes.length;
  }

  async read(target: Uint8Array, offset: number): Promise<number> {
    this.checkOpen('read');
    const length = readableLength(this.size, offset, target.length, this.path);
    target.set(this.bytes.subarray(offset, offset + length));
    return length;
  }

  async write(source: Uint8Array, offset: number): Promise<void> {
    this.checkOpen('write');
    if (this.readOnly) throw new FssError('EROFS', undefined, { syscall: 'write', path: this.path });
    checkWriteRange(this.size, offset, source.length, this.path);
    this.bytes.set(source, offset);
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.checkOpen('write');
    if (this.readOnly) throw new FssError('EROFS', undefined, { syscall: 'write', path: this.path });
    checkWriteRange(this.size, offset, length, this.path);
    this.bytes.fill(0, offset, offset + length);
  }

  async discard(offset: number, length: number): Promise<void> {
    await this.writeZeroes(offset, length);
  }

  async flush(): Promise<void> {
    this.checkOpen('fsync');
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  private checkOpen(syscall: string): void {
    if (this.closed) throw new FssError('EBADF', 'device is closed', { syscall, path: this.path });
  }
}

export interface MemoryBackingStoreOptions {
  /** Block size to report (default 512). */
  blockSize?: number;
  /** Writes ending past this many bytes fail with ENOSPC, like a full disk (default: none). */
  capacityBytes?: number;
  path?: string;
}

const PAGE_BYTES = 65536;

/** A sparse backing store in fixed pages; unwritten bytes read as zero. */
export class MemoryBackingStore implements BackingStore {
  readonly blockSize: number;
  readonly capacityBytes: number;
  readonly path: string | undefined;
  /** Bytes written so far, for tests that check write-back happened. */
  bytesWritten = 0;
  private readonly pages = new Map<number, Uint8Array>();
  private closed = false;

  constructor(options: MemoryBackingStoreOptions = {}) {
    this.blockSize = options.blockSize ?? 512;
    this.capacityBytes = options.capacityBytes ?? Number.MAX_SAFE_INTEGER;
    this.path = options.path;
    assert(isPowerOfTwo(this.blockSize), 'block size must be a power of two');
  }

  /** Bytes of memory the pages take. */
  get allocatedBytes(): number {
    return this.pages.size * PAGE_BYTES;
  }

  async read(target: Uint8Array, offset: number): Promise<void> {
    this.checkOpen('read');
    this.copyPages(offset, target.length, (page, pageOffset, at, length) => {
      if (page === undefined) target.fill(0, at, at + length);
      else target.set(page.subarray(pageOffset, pageOffset + length), at);
    });
  }

  async write(source: Uint8Array, offset: number): Promise<void> {
    this.checkOpen('write');
    checkStoreOffset(offset, this.path);
    if (offset + source.length > this.capacityBytes) {
      throw new FssError('ENOSPC', undefined, { syscall: 'write', path: this.path });
    }
    this.copyPages(offset, source.length, (_page, pageOffset, at, length, pageIndex) => {
      let page = this.pages.get(pageIndex);
      if (page === undefined) {
        page = new Uint8Array(PAGE_BYTES);
        this.pages.set(pageIndex, page);
      }
      page.set(source.subarray(at, at + length), pageOffset);
    });
    this.bytesWritten += source.length;
  }

  async flush(): Promise<void> {
    this.checkOpen('fsync');
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Walks the pages covering [offset, offset+length), calling `visit` once per page piece. */
  private copyPages(
    offset: number,
    length: number,
    visit: (
      page: Uint8Array | undefined,
      pageOffset: number,
      at: number,
      length: number,
      pageIndex: number,
    ) => void,
  ): void {
    checkStoreOffset(offset, this.path);
    let at = 0;
    while (at < length) {
      const position = offset + at;
      const pageIndex = Math.floor(position / PAGE_BYTES);
      const pageOffset = position - pageIndex * PAGE_BYTES;
      const pieceLength = Math.min(PAGE_BYTES - pageOffset, length - at);
      visit(this.pages.get(pageIndex), pageOffset, at, pieceLength, pageIndex);
      at += pieceLength;
    }
  }

  private checkOpen(syscall: string): void {
    if (this.closed) throw new FssError('EBADF', 'backing store is closed', { syscall, path: this.path });
  }
}

function checkStoreOffset(offset: number, path: string | undefined): void {
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new FssError('EINVAL', `offset ${offset} is not a byte offset`, { path });
  }
}
