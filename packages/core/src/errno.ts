/**
 * The errno vocabulary of fss: Linux numbers and Linux strerror(3) texts.
 *
 * One table, so a code never changes meaning and every boundary (ioctl, NBD, CLI) maps from
 * the same names. Numbers are the x86_64/aarch64 Linux values; they are what a C caller of
 * the same syscall would see.
 */
export const ERRNO = {
  EPERM: { errno: 1, text: 'Operation not permitted' },
  ENOENT: { errno: 2, text: 'No such file or directory' },
  ESRCH: { errno: 3, text: 'No such process' },
  EINTR: { errno: 4, text: 'Interrupted system call' },
  EIO: { errno: 5, text: 'Input/output error' },
  ENXIO: { errno: 6, text: 'No such device or address' },
  E2BIG: { errno: 7, text: 'Argument list too long' },
  EBADF: { errno: 9, text: 'Bad file descriptor' },
  EAGAIN: { errno: 11, text: 'Resource temporarily unavailable' },
  ENOMEM: { errno: 12, text: 'Cannot allocate memory' },
  EACCES: { errno: 13, text: 'Permission denied' },
  EFAULT: { errno: 14, text: 'Bad address' },
  ENOTBLK: { errno: 15, text: 'Block device required' },
  EBUSY: { errno: 16, text: 'Device or resource busy' },
  EEXIST: { errno: 17, text: 'File exists' },
  EXDEV: { errno: 18, text: 'Invalid cross-device link' },
  ENODEV: { errno: 19, text: 'No such device' },
  ENOTDIR: { errno: 20, text: 'Not a directory' },
  EISDIR: { errno: 21, text: 'Is a directory' },
  EINVAL: { errno: 22, text: 'Invalid argument' },
  EMFILE: { errno: 24, text: 'Too many open files' },
  ENOTTY: { errno: 25, text: 'Inappropriate ioctl for device' },
  EFBIG: { errno: 27, text: 'File too large' },
  ENOSPC: { errno: 28, text: 'No space left on device' },
  ESPIPE: { errno: 29, text: 'Illegal seek' },
  EROFS: { errno: 30, text: 'Read-only file system' },
  EPIPE: { errno: 32, text: 'Broken pipe' },
  ERANGE: { errno: 34, text: 'Numerical result out of range' },
  ENAMETOOLONG: { errno: 36, text: 'File name too long' },
  ENOSYS: { errno: 38, text: 'Function not implemented' },
  ELOOP: { errno: 40, text: 'Too many levels of symbolic links' },
  EPROTO: { errno: 71, text: 'Protocol error' },
  EOVERFLOW: { errno: 75, text: 'Value too large for defined data type' },
  EOPNOTSUPP: { errno: 95, text: 'Operation not supported' },
  EADDRINUSE: { errno: 98, text: 'Address already in use' },
  ECONNRESET: { errno: 104, text: 'Connection reset by peer' },
  ESHUTDOWN: { errno: 108, text: 'Cannot send after transport endpoint shutdown' },
  ETIMEDOUT: { errno: 110, text: 'Connection timed out' },
  ECONNREFUSED: { errno: 111, text: 'Connection refused' },
  EDQUOT: { errno: 122, text: 'Disk quota exceeded' },
  ECANCELED: { errno: 125, text: 'Operation canceled' },
} as const satisfies Record<string, { errno: number; text: string }>;

export type ErrnoCode = keyof typeof ERRNO;

export function isErrnoCode(code: unknown): code is ErrnoCode {
  return typeof code === 'string' && Object.hasOwn(ERRNO, code);
}

/** The errno code for a number, or undefined when the number is not in our table. */
export function errnoCodeOf(errno: number): ErrnoCode | undefined {
  for (const code of Object.keys(ERRNO) as ErrnoCode[]) {
    if (ERRNO[code].errno === errno) return code;
  }
  return undefined;
}

/** strerror(3) for a code: the text Linux prints, e.g. "Device or resource busy". */
export function strerror(code: ErrnoCode): string {
  return ERRNO[code].text;
}
