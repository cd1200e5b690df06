/**
 * errno → FssError at the FFI edge. Every failure names the syscall (with the ioctl request,
 * e.g. `ioctl(BLKGETSIZE64)`) and the path, so a message reads like Node's own
 * `EBUSY: Device or resource busy, open '/dev/loop3'`.
 */
import { errnoCodeOf, FssError } from '@fss/core';

/** An FssError for a raw errno number from a libc call. Unknown numbers become EIO. */
export function errnoError(errno: number, syscall: string, path?: string, description?: string): FssError {
  const known = errnoCodeOf(errno);
  const text = description ?? (known === undefined ? `errno ${errno}` : undefined);
  return new FssError(known ?? 'EIO', text, { syscall, path });
}
