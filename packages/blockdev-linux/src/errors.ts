/**
 * errno → FssError at the FFI edge. Every failure names the syscall (with the ioctl request,
 * e.g. `ioctl(BLKGETSIZE64)`) and the path, so a message reads like Node's own
 * `EBUSY: Device or resource busy, open '/dev/loop3'`.
 */
import { errnoCodeOf, FssError, toFssError } from '@fss/core';

/** An FssError for a raw errno number from a libc call. Unknown numbers become EIO. */
export function errnoError(errno: number, syscall: string, path?: string, description?: string): FssError {
  const code = errnoCodeOf(errno) ?? 'EIO';
  const text = description ?? (errnoCodeOf(errno) === undefined ? `errno ${errno}` : undefined);
  return new FssError(code, text, { syscall, path });
}

/** Node `fs` errors (they carry `code`) → FssError with our syscall name and path. */
export function fsError(error: unknown, syscall: string, path?: string): FssError {
  return toFssError(error, { syscall, path });
}
