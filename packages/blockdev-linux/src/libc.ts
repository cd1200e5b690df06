/**
 * The libc calls Node does not offer, bound once through koffi (prebuilt, no compiler at
 * install time). Data I/O does not go through here: reads and writes use Node's `fs` (libuv)
 * on an O_DIRECT descriptor, which is faster than an FFI round trip and keeps the event loop
 * free. koffi is only for ioctl, statx, flock, fallocate, mount, umount2, eventfd, poll, lseek
 * (SEEK_DATA/SEEK_HOLE) and read(2) where an empty non-blocking read must not cost an exception.
 *
 * ioctl is variadic in C. koffi cannot call variadic prototypes asynchronously, so we declare
 * one fixed prototype per argument shape; for int and pointer arguments that is the same
 * calling convention as the variadic call on the x86_64 and aarch64 SysV ABIs.
 *
 * errno: a synchronous call leaves it readable through `koffi.errno()` until the next call.
 * An `.async` call restores it only inside the completion callback, so `callAsync` captures
 * it there (node-ecosystem.md §3.2).
 */
import { createRequire } from 'node:module';
import koffi from 'koffi';

type Int32Out = [number];
type UInt64Out = [number | bigint];

export interface Libc {
  /** ioctl(fd, req, uint64_t *out): BLKGETSIZE64. */
  ioctlU64Out(fd: number, request: number, out: UInt64Out): number;
  /** ioctl(fd, req, int *out): BLKSSZGET, BLKROGET, BLKPBSZGET (unsigned, same size). */
  ioctlIntOut(fd: number, request: number, out: Int32Out): number;
  /** ioctl(fd, req, uint64_t range[2]): BLKDISCARD, BLKZEROOUT. Async: they can take long. */
  ioctlRange: AsyncCapable<(fd: number, request: number, range: BigUint64Array) => number>;
  /** ioctl(fd, req, int arg): FIFREEZE, FITHAW (the argument is ignored; pass 0). */
  ioctlIntArg(fd: number, request: number, arg: number): number;
  /**
   * statx(dirfd, path, flags, mask, struct statx *buf) into a 256-byte buffer. Async for paths
   * that may lie on a FUSE filesystem this process serves (statxAsync).
   */
  statx: AsyncCapable<
    (dirfd: number, path: string, flags: number, mask: number, buffer: Uint8Array) => number
  >;
  /** flock(fd, operation). */
  flock(fd: number, operation: number): number;
  /** fallocate(fd, mode, offset, length). Async: punching or zeroing ranges can take long. */
  fallocate: AsyncCapable<(fd: number, mode: number, offset: number, length: number) => number>;
  /**
   * ioctl(fd, req, unsigned long arg): LOOP_CTL_GET_FREE, LOOP_CLR_FD, LOOP_SET_DIRECT_IO. The
   * argument is a full unsigned long, not an int: an int leaves the register's upper half
   * undefined, and these requests read all 64 bits. Async: LOOP_CLR_FD can wait on I/O.
   */
  ioctlULongArg: AsyncCapable<(fd: number, request: number, arg: number) => number>;
  /**
   * ioctl(fd, req, void *arg) on caller memory, read and written in place: LOOP_CONFIGURE,
   * LOOP_GET_STATUS64, FUSE_DEV_IOC_CLONE. Async: LOOP_CONFIGURE stats the backing file, which
   * may be a FUSE file this very process serves.
   */
  ioctlBytes: AsyncCapable<(fd: number, request: number, arg: Uint8Array) => number>;
  /**
   * mount(source, target, fstype, flags, data). Async: a mount may wait on the filesystem it
   * mounts (for FUSE, on this process).
   */
  mount: AsyncCapable<
    (source: string, target: string, fstype: string, flags: number, data: string | null) => number
  >;
  /** umount2(target, flags). Async: an unmount may wait on the filesystem's server. */
  umount2: AsyncCapable<(target: string, flags: number) => number>;
  /** eventfd(initval, flags): a descriptor threads can poll to learn they should stop. */
  eventfd(initialValue: number, flags: number): number;
  /**
   * read(fd, buf, count) into caller memory: the result and errno, no exception. For
   * non-blocking descriptors read in a loop until EAGAIN, where `fs.readSync` would build
   * (and, with source maps on, map) an Error's stack trace for every empty read.
   */
  read(fd: number, target: Uint8Array, count: number): number;
  /**
   * lseek(fd, offset, whence) for SEEK_DATA/SEEK_HOLE only (allocation.ts); the data path is
   * positioned I/O and never uses the file offset. Async: the file may be on a slow filesystem.
   */
  lseek: AsyncCapable<(fd: number, offset: number, whence: number) => number>;
}

/** read(2) for worker threads, which bind it themselves like poll (see POLL_PROTOTYPE). */
export const READ_PROTOTYPE = 'intptr_t read(int fd, void *buf, size_t count)';

/** pread(2) and pwrite(2) for worker threads (worker I/O on a device's descriptor). */
export const PREAD_PROTOTYPE = 'intptr_t pread(int fd, void *buf, size_t count, int64_t offset)';
export const PWRITE_PROTOTYPE = 'intptr_t pwrite(int fd, const void *buf, size_t count, int64_t offset)';

/** write(2) for worker threads, likewise. */
export const WRITE_PROTOTYPE = 'intptr_t write(int fd, const void *buf, size_t count)';

/**
 * poll(2) over an array of `struct pollfd` (int fd, short events, short revents: 8 bytes
 * each) in caller memory. Worker threads bind it themselves from this prototype: a worker
 * evaluated from source cannot import this module, and the prototype stays defined here.
 */
export const POLL_PROTOTYPE = 'int poll(void *fds, unsigned long nfds, int timeout)';

export type AsyncCapable<F extends (...args: never[]) => number> = F & {
  async: (...args: unknown[]) => void;
};

let bound: Libc | undefined;

/** The bound functions; loaded on first use so importing the package costs nothing. */
export function libc(): Libc {
  if (bound !== undefined) return bound;
  const lib = koffi.load('libc.so.6');
  bound = {
    ioctlU64Out: lib.func('ioctl', 'int', ['int', 'unsigned long', koffi.out(koffi.pointer('uint64_t'))]),
    ioctlIntOut: lib.func('ioctl', 'int', ['int', 'unsigned long', koffi.out(koffi.pointer('int'))]),
    ioctlRange: lib.func('ioctl', 'int', ['int', 'unsigned long', koffi.pointer('uint64_t')]),
    ioctlIntArg: lib.func('int ioctl(int fd, unsigned long req, int arg)'),
    statx: lib.func(
      'int statx(int dirfd, const char *path, int flags, unsigned int mask, _Out_ uint8_t *buf)',
    ),
    flock: lib.func('int flock(int fd, int operation)'),
    fallocate: lib.func('int fallocate(int fd, int mode, int64_t offset, int64_t len)'),
    ioctlULongArg: lib.func('int ioctl(int fd, unsigned long req, unsigned long arg)'),
    ioctlBytes: lib.func('int ioctl(int fd, unsigned long req, void *arg)'),
    mount: lib.func(
      'int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)',
    ),
    umount2: lib.func('int umount2(const char *target, int flags)'),
    eventfd: lib.func('int eventfd(unsigned int initval, int flags)'),
    read: lib.func(READ_PROTOTYPE),
    lseek: lib.func('int64_t lseek(int fd, int64_t offset, int whence)'),
  };
  return bound;
}

/** Where koffi's entry point is, so a worker thread can load the same copy. */
export function koffiEntryPath(): string {
  return createRequire(import.meta.url).resolve('koffi');
}

/** errno of the last synchronous libc call on this thread. */
export function lastErrno(): number {
  return koffi.errno();
}

export interface AsyncResult {
  result: number;
  errno: number;
}

/** Runs `fn` on koffi's worker pool; resolves with its result and the errno it left. */
export function callAsync<F extends (...args: never[]) => number>(
  fn: AsyncCapable<F>,
  ...args: Parameters<F>
): Promise<AsyncResult> {
  return new Promise((resolve, reject) => {
    fn.async(...args, (error: unknown, result: number) => {
      // errno is only valid inside this callback: read it before anything else runs.
      const errno = koffi.errno();
      if (error) reject(error);
      else resolve({ result, errno });
    });
  });
}

/** The memory address of a byte array's first byte, to check O_DIRECT alignment. */
export function addressOf(bytes: Uint8Array): bigint {
  return koffi.address(bytes);
}
