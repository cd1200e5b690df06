/**
 * Where a copy of a snapshot goes. Three targets, one interface (write pieces in order, then
 * commit or abort):
 *
 * - NewFileTarget (`fss dump fssN FILE`, full `fss backup`): writes into a temporary file
 *   beside FILE (`.FILE.fss-partial-PID`, 0600), skips all-zero blocks (holes stay holes), sizes
 *   it with ftruncate, fsyncs, and renames it over FILE on commit. A failure, a signal or an
 *   invalid snapshot removes the temporary file: FILE is never left half-written, and an old
 *   FILE of that name is kept until the new one is complete.
 * - ExistingFileTarget (incremental `fss backup --since`): writes the changed extents into
 *   FILE in place. A block of zeros is written only where FILE does not already read zero, so
 *   holes of the previous backup stay holes (Node cannot punch a hole into data that became
 *   zero: `fallocate --dig-holes FILE` does). An interrupted update leaves FILE a mix of the old
 *   and the new snapshot; running the same command again completes it (the extents are the
 *   same), which the failure message says.
 * - StreamTarget (`-`): every byte, in order, on stdout, with backpressure; a pipe has no holes.
 */
import { closeSync, constants, fstatSync, openSync, renameSync, unlinkSync } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { assert, FssError, toFssError } from '@fss/core';
import { dataRuns, isAllZero } from './zero-runs';

export interface CopyTarget {
  /** A description for messages: the path, or `stdout`. */
  readonly name: string;
  /** Writes one piece; pieces arrive in increasing offset order. */
  write(offset: number, data: Buffer): Promise<void>;
  /** Everything was written: make it durable and visible. */
  commit(): Promise<void>;
  /** Something failed: undo what can be undone. Never throws; idempotent. */
  abort(): void;
  /** Reads back what was written (--verify); absent for a stream. */
  readBack?(offset: number, length: number): Promise<Buffer>;
}

/** The temporary name a new FILE is written under until it is complete. */
export function partialPath(path: string, pid = process.pid): string {
  return join(dirname(path), `.${basename(path)}.fss-partial-${pid}`);
}

export class NewFileTarget implements CopyTarget {
  private finished = false;

  private constructor(
    readonly name: string,
    private readonly temporary: string,
    private readonly handle: FileHandle,
  ) {}

  /** Refuses a FILE that exists and is not a regular file (a device, a directory): EINVAL. */
  static async create(path: string, size: number): Promise<NewFileTarget> {
    checkRegularOrMissing(path);
    const temporary = partialPath(path);
    const handle = await open(
      temporary,
      constants.O_RDWR | constants.O_CREAT | constants.O_EXCL,
      0o600,
    ).catch((error: unknown) => {
      throw toFssError(error, { syscall: 'open', path: temporary });
    });
    // Sized up front: the file is the snapshot's size from the start, all hole, and verify can
    // read it back before it is renamed.
    await handle.truncate(size).catch(async (error: unknown) => {
      await handle.close();
      unlinkSync(temporary);
      throw toFssError(error, { syscall: 'ftruncate', path });
    });
    return new NewFileTarget(path, temporary, handle);
  }

  readBack(offset: number, length: number): Promise<Buffer> {
    return readExactly(this.handle, offset, length, this.name);
  }

  async write(offset: number, data: Buffer): Promise<void> {
    assert(!this.finished, 'write after commit or abort');
    for (const run of dataRuns(data, offset)) {
      await writeAll(this.handle, data.subarray(run.start - offset, run.end - offset), run.start, this.name);
    }
  }

  async commit(): Promise<void> {
    assert(!this.finished, 'commit twice');
    try {
      await this.handle.sync();
      await this.handle.close();
      renameSync(this.temporary, this.name);
      this.finished = true;
    } catch (error) {
      this.abort();
      throw toFssError(error, { path: this.name });
    }
  }

  abort(): void {
    if (this.finished) return;
    this.finished = true;
    this.handle.close().catch(() => undefined);
    try {
      unlinkSync(this.temporary);
    } catch {
      // Already gone: nothing to undo.
    }
  }
}

export class ExistingFileTarget implements CopyTarget {
  private finished = false;
  private readonly existing: Buffer;

  private constructor(
    readonly name: string,
    private readonly handle: FileHandle,
    pieceBytesMax: number,
  ) {
    this.existing = Buffer.alloc(pieceBytesMax);
  }

  /** FILE must be a regular file of exactly `size` bytes (the previous backup): else EINVAL. */
  static async open(path: string, size: number, pieceBytesMax: number): Promise<ExistingFileTarget> {
    const handle = await open(path, 'r+').catch((error: unknown) => {
      throw toFssError(error, { syscall: 'open', path });
    });
    const stat = await handle.stat();
    if (!stat.isFile() || stat.size !== size) {
      await handle.close();
      const what = stat.isFile() ? `is ${stat.size} bytes, the snapshot ${size}` : 'is not a regular file';
      throw new FssError('EINVAL', `${path} ${what}: --since updates the previous backup of this size`, {
        path,
      });
    }
    return new ExistingFileTarget(path, handle, pieceBytesMax);
  }

  async write(offset: number, data: Buffer): Promise<void> {
    assert(!this.finished, 'write after commit or abort');
    assert(data.length <= this.existing.length, 'a piece larger than announced');
    let at = 0;
    for (const run of dataRuns(data, offset)) {
      await this.writeZerosWhereNeeded(offset + at, run.start - offset - at);
      await writeAll(this.handle, data.subarray(run.start - offset, run.end - offset), run.start, this.name);
      at = run.end - offset;
    }
    await this.writeZerosWhereNeeded(offset + at, data.length - at);
  }

  readBack(offset: number, length: number): Promise<Buffer> {
    return readExactly(this.handle, offset, length, this.name);
  }

  async commit(): Promise<void> {
    assert(!this.finished, 'commit twice');
    this.finished = true;
    await this.handle.sync();
    await this.handle.close();
  }

  abort(): void {
    if (this.finished) return;
    this.finished = true;
    this.handle.close().catch(() => undefined);
  }

  /** A zero run of the snapshot: written only where FILE holds something else. */
  private async writeZerosWhereNeeded(offset: number, length: number): Promise<void> {
    if (length === 0) return;
    const current = this.existing.subarray(0, length);
    const { bytesRead } = await this.handle.read(current, 0, length, offset);
    if (bytesRead === length && isAllZero(current)) return;
    current.fill(0);
    await writeAll(this.handle, current, offset, this.name);
  }
}

export class StreamTarget implements CopyTarget {
  readonly name = 'stdout';

  constructor(private readonly stream: NodeJS.WritableStream) {}

  async write(_offset: number, data: Buffer): Promise<void> {
    const flushed = this.stream.write(data);
    if (!flushed) await waitForDrain(this.stream);
  }

  async commit(): Promise<void> {}

  abort(): void {}
}

function checkRegularOrMissing(path: string): void {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (error) {
    if ((error as { code?: string }).code === 'ENOENT') return;
    throw toFssError(error, { syscall: 'open', path });
  }
  const regular = fstatSync(fd).isFile();
  closeSync(fd);
  if (!regular) {
    throw new FssError(
      'EINVAL',
      `${path} exists and is not a regular file (write to - and redirect instead)`,
      { path },
    );
  }
}

async function writeAll(handle: FileHandle, data: Buffer, offset: number, path: string): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await handle
      .write(data, done, data.length - done, offset + done)
      .catch((error: unknown) => {
        throw toFssError(error, { syscall: 'write', path });
      });
    done += bytesWritten;
  }
}

/** `length` bytes at `offset`; a file shorter than that is EIO (it was sized before). */
async function readExactly(
  handle: FileHandle,
  offset: number,
  length: number,
  path: string,
): Promise<Buffer> {
  const data = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle
      .read(data, done, length - done, offset + done)
      .catch((error: unknown) => {
        throw toFssError(error, { syscall: 'read', path });
      });
    if (bytesRead === 0)
      throw new FssError('EIO', `${path} ended at ${offset + done} while reading it back`, { path });
    done += bytesRead;
  }
  return data;
}

function waitForDrain(stream: NodeJS.WritableStream): Promise<void> {
  return new Promise((resolve, reject) => {
    const onDrain = (): void => {
      stream.off('error', onError);
      resolve();
    };
    const onError = (error: unknown): void => {
      stream.off('drain', onDrain);
      reject(toFssError(error, { syscall: 'write', path: 'stdout' }));
    };
    stream.once('drain', onDrain);
    stream.once('error', onError);
  });
}
