/**
 * Positioned I/O that always completes: the one pread/pwrite/pwritev loop of fss, used by
 * backing-file's FileBackingStore and blockdev-linux's LinuxBlockDevice.
 *
 * Why a loop. The kernel may transfer less than asked (a signal arrives mid-transfer, one call
 * moves at most 0x7ffff000 bytes, a device splits the request, a pwritev meets the end of a
 * file), and Node passes the short count through. A caller that ignored it would leave the end
 * of a cluster unwritten or unread. EINTR itself never reaches us: libuv retries it. So:
 *
 *   read    call again from where the last call stopped until the target is full; a call
 *           that returns 0 is the end of the file: stop and return the bytes read (the caller
 *           says what the rest means: a sparse file's tail reads as zeroes, a device read is
 *           truncated there)
 *   write   call again until the source is out; a call that returns 0 makes no progress
 *           and is EIO (syscall, path), never an endless loop
 *   writev  the same, resuming inside the buffer where a short write stopped, with at most
 *           IOV_MAX buffers per call
 *
 * No call asks for more than IO_BYTES_MAX bytes (Node refuses lengths over 2 GiB).
 *
 * Why in core, which does no I/O of its own: the two users are siblings (each depends on core
 * alone and neither may depend on the other), and once the syscall is a parameter the loop is
 * pure logic. The caller injects the one primitive the loop calls (`ReadAt`, `WriteAt`,
 * `WritevAt`), made once per open file, so core imports no `fs` and a test drives the loop
 * with a file that moves a few bytes per call.
 *
 * Errors. A rejection of the primitive passes through unchanged: the caller gives its syscall
 * errors their shape (an FssError with syscall and path) once, where it knows both. The loop
 * adds only the error it detects itself, no progress.
 *
 * Cost. These run at gigabytes per second, so they allocate nothing per call beyond the
 * primitive's own promise: no options object, and no array unless a pwritev came back short.
 */
import { assert } from './assert';
import { FssError } from './errors';

/**
 * pread(2) into `buffer[offset, offset + length)` from byte `position` of the file; resolves
 * with the bytes read, 0 at the end of the file.
 */
export type ReadAt = (
  buffer: Uint8Array,
  offset: number,
  length: number,
  position: number,
) => Promise<number>;

/** pwrite(2) of `buffer[offset, offset + length)` at byte `position`; resolves with the bytes written. */
export type WriteAt = (
  buffer: Uint8Array,
  offset: number,
  length: number,
  position: number,
) => Promise<number>;

/** pwritev(2) of `buffers`, back to back, at byte `position`; resolves with the bytes written. */
export type WritevAt = (buffers: readonly Uint8Array[], position: number) => Promise<number>;

/** The most bytes one read or write call is asked for; larger requests take several calls. */
export const IO_BYTES_MAX = 1024 * 1024 * 1024;

/** The most buffers one pwritev(2) takes (Linux's UIO_MAXIOV). */
export const IOV_MAX = 1024;

/**
 * Reads into all of `target` from byte `position`, calling `readAt` until the target is full
 * or the file ends. Returns the bytes read: `target.length`, or less when the file ended first
 * (the bytes past the count are left as they were).
 */
export async function readFully(readAt: ReadAt, target: Uint8Array, position: number): Promise<number> {
  assert(Number.isSafeInteger(position) && position >= 0, `read position ${position} is not a byte offset`);
  let done = 0;
  while (done < target.length) {
    const wanted = Math.min(target.length - done, IO_BYTES_MAX);
    const got = await readAt(target, done, wanted, position + done);
    assert(
      Number.isSafeInteger(got) && got >= 0 && got <= wanted,
      `pread returned ${got} of ${wanted} bytes`,
    );
    if (got === 0) break; // end of file
    done += got;
  }
  assert(done <= target.length, 'the read loop overran its target');
  return done;
}

/**
 * Writes all of `source` at byte `position`, calling `writeAt` until every byte is out. A call
 * that writes nothing fails with EIO (syscall `pwrite`, `path`).
 */
export async function writeFully(
  writeAt: WriteAt,
  source: Uint8Array,
  position: number,
  path?: string,
): Promise<void> {
  assert(Number.isSafeInteger(position) && position >= 0, `write position ${position} is not a byte offset`);
  let done = 0;
  while (done < source.length) {
    const wanted = Math.min(source.length - done, IO_BYTES_MAX);
    const written = await writeAt(source, done, wanted, position + done);
    assert(
      Number.isSafeInteger(written) && written >= 0 && written <= wanted,
      `pwrite returned ${written} of ${wanted} bytes`,
    );
    if (written === 0) throw noProgress('pwrite', position + done, path);
    done += written;
  }
  assert(done === source.length, 'the write loop overran its source');
}

/**
 * Writes `sources` back to back from byte `position`, at most IOV_MAX buffers per `writevAt`
 * call, resuming a short write inside the buffer where it stopped. Empty buffers are allowed.
 * A call that writes nothing fails with EIO (syscall `pwritev`, `path`).
 */
export async function writevFully(
  writevAt: WritevAt,
  sources: readonly Uint8Array[],
  position: number,
  path?: string,
): Promise<void> {
  assert(Number.isSafeInteger(position) && position >= 0, `write position ${position} is not a byte offset`);
  let total = 0;
  for (const source of sources) total += source.length;
  let pending = sources;
  let done = 0;
  while (done < total) {
    const batch = pending.length > IOV_MAX ? pending.slice(0, IOV_MAX) : pending;
    const written = await writevAt(batch, position + done);
    assert(
      Number.isSafeInteger(written) && written >= 0 && written <= total - done,
      `pwritev returned ${written} bytes with ${total - done} to write`,
    );
    if (written === 0) throw noProgress('pwritev', position + done, path);
    done += written;
    if (done < total) pending = dropWritten(pending, written);
  }
  assert(done === total, 'the pwritev loop wrote a different length than asked');
}

/**
 * The buffers still to write once the first `written` bytes of `buffers` are out: whole
 * buffers dropped, a partly written one cut to its unwritten tail (a view, not a copy).
 */
export function dropWritten(buffers: readonly Uint8Array[], written: number): Uint8Array[] {
  assert(Number.isSafeInteger(written) && written >= 0, `written must be a byte count, not ${written}`);
  let skip = written;
  let index = 0;
  while (index < buffers.length && skip >= buffers[index]!.length) {
    skip -= buffers[index]!.length;
    index += 1;
  }
  // Past the last buffer with bytes left over: `written - skip` is everything the buffers hold.
  assert(skip === 0 || index < buffers.length, `${written} bytes written of ${written - skip} asked`);
  const rest = buffers.slice(index);
  if (skip > 0) rest[0] = rest[0]!.subarray(skip);
  return rest;
}

/** A call that transferred nothing: report it instead of looping forever. */
function noProgress(syscall: string, position: number, path: string | undefined): FssError {
  return new FssError('EIO', `${syscall} at ${position} transferred nothing`, { syscall, path });
}
