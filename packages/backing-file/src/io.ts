/**
 * Positioned I/O that always completes, on a FileHandle: pread, pwrite and pwritev repeated
 * until the whole request is transferred.
 *
 * The loops are @fss/core's (readFully, writeFully, writevFully: the one implementation
 * fss has, shared with blockdev-linux; see positioned-io.ts there for why a short transfer
 * must be continued). This file only adapts a FileHandle to them, and adds the backing
 * store's one rule of its own: a read that reaches the end of the file zero-fills the rest
 * (the file is sparse, and a hole past its end reads as zeroes).
 *
 * The adapters are made once per FileHandle and kept in a WeakMap, so a request allocates
 * nothing of ours beyond the loop itself. The functions take the three FileHandle methods
 * they use (PositionalFile), so tests can drive them with a file that transfers a few bytes
 * at a time.
 */
import {
  assert,
  type ReadAt,
  readFully,
  type WriteAt,
  type WritevAt,
  writeFully,
  writevFully,
} from '@fss/core';

/** The part of node:fs/promises FileHandle used here. */
export interface PositionalFile {
  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
  write(
    buffer: Uint8Array,
    offset: number,
    length: number,
    position: number,
  ): Promise<{ bytesWritten: number }>;
  writev(buffers: readonly Uint8Array[], position: number): Promise<{ bytesWritten: number }>;
}

/** The core loop's primitives on one file. */
interface Primitives {
  readonly readAt: ReadAt;
  readonly writeAt: WriteAt;
  readonly writevAt: WritevAt;
}

const primitivesOfFile = new WeakMap<PositionalFile, Primitives>();

const bytesRead = (result: { bytesRead: number }): number => result.bytesRead;
const bytesWritten = (result: { bytesWritten: number }): number => result.bytesWritten;

function primitivesOf(file: PositionalFile): Primitives {
  let primitives = primitivesOfFile.get(file);
  if (primitives === undefined) {
    primitives = {
      readAt: (buffer, offset, length, position) =>
        file.read(buffer, offset, length, position).then(bytesRead),
      writeAt: (buffer, offset, length, position) =>
        file.write(buffer, offset, length, position).then(bytesWritten),
      writevAt: (buffers, position) => file.writev(buffers, position).then(bytesWritten),
    };
    primitivesOfFile.set(file, primitives);
  }
  return primitives;
}

/** Fills all of `target` from `offset`; bytes past the end of the file read as zeroes. */
export async function preadFully(file: PositionalFile, target: Uint8Array, offset: number): Promise<void> {
  const done = await readFully(primitivesOf(file).readAt, target, offset);
  assert(done <= target.length, 'pread loop overran its target');
  if (done < target.length) target.fill(0, done); // end of file: the sparse tail reads as zeroes
}

/** Writes all of `source` at `offset`; a write that makes no progress is EIO naming `path`. */
export function pwriteFully(
  file: PositionalFile,
  source: Uint8Array,
  offset: number,
  path?: string,
): Promise<void> {
  return writeFully(primitivesOf(file).writeAt, source, offset, path);
}

/** Writes `sources` back to back from `offset`, resuming a short write where it stopped. */
export function pwritevFully(
  file: PositionalFile,
  sources: readonly Uint8Array[],
  offset: number,
  path?: string,
): Promise<void> {
  return writevFully(primitivesOf(file).writevAt, sources, offset, path);
}
