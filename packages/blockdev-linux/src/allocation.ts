/**
 * Where a regular file has storage: SEEK_DATA and SEEK_HOLE (lseek(2)), as runs of
 * `AllocationRun`s. This is how an image-file origin reports its holes over NBD
 * (base:allocation) instead of calling every byte data.
 *
 *   pos ──SEEK_DATA──▶ d      d > pos: [pos, d) is a hole;  ENXIO: no data from pos to EOF
 *   pos ──SEEK_HOLE──▶ h      [pos, h) is data (every file has a virtual hole at EOF)
 *
 * A hole of a regular file reads as zeroes, so holes are reported `hole` and `zero`; data is
 * "allocated, contents unknown" (we never read it to find out). Filesystems that cannot tell
 * (EINVAL or EOPNOTSUPP from SEEK_DATA; Linux's generic fallback calls everything data anyway)
 * get data for the rest of the range: always a true answer.
 *
 * The answer is a moment's view: a write or a punched hole may change it right after. Callers
 * that need it to describe a point in time (a snapshot's uncopied clusters) ask first and then
 * check that nothing changed those bytes meanwhile (engine/snapshot.ts).
 *
 * lseek moves the file offset, which nothing else uses: every read and write is positioned.
 */
import { type AllocationRun, appendRun, assert } from '@fss/core';
import { errnoError } from './errors';
import { callAsync, libc } from './libc';

const SEEK_DATA = 3;
const SEEK_HOLE = 4;
const ENXIO = 6;
const EINVAL = 22;
const EOPNOTSUPP = 95;

/**
 * The allocation of `[offset, offset + length)` of the regular file open at `fd`: at most
 * `runsMax` runs from `offset`, covering the range unless that limit stops them first.
 */
export async function fileAllocation(
  fd: number,
  offset: number,
  length: number,
  runsMax: number,
  path?: string,
): Promise<AllocationRun[]> {
  assert(Number.isSafeInteger(offset) && offset >= 0, 'an allocation query starts at a byte offset');
  assert(Number.isSafeInteger(length) && length > 0, 'an allocation query covers at least one byte');
  assert(Number.isInteger(runsMax) && runsMax >= 1, 'an allocation query may return at least one run');
  const end = offset + length;
  const runs: AllocationRun[] = [];
  let position = offset;
  while (position < end && runs.length < runsMax) {
    const data = await seek(fd, position, SEEK_DATA, path);
    if (data === 'unsupported') {
      appendRun(runs, { length: end - position, hole: false, zero: false });
      break;
    }
    // ENXIO: no data from here to the end of the file.
    const dataAt = data === 'past-end' ? end : Math.min(data, end);
    if (dataAt > position) {
      appendRun(runs, { length: dataAt - position, hole: true, zero: true });
      position = dataAt;
      continue;
    }
    const hole = await seek(fd, position, SEEK_HOLE, path);
    // SEEK_HOLE from a data byte always finds one (EOF at the latest); be safe anyway.
    const holeAt = typeof hole === 'number' ? Math.min(hole, end) : end;
    assert(holeAt > position, 'SEEK_HOLE from data moves forward');
    appendRun(runs, { length: holeAt - position, hole: false, zero: false });
    position = holeAt;
  }
  assert(runs.length >= 1, 'a non-empty query has at least one run');
  return runs;
}

async function seek(
  fd: number,
  offset: number,
  whence: number,
  path: string | undefined,
): Promise<number | 'past-end' | 'unsupported'> {
  const { result, errno } = await callAsync(libc().lseek, fd, offset, whence);
  if (result >= 0) return Number(result);
  if (errno === ENXIO) return 'past-end';
  if (errno === EINVAL || errno === EOPNOTSUPP) return 'unsupported';
  throw errnoError(errno, whence === SEEK_DATA ? 'lseek SEEK_DATA' : 'lseek SEEK_HOLE', path);
}
