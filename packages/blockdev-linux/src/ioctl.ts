/**
 * Block-device ioctls, one typed wrapper each. Numbers are the asm-generic `_IOC` encoding
 * from <linux/fs.h> (x86_64 and aarch64 share it; powerpc, mips and sparc do not, which is
 * one reason the package is `os: linux` and tested on those two only).
 *
 *   request        number       argument               answer
 *   BLKROGET       0x125e       int *                  1 when the device is read-only
 *   BLKSSZGET      0x1268       int *                  logical sector size
 *   BLKGETSIZE64   0x80081272   uint64_t *             size in bytes
 *   BLKDISCARD     0x1277       uint64_t[2] start,len  range discarded (fd open for writing)
 *   BLKZEROOUT     0x127f       uint64_t[2] start,len  range zeroed
 *   BLKPBSZGET     0x127b       unsigned int *         physical sector size
 *   FIFREEZE       0xc0045877   int (ignored)          filesystem frozen (see freeze.ts)
 *   FITHAW         0xc0045878   int (ignored)          filesystem thawed
 */
import { assert, isPowerOfTwo } from '@fss/core';
import { errnoError } from './errors';
import { callAsync, lastErrno, libc } from './libc';

export const BLKROGET = 0x125e;
export const BLKSSZGET = 0x1268;
export const BLKGETSIZE64 = 0x80081272;
export const BLKDISCARD = 0x1277;
export const BLKPBSZGET = 0x127b;
export const BLKZEROOUT = 0x127f;
export const FIFREEZE = 0xc0045877;
export const FITHAW = 0xc0045878;

/** Size of the block device in bytes (BLKGETSIZE64). */
export function blockDeviceSize(fd: number, path: string): number {
  const out: [number | bigint] = [0];
  if (libc().ioctlU64Out(fd, BLKGETSIZE64, out) < 0) {
    throw errnoError(lastErrno(), 'ioctl(BLKGETSIZE64)', path);
  }
  // koffi answers a number up to 2^53 and a bigint above; beyond 2^53 bytes (8 PiB) offsets
  // would stop being safe integers, so refuse rather than round.
  const size = out[0];
  if (typeof size === 'bigint' || !Number.isSafeInteger(size)) {
    throw errnoError(75, 'ioctl(BLKGETSIZE64)', path, `device size ${size} is not a safe integer`);
  }
  return size;
}

function intIoctl(fd: number, request: number, name: string, path: string): number {
  const out: [number] = [0];
  if (libc().ioctlIntOut(fd, request, out) < 0) throw errnoError(lastErrno(), `ioctl(${name})`, path);
  return out[0];
}

/** Logical sector size: the unit of addressing and of O_DIRECT alignment (BLKSSZGET). */
export function logicalSectorSize(fd: number, path: string): number {
  const size = intIoctl(fd, BLKSSZGET, 'BLKSSZGET', path);
  assert(size >= 512 && isPowerOfTwo(size), `BLKSSZGET answered ${size}`);
  return size;
}

/** Physical sector size: writes smaller than this are read-modify-write in the device (BLKPBSZGET). */
export function physicalSectorSize(fd: number, path: string): number {
  return intIoctl(fd, BLKPBSZGET, 'BLKPBSZGET', path) >>> 0;
}

/** True when the kernel marks the device read-only (BLKROGET). */
export function isReadOnlyDevice(fd: number, path: string): boolean {
  return intIoctl(fd, BLKROGET, 'BLKROGET', path) !== 0;
}

/** BLKDISCARD or BLKZEROOUT over [offset, offset+length); both sector-aligned. Runs off the main thread. */
export async function rangeIoctl(
  fd: number,
  request: typeof BLKDISCARD | typeof BLKZEROOUT,
  offset: number,
  length: number,
  path: string,
): Promise<void> {
  const range = new BigUint64Array([BigInt(offset), BigInt(length)]);
  const { result, errno } = await callAsync(libc().ioctlRange, fd, request, range);
  if (result < 0) {
    throw errnoError(errno, request === BLKDISCARD ? 'ioctl(BLKDISCARD)' : 'ioctl(BLKZEROOUT)', path);
  }
}
