/**
 * Reads byte ranges of an export in order, with several requests in flight: the one reader
 * `fss dump` and `fss backup` share.
 *
 * Ranges are cut into requests of at most `requestBytes` (aligned to multiples of it, so a
 * long range reads in equal pieces). Up to `inFlight` requests are outstanding at once, so the
 * server works on the next pieces while the sink writes the current one; the sink sees the
 * pieces strictly in order (a stream such as stdout needs that, and a file does not mind), one
 * at a time, and the next piece is handed over only once the sink's promise resolved. The
 * memory held is bounded by `inFlight × requestBytes`.
 *
 * The first failure (a read, or the sink) stops the issuing of requests, waits for those in
 * flight to settle (their results are dropped), and rejects with that failure; an aborted
 * `signal` is a failure with ECANCELED.
 */
import { assert, FssError } from '@fss/core';

/** A half-open byte range [offset, offset + length). */
export interface ByteRange {
  readonly offset: number;
  readonly length: number;
}

/** What readRanges needs of a client: NbdClient, or a test double. */
export interface RangeSource {
  readonly size: number;
  read(offset: number, length: number): Promise<Buffer>;
}

export interface ReadRangesOptions {
  /** Largest single request (default 1 MiB). */
  readonly requestBytes?: number;
  /** Requests outstanding at once (default 8). */
  readonly inFlight?: number;
  readonly signal?: AbortSignal;
}

export const READ_REQUEST_BYTES_DEFAULT = 1024 * 1024;
export const READ_IN_FLIGHT_DEFAULT = 8;

/** The sink: called once per piece, in order; may be async (backpressure). */
export type RangeSink = (offset: number, data: Buffer) => void | Promise<void>;

export async function readRanges(
  source: RangeSource,
  ranges: readonly ByteRange[],
  sink: RangeSink,
  options: ReadRangesOptions = {},
): Promise<void> {
  const requestBytes = options.requestBytes ?? READ_REQUEST_BYTES_DEFAULT;
  const inFlight = options.inFlight ?? READ_IN_FLIGHT_DEFAULT;
  assert(Number.isSafeInteger(requestBytes) && requestBytes > 0, 'requestBytes must be a positive integer');
  assert(Number.isSafeInteger(inFlight) && inFlight > 0, 'inFlight must be a positive integer');
  const pieces = splitRanges(ranges, requestBytes, source.size);
  const window: Promise<Buffer>[] = [];
  let next = 0;
  const issue = (): void => {
    while (window.length < inFlight && next < pieces.length) {
      const piece = pieces[next++] as ByteRange;
      const read = source.read(piece.offset, piece.length);
      read.catch(() => undefined); // settled below; never an unhandled rejection meanwhile
      window.push(read);
    }
  };
  try {
    for (let index = 0; index < pieces.length; index += 1) {
      if (options.signal?.aborted === true) throw cancelled(options.signal);
      issue();
      const data = await (window.shift() as Promise<Buffer>);
      const piece = pieces[index] as ByteRange;
      assert(data.length === piece.length, 'a read returned the wrong length');
      await sink(piece.offset, data);
    }
  } finally {
    await Promise.allSettled(window);
  }
}

/**
 * The requests for `ranges`: each range cut at multiples of `requestBytes`. Preconditions:
 * ranges are sorted, do not overlap and lie inside [0, size).
 */
export function splitRanges(ranges: readonly ByteRange[], requestBytes: number, size: number): ByteRange[] {
  const pieces: ByteRange[] = [];
  let previousEnd = 0;
  for (const range of ranges) {
    assert(
      Number.isSafeInteger(range.offset) && range.offset >= previousEnd,
      'ranges must be sorted and disjoint',
    );
    assert(range.length >= 0 && range.offset + range.length <= size, 'a range lies outside the export');
    const end = range.offset + range.length;
    let at = range.offset;
    while (at < end) {
      const boundary = (Math.floor(at / requestBytes) + 1) * requestBytes;
      const pieceEnd = Math.min(end, boundary);
      pieces.push({ offset: at, length: pieceEnd - at });
      at = pieceEnd;
    }
    previousEnd = end;
  }
  return pieces;
}

function cancelled(signal: AbortSignal): FssError {
  const reason = signal.reason instanceof Error ? signal.reason.message : String(signal.reason ?? 'aborted');
  return new FssError('ECANCELED', `reading was cancelled (${reason})`);
}
