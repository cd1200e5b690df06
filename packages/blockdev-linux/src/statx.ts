/**
 * statx(2), for what fstat cannot tell: the direct-I/O alignment (STATX_DIOALIGN, Linux 6.1).
 *
 * struct statx field offsets used here (from <linux/stat.h>; the layout is fixed ABI):
 *    0 u32 stx_mask         which fields the kernel filled in
 *    4 u32 stx_blksize      preferred I/O size
 *   28 u16 stx_mode         file type and permissions
 *   32 u64 stx_ino
 *   40 u64 stx_size
 *  128 u32 stx_rdev_major, 132 u32 stx_rdev_minor   (the device a block special file names)
 *  136 u32 stx_dev_major,  140 u32 stx_dev_minor    (the device the file lives on)
 *  152 u32 stx_dio_mem_align      buffer address alignment for O_DIRECT (0: unsupported)
 *  156 u32 stx_dio_offset_align   file offset and length alignment for O_DIRECT
 */
import { errnoError } from './errors';
import { callAsync, lastErrno, libc } from './libc';

const AT_FDCWD = -100;
const AT_EMPTY_PATH = 0x1000;
const STATX_BASIC_STATS = 0x7ff;
const STATX_DIOALIGN = 0x2000;
const STATX_STRUCT_BYTES = 256;
const S_IFMT = 0o170000;

export type FileKind = 'block' | 'character' | 'file' | 'directory' | 'other';

export interface StatxResult {
  kind: FileKind;
  size: number;
  blockSize: number;
  inode: bigint;
  /** "major:minor" of the device this file lives on. */
  dev: string;
  /** "major:minor" a block or character special file refers to. */
  rdev: string;
  /** O_DIRECT alignment, or undefined when the filesystem does not say (STATX_DIOALIGN unset). */
  directIo: { memoryAlignment: number; offsetAlignment: number } | undefined;
}

/** statx of `path` (fd undefined) or of an open descriptor (`path` then only names it in errors). */
export function statx(path: string, fd?: number): StatxResult {
  const buffer = new Uint8Array(STATX_STRUCT_BYTES);
  const result =
    fd === undefined
      ? libc().statx(AT_FDCWD, path, 0, STATX_BASIC_STATS | STATX_DIOALIGN, buffer)
      : libc().statx(fd, '', AT_EMPTY_PATH, STATX_BASIC_STATS | STATX_DIOALIGN, buffer);
  if (result < 0) throw errnoError(lastErrno(), 'statx', path);
  return decodeStatx(buffer);
}

/**
 * statx of `path` on koffi's worker pool. For paths that may lie on a FUSE filesystem: when
 * this process serves it (a loop device's backing file under fssd's own FUSE mount) a
 * synchronous statx on the main thread would wait for an answer only the main thread can give;
 * and a hung server elsewhere stalls only a worker, not the event loop.
 */
export async function statxAsync(path: string): Promise<StatxResult> {
  const buffer = new Uint8Array(STATX_STRUCT_BYTES);
  const { result, errno } = await callAsync(
    libc().statx,
    AT_FDCWD,
    path,
    0,
    STATX_BASIC_STATS | STATX_DIOALIGN,
    buffer,
  );
  if (result < 0) throw errnoError(errno, 'statx', path);
  return decodeStatx(buffer);
}

function decodeStatx(buffer: Uint8Array): StatxResult {
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.length);
  const mask = view.getUint32(0, true);
  const mode = view.getUint16(28, true);
  return {
    kind: kindOf(mode & S_IFMT),
    size: Number(view.getBigUint64(40, true)),
    blockSize: view.getUint32(4, true),
    inode: view.getBigUint64(32, true),
    dev: `${view.getUint32(136, true)}:${view.getUint32(140, true)}`,
    rdev: `${view.getUint32(128, true)}:${view.getUint32(132, true)}`,
    directIo:
      (mask & STATX_DIOALIGN) === 0
        ? undefined
        : { memoryAlignment: view.getUint32(152, true), offsetAlignment: view.getUint32(156, true) },
  };
}

function kindOf(format: number): FileKind {
  switch (format) {
    case 0o060000:
      return 'block';
    case 0o020000:
      return 'character';
    case 0o100000:
      return 'file';
    case 0o040000:
      return 'directory';
    default:
      return 'other';
  }
}
