/**
 * The NBD error boundary: one explicit table from fss's errno codes to the eight values the
 * NBD protocol allows on the wire (STYLE 13). Anything not in the table is NBD_EIO: a client
 * must never see a value the spec does not list, and "I/O error" is the honest default for a
 * failure we did not plan for.
 *
 * Why these rows:
 *   EROFS, EPERM, EACCES  → EPERM     the spec's answer to writes on a read-only export; a
 *                                     snapshot's write() throws EROFS
 *   EINVAL, ERANGE        → EINVAL    out-of-range reads, bad flags, unknown commands
 *   ENOSPC, EDQUOT, EFBIG → ENOSPC    writes past the end; a full disk (spec: EDQUOT/EFBIG
 *                                     map to ENOSPC)
 *   ENOMEM                → ENOMEM
 *   EOVERFLOW             → EOVERFLOW
 *   EOPNOTSUPP, ENOSYS    → ENOTSUP   the device lacks the operation
 *   ESHUTDOWN, ECANCELED  → ESHUTDOWN the server is going away
 *   ENXIO, EIO, anything  → EIO       an invalid snapshot reads ENXIO: for the client that is
 *                                     an I/O error
 */
import { type ErrnoCode, toFssError } from '@fss/core';
import { NbdErrno, type NbdErrnoValue } from './protocol';

export const NBD_ERRNO_OF: Readonly<Partial<Record<ErrnoCode, NbdErrnoValue>>> = {
  EROFS: NbdErrno.EPERM,
  EPERM: NbdErrno.EPERM,
  EACCES: NbdErrno.EPERM,
  EINVAL: NbdErrno.EINVAL,
  ERANGE: NbdErrno.EINVAL,
  ENOSPC: NbdErrno.ENOSPC,
  EDQUOT: NbdErrno.ENOSPC,
  EFBIG: NbdErrno.ENOSPC,
  ENOMEM: NbdErrno.ENOMEM,
  EOVERFLOW: NbdErrno.EOVERFLOW,
  EOPNOTSUPP: NbdErrno.ENOTSUP,
  ENOSYS: NbdErrno.ENOTSUP,
  ESHUTDOWN: NbdErrno.ESHUTDOWN,
  ECANCELED: NbdErrno.ESHUTDOWN,
  EIO: NbdErrno.EIO,
  ENXIO: NbdErrno.EIO,
};

/**
 * The wire error value for anything a device threw: its code as `toFssError` reads it
 * (FssErrors, Node system errors such as `code: 'ENOSPC'`, ENOTSUP as EOPNOTSUPP) through the
 * table; everything else is EIO.
 */
export function nbdErrnoOf(error: unknown): NbdErrnoValue {
  return NBD_ERRNO_OF[toFssError(error).code] ?? NbdErrno.EIO;
}
