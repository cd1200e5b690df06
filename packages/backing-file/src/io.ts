/**
 * Positioned I/O that always completes: pread, pwrite and pwritev repeated until the whole
 * request is transferred.
 *
 * The kernel may transfer less than asked (a signal arrives, a request exceeds the
 * 0x7ffff000-byte cap per call, a pipe of buffers is longer than IOV_MAX), and Node passes
 * that through. A store that ignored it would leave the end of a cluster unwritten or unread.
 * So every call loops; a read that reaches the end of the file zero-fills the rest (the file
 * is sparse, and a hole past its end reads as zeroes); a write that makes no progress is EIO
 * rather than an endless loop.
 *
 * The functions take the three FileHandle methods they use, so tests can drive them with a
 * file that transfers a few bytes at a time.
 */
import { assert, FssError } from '@fss/core';

/** The part of node:fs/promises FileHandle used here. */
export interface PositionalFile {
  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
  write(
    buffer: Uint8Array,
    offset: number,
    length: number,
    position: number,
  ): Promise<{ bytesWritten: number }>;
  writev(buffers: Uint8Array[], position: number): Promise<{ bytesWritten: number }>;
}

/** The most bytes handed to one call; larger requests are split (Node refuses over 2 GiB). */
export const IO_BYTES_MAX = 1024 * 1024 * 1024;

/** Fills all of `target` from `offset`; bytes past the end of the file read as zeroes. */
export async function preadFully(file: PositionalFile, target: Uint8Array, offset: number): Promise<void> {
  let done = 0;
  while (done < target.length) {
    const wanted = Math.min(target.length - done, IO_BYTES_MAX);
    const { bytesRead } = await file.read(target, done, wanted, offset + done);
    assert(bytesRead >= 0 && bytesRead <= wanted, `pread returned ${bytesRead} of ${wanted} bytes`);
    if (bytesRead === 0) {
      target.fill(0, done); // end of file: the sparse tail reads as zeroes
      return;
    }
    done += bytesRead;
  }
  assert(done === target.length, 'pread loop overran its target');
}

/** Writes all of `source` at `offset`. */
export async function pwriteFully(
  file: PositionalFile,
  source: Uint8Array,
  offset: number,
  path?: string,
): Promise<void> {
  let done = 0;
  while (done < source.length) {
    const wanted = Math.min(source.length - done, IO_BYTES_MAX);
    const { bytesWritten } = await file.write(source, done, wanted, offset + done);
    assert(bytesWritten >= 0 && bytesWritten <= wanted, `pwrite returned ${bytesWritten} of ${wanted}`);
    if (bytesWritten === 0) throw noProgress('pwrite', offset + done, path);
    done += bytesWritten;
  }
  assert(done === source.length, 'pwrite loop overran its source');
}

/** Writes `sources` back to back from `offset`, resuming a short write where it stopped. */
export async function pwritevFully(
  file: PositionalFile,
  sources: readonly Uint8Array[],
  offset: number,
  path?: string,
): Promise<void> {
  let pending = sources.filter((source) => source.length > 0);
  let position = offset;
  while (pending.length > 0) {
    const { bytesWritten } = await file.writev(pending, position);
    if (bytesWritten === 0) throw noProgress('pwritev', position, path);
    position += bytesWritten;
    pending = dropWritten(pending, bytesWritten);
  }
  const total = sources.reduce((sum, source) => sum + source.length, 0);
  assert(position === offset + total, 'pwritev loop wrote a different length than asked');
}

/**
 * The buffers still to write once the first `written` bytes of `buffers` are out: whole
 * buffers dropped, a partly written one cut to its unwritten tail (a view, not a copy).
 */
export function dropWritten(buffers: readonly Uint8Array[], written: number): Uint8Array[] {
  const total = buffers.reduce((sum, buffer) => sum + buffer.length, 0);
  assert(Number.isSafeInteger(written) && written >= 0, `written must be a byte count, not ${written}`);
  assert(written <= total, `${written} bytes written of ${total} asked`);
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

/** A call that transferred nothing: report it instead of looping forever. */
function noProgress(syscall: string, position: number, path: string | undefined): FssError {
  return new FssError('EIO', `${syscall} at ${position} transferred nothing`, { syscall, path });
}
