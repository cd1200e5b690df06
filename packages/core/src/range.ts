/**
 * Range rules shared by every BlockDevice, so the origin, a snapshot, a Linux device and an
 * NBD export all answer the same out-of-range requests the same way (SPEC §2, NetBSD's
 * bounds_check_with_mediasize):
 *
 *   read  starting beyond the end   EINVAL
 *         starting exactly at end   0 bytes
 *         crossing the end          truncated
 *   write crossing the end          ENOSPC (what write(2) on a Linux block device says)
 *   any   negative / unsafe offset  EINVAL
 */
import { FssError } from './errors';

/** The bytes a read of `length` at `offset` returns from a device of `size` bytes. */
export function readableLength(size: number, offset: number, length: number, path?: string): number {
  checkOffset(offset, length, 'read', path);
  if (offset > size) {
    throw new FssError('EINVAL', `read at ${offset} starts beyond the end (${size} bytes)`, {
      syscall: 'read',
      path,
    });
  }
  return Math.min(length, size - offset);
}

/** Checks a write of `length` at `offset` fits a device of `size` bytes. */
export function checkWriteRange(size: number, offset: number, length: number, path?: string): void {
  checkOffset(offset, length, 'write', path);
  if (offset + length > size) {
    throw new FssError('ENOSPC', `write of ${length} at ${offset} crosses the end (${size} bytes)`, {
      syscall: 'write',
      path,
    });
  }
}

function checkOffset(offset: number, length: number, syscall: string, path?: string): void {
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new FssError('EINVAL', `offset ${offset} is not a byte offset`, { syscall, path });
  }
  if (!Number.isSafeInteger(length) || length < 0 || !Number.isSafeInteger(offset + length)) {
    throw new FssError('EINVAL', `length ${length} is not a byte count`, { syscall, path });
  }
}
