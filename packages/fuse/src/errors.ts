/**
 * The FUSE error boundary: what errno the kernel hands the caller (loop, dd, fio) for a
 * failure of the BlockDevice behind the file (STYLE 13: one explicit table per boundary).
 *
 * FUSE carries any errno, so most codes pass through unchanged and the caller sees exactly
 * what the device said: EROFS for a snapshot written to, ENXIO for an invalid snapshot,
 * ENOSPC past the end. The rows that change:
 *
 *   EBADF, ESHUTDOWN, ECANCELED → EIO    the device was closed under the mount: for the
 *                                        caller that is an I/O error, not a bad descriptor
 *                                        of its own
 *   ENOTSUP (Node's spelling)   → EOPNOTSUPP   (toFssError already folds it)
 *   anything unknown            → EIO    the honest default for a failure we did not plan
 */
import { ERRNO, type ErrnoCode, toFssError } from '@fss/core';

const PASSED_THROUGH: ReadonlySet<ErrnoCode> = new Set<ErrnoCode>([
  'EIO',
  'ENXIO',
  'ENOSPC',
  'EDQUOT',
  'EFBIG',
  'EROFS',
  'EPERM',
  'EACCES',
  'EINVAL',
  'EOPNOTSUPP',
  'ENOMEM',
  'EOVERFLOW',
  'ENODEV',
  'EAGAIN',
  'EINTR',
]);

/** The positive errno to answer the kernel with, for anything a device threw. */
export function fuseErrnoOf(error: unknown): number {
  const code = toFssError(error).code;
  return PASSED_THROUGH.has(code) ? ERRNO[code].errno : ERRNO.EIO.errno;
}
