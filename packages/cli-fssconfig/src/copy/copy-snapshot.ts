/**
 * One copy of (part of) a snapshot into a target, the path `fss dump` and `fss backup` share:
 * read the ranges with @fss/nbd's readRanges (several requests in flight), hand each piece to
 * the target, count it on the progress reporter; then check that the unit is still the same
 * valid snapshot (a snapshot that turned invalid mid-way fails the copy even if every read
 * happened to succeed); with `verify`, read the same ranges of the snapshot again and compare
 * them with what the target reads back; only then commit. Any failure, or the signal, aborts
 * the target (a new FILE is removed) and stops the progress display.
 */
import { assert, FssError } from '@fss/core';
import { type ByteRange, readRanges } from '@fss/nbd';
import type { Progress } from './progress';
import type { SnapshotSource } from './snapshot-source';
import type { CopyTarget } from './targets';

export const COPY_REQUEST_BYTES = 1024 * 1024;
export const COPY_IN_FLIGHT = 8;

export interface CopyJob {
  readonly source: SnapshotSource;
  /** Sorted, disjoint ranges of the snapshot to copy (the whole of it for a full copy). */
  readonly ranges: readonly ByteRange[];
  readonly target: CopyTarget;
  readonly progress: Progress;
  readonly verify: boolean;
  readonly signal: AbortSignal;
}

export interface CopyResult {
  readonly bytesCopied: number;
}

export async function copySnapshot(job: CopyJob): Promise<CopyResult> {
  const totalBytes = job.ranges.reduce((sum, range) => sum + range.length, 0);
  assert(!job.verify || job.target.readBack !== undefined, 'verify needs a target that reads back');
  const options = { requestBytes: COPY_REQUEST_BYTES, inFlight: COPY_IN_FLIGHT, signal: job.signal };
  try {
    job.progress.begin('copy', totalBytes);
    await readRanges(
      job.source.reader,
      job.ranges,
      async (offset, data) => {
        await job.target.write(offset, data);
        job.progress.advance(data.length);
      },
      options,
    );
    job.progress.end();
    await job.source.checkStillValid();
    if (job.verify) {
      await verifyCopy(job, totalBytes, options);
      await job.source.checkStillValid();
    }
    await job.target.commit();
    return { bytesCopied: totalBytes };
  } catch (error) {
    job.progress.stop();
    job.target.abort();
    throw error;
  }
}

async function verifyCopy(job: CopyJob, totalBytes: number, options: { signal: AbortSignal }): Promise<void> {
  const readBack = job.target.readBack as NonNullable<CopyTarget['readBack']>;
  job.progress.begin('verify', totalBytes);
  await readRanges(
    job.source.reader,
    job.ranges,
    async (offset, expected) => {
      const written = await readBack.call(job.target, offset, expected.length);
      if (!written.equals(expected)) {
        const at = offset + firstDifference(written, expected);
        throw new FssError('EIO', `verify: ${job.target.name} differs from ${job.source.unit} at byte ${at}`);
      }
      job.progress.advance(expected.length);
    },
    { ...options, requestBytes: COPY_REQUEST_BYTES, inFlight: COPY_IN_FLIGHT },
  );
  job.progress.end();
}

function firstDifference(a: Buffer, b: Buffer): number {
  for (let index = 0; index < a.length; index += 1) if (a[index] !== b[index]) return index;
  return a.length;
}
