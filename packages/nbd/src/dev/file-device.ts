/**
 * A minimal BlockDevice over an image file, for the development binary and the tests only
 * (not exported: @fss/blockdev-linux owns real devices and images, with O_DIRECT and claims).
 *
 * Buffered I/O through a FileHandle: reads and writes loop until complete (the kernel may
 * return short counts), flush is fdatasync, discard is a no-op (TRIM is advisory and its
 * contents unspecified). No writeZeroes: the server's WRITE_ZEROES falls back to writing zero
 * buffers (commands.ts).
 */
import { promises as fs, read, write } from 'node:fs';
import { assert, type BlockDevice, checkWriteRange, FssError, readableLength, toFssError } from '@fss/core';

/*
 * fs.read/fs.write on the handle's fd, not FileHandle.read/write: the callback API costs
 * measurably less per call, and at 256 KiB requests and gigabytes per second the per-call cost
 * is what separates us from a C server. The FileHandle still owns (and closes) the fd.
 */
function readAt(
  fd: number,
  target: Uint8Array,
  at: number,
  length: number,
  position: number,
): Promise<number> {
  return new Promise((resolve, reject) => {
    read(fd, target, at, length, position, (error, bytesRead) =>
      error === null ? resolve(bytesRead) : reject(error),
    );
  });
}

function writeAt(
  fd: number,
  source: Uint8Array,
  at: number,
  length: number,
  position: number,
): Promise<number> {
  return new Promise((resolve, reject) => {
    write(fd, source, at, length, position, (error, bytesWritten) =>
      error === null ? resolve(bytesWritten) : reject(error),
    );
  });
}

export interface FileBlockDeviceOptions {
  readOnly?: boolean;
  logicalSectorSize?: number;
}

export class FileBlockDevice implements BlockDevice {
  readonly logicalSectorSize: number;
  private closed = false;

  private constructor(
    private readonly handle: fs.FileHandle,
    readonly path: string,
    readonly size: number,
    readonly readOnly: boolean,
    logicalSectorSize: number,
  ) {
    this.logicalSectorSize = logicalSectorSize;
  }

  static async open(path: string, options: FileBlockDeviceOptions = {}): Promise<FileBlockDevice> {
    const readOnly = options.readOnly ?? false;
    let handle: fs.FileHandle;
    try {
      handle = await fs.open(path, readOnly ? 'r' : 'r+');
    } catch (error) {
      throw toFssError(error, { syscall: 'open', path });
    }
    const { size } = await handle.stat();
    return new FileBlockDevice(handle, path, size, readOnly, options.logicalSectorSize ?? 512);
  }

  async read(target: Uint8Array, offset: number): Promise<number> {
    this.checkOpen('read');
    const length = readableLength(this.size, offset, target.length, this.path);
    let done = 0;
    while (done < length) {
      const bytesRead = await this.io('read', () =>
        readAt(this.handle.fd, target, done, length - done, offset + done),
      );
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    assert(done <= length, 'read no more than asked');
    return done;
  }

  async write(source: Uint8Array, offset: number): Promise<void> {
    this.checkOpen('write');
    if (this.readOnly) throw new FssError('EROFS', undefined, { syscall: 'write', path: this.path });
    checkWriteRange(this.size, offset, source.length, this.path);
    let done = 0;
    while (done < source.length) {
      const bytesWritten = await this.io('write', () =>
        writeAt(this.handle.fd, source, done, source.length - done, offset + done),
      );
      assert(bytesWritten > 0, 'a regular file write makes progress');
      done += bytesWritten;
    }
  }

  async discard(offset: number, length: number): Promise<void> {
    this.checkOpen('fallocate');
    if (this.readOnly) throw new FssError('EROFS', undefined, { syscall: 'fallocate', path: this.path });
    checkWriteRange(this.size, offset, length, this.path);
  }

  async flush(): Promise<void> {
    this.checkOpen('fdatasync');
    if (!this.readOnly) await this.io('fdatasync', () => this.handle.datasync());
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close();
  }

  private async io<T>(syscall: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (error) {
      throw toFssError(error, { syscall, path: this.path });
    }
  }

  private checkOpen(syscall: string): void {
    if (this.closed) throw new FssError('EBADF', 'device is closed', { syscall, path: this.path });
  }
}
