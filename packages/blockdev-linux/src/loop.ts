/**
 * Loop devices through their ioctls: a file becomes /dev/loopN and goes away again, with no
 * losetup child process.
 *
 *   request            number   argument                 what it does
 *   LOOP_CTL_GET_FREE  0x4c82   none (on /dev/loop-control)  the number of a free device,
 *                                                        made when none is free
 *   LOOP_CONFIGURE     0x4c0a   struct loop_config *     binds a file descriptor, block
 *                                                        size and flags in one call
 *   LOOP_CLR_FD        0x4c01   none                     unbinds at the last close
 *
 *   struct loop_config (304 bytes)          struct loop_info64 (232 bytes, at +8)
 *     0 u32 fd                                +0  u64 lo_device, +8 lo_inode, +16 lo_rdevice
 *     4 u32 block_size (0: the default)       +24 u64 lo_offset, +32 lo_sizelimit
 *     8 loop_info64 info                      +40 u32 lo_number, +44 encrypt_type,
 *   240 u64 reserved[8]                       +48 encrypt_key_size, +52 lo_flags
 *                                             +56 u8 lo_file_name[64], +120 crypt_name[64],
 *                                             +184 encrypt_key[32], +216 u64 lo_init[2]
 *
 *   lo_flags: READ_ONLY 1, AUTOCLEAR 4, PARTSCAN 8, DIRECT_IO 16
 *
 * Size. The device is the file's size rounded down to whole blocks (lo_sizelimit): the driver
 * itself only rounds down to 512-byte sectors, which with 4096-byte blocks would leave a
 * partial last block that every aligned reader trips over (EINVAL).
 *
 * Why the calls that touch the backing file run off the main thread. The file may be a FUSE
 * file that this very process serves (@fss/fuse): opening it, LOOP_CONFIGURE (which stats
 * it) and closing a descriptor of it (a FUSE FLUSH) all wait for an answer that only the
 * main thread can give. So they go through libuv (`fs.open`, `fs.close`) or koffi's async
 * pool, never a synchronous call.
 *
 * Direct I/O. With LO_FLAGS_DIRECT_IO the loop driver submits O_DIRECT I/O to the file,
 * asynchronously and many requests at once, and nothing is cached twice. The kernel accepts
 * it when the file can do O_DIRECT at the loop device's block size; otherwise it either
 * refuses the configure (EINVAL) or clears the flag, depending on the kernel. We ask for it,
 * retry without it on EINVAL, and report what the kernel actually did (sysfs `loop/dio`).
 *
 * No autoclear. With LO_FLAGS_AUTOCLEAR the kernel unbinds the device at its last close, and
 * our own descriptor is closed as soon as attachLoop returns: a device nobody else has open
 * would vanish at once. Holding that descriptor until the process dies would make the exit
 * itself wait for outstanding I/O of a FUSE file the dying process serves. So detaching is
 * explicit (detachLoop), and what a killed process leaves is found by its backing path
 * (loopDevicesUnder) and detached by the next start.
 */
import {
  close as closeCallback,
  closeSync,
  constants,
  fstat as fstatCallback,
  open as openCallback,
  openSync,
} from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { promisify } from 'node:util';
import { assert, FssError, isPowerOfTwo, toFssError } from '@fss/core';
import { loopBackingFile } from './claim';
import { errnoError } from './errors';
import { callAsync, lastErrno, libc } from './libc';
import { mountPointsOf } from './mountinfo';

export const LOOP_CLR_FD = 0x4c01;
export const LOOP_CONFIGURE = 0x4c0a;
export const LOOP_CTL_GET_FREE = 0x4c82;
export const LO_FLAGS_READ_ONLY = 1;
export const LO_FLAGS_DIRECT_IO = 16;

const LOOP_CONFIG_BYTES = 304;
const LO_SIZELIMIT_OFFSET = 8 + 32;
const LO_FLAGS_OFFSET = 8 + 52;
const LO_FILE_NAME_OFFSET = 8 + 56;
const LO_NAME_SIZE = 64;
const EBUSY = 16;
const EINVAL = 22;
const ENXIO = 6;
/** LOOP_CTL_GET_FREE + LOOP_CONFIGURE attempts: another process may take the same free device. */
const CONFIGURE_ATTEMPTS = 8;
const CLEAR_ATTEMPTS = 20;
const RETRY_MS = 100;
const DEFAULT_DETACH_TIMEOUT_MS = 5000;

const open = promisify(openCallback);
const close = promisify(closeCallback);
const fstat = promisify(fstatCallback);

export interface AttachLoopOptions {
  /** Read-only device (LO_FLAGS_READ_ONLY) over a file opened O_RDONLY. Default false. */
  readOnly?: boolean;
  /** Ask for LO_FLAGS_DIRECT_IO (default true); the result says whether the kernel kept it. */
  directIo?: boolean;
  /** The device's logical block size: a power of two, 512 to 4096 (default 512). */
  blockSizeBytes?: number;
}

/** An attached loop device. */
export interface LoopDevice {
  /** `/dev/loopN`. */
  path: string;
  number: number;
  backingFile: string;
  readOnly: boolean;
  /** Whether the kernel runs it with direct I/O (sysfs loop/dio after configuring). */
  directIo: boolean;
  blockSizeBytes: number;
}

/**
 * Attaches `file` (a regular file, or a FUSE file this process serves) as a new loop device.
 * On failure nothing stays attached or open.
 */
export async function attachLoop(file: string, options: AttachLoopOptions = {}): Promise<LoopDevice> {
  const readOnly = options.readOnly ?? false;
  const blockSizeBytes = options.blockSizeBytes ?? 512;
  if (!isPowerOfTwo(blockSizeBytes) || blockSizeBytes < 512 || blockSizeBytes > 4096) {
    throw new FssError('EINVAL', `loop block size ${blockSizeBytes} is not a power of two in 512..4096`, {
      path: file,
    });
  }
  let backingFd: number;
  try {
    backingFd = await open(file, readOnly ? constants.O_RDONLY : constants.O_RDWR);
  } catch (error) {
    throw toFssError(error, { syscall: 'open', path: file });
  }
  try {
    // The driver counts 512-byte sectors only; with larger blocks a partial last block would
    // be addressable but unreadable (EINVAL), so the size is limited to whole blocks.
    const fileBytes = (await fstat(backingFd)).size;
    const sizeLimitBytes = fileBytes - (fileBytes % blockSizeBytes);
    const configure = { backingFd, file, readOnly, blockSizeBytes, sizeLimitBytes };
    let configured: number | undefined;
    if (options.directIo ?? true) configured = await configureFreeDevice({ ...configure, directIo: true });
    configured ??= await configureFreeDevice({ ...configure, directIo: false });
    if (configured === undefined) {
      throw new FssError('EINVAL', `the loop driver refused ${file}`, {
        syscall: 'ioctl(LOOP_CONFIGURE)',
        path: file,
      });
    }
    const dio = await readFile(`/sys/block/loop${configured}/loop/dio`, 'utf8').catch(() => '0');
    return {
      path: `/dev/loop${configured}`,
      number: configured,
      backingFile: file,
      readOnly,
      directIo: dio.trim() === '1',
      blockSizeBytes,
    };
  } finally {
    await close(backingFd).catch(() => undefined); // the device holds its own reference
  }
}

interface ConfigureRequest {
  backingFd: number;
  file: string;
  readOnly: boolean;
  blockSizeBytes: number;
  /** lo_sizelimit: the file's size rounded down to whole blocks. */
  sizeLimitBytes: number;
  directIo: boolean;
}

/**
 * LOOP_CTL_GET_FREE then LOOP_CONFIGURE, retried when another process takes the device first
 * (EBUSY). Returns the device number, or undefined when the kernel refused the flags (EINVAL),
 * so the caller may retry without direct I/O.
 */
async function configureFreeDevice(request: ConfigureRequest): Promise<number | undefined> {
  const config = loopConfig(request);
  const control = openSync('/dev/loop-control', constants.O_RDWR); // a char device: never blocks
  try {
    for (let attempt = 0; attempt < CONFIGURE_ATTEMPTS; attempt++) {
      const number = libc().ioctlULongArg(control, LOOP_CTL_GET_FREE, 0);
      if (number < 0) throw errnoError(lastErrno(), 'ioctl(LOOP_CTL_GET_FREE)', '/dev/loop-control');
      const path = `/dev/loop${number}`;
      const loopFd = await open(path, request.readOnly ? constants.O_RDONLY : constants.O_RDWR);
      try {
        const { result, errno } = await callAsync(libc().ioctlBytes, loopFd, LOOP_CONFIGURE, config);
        if (result === 0) return number;
        if (errno === EINVAL && request.directIo) return undefined;
        if (errno !== EBUSY) throw errnoError(errno, 'ioctl(LOOP_CONFIGURE)', path);
      } finally {
        await close(loopFd);
      }
      await sleep(RETRY_MS);
    }
    throw new FssError('EBUSY', `no free loop device after ${CONFIGURE_ATTEMPTS} attempts`, {
      syscall: 'ioctl(LOOP_CONFIGURE)',
      path: request.file,
    });
  } finally {
    closeSync(control);
  }
}

/** The struct loop_config for `request` (layout in the file comment). */
function loopConfig(request: ConfigureRequest): Uint8Array {
  const config = new Uint8Array(LOOP_CONFIG_BYTES);
  const view = new DataView(config.buffer);
  view.setUint32(0, request.backingFd, true);
  view.setUint32(4, request.blockSizeBytes, true);
  view.setBigUint64(LO_SIZELIMIT_OFFSET, BigInt(request.sizeLimitBytes), true);
  const flags = (request.readOnly ? LO_FLAGS_READ_ONLY : 0) | (request.directIo ? LO_FLAGS_DIRECT_IO : 0);
  view.setUint32(LO_FLAGS_OFFSET, flags, true);
  // lo_file_name is informational (losetup shows it); the kernel keeps its own path.
  const name = Buffer.from(request.file, 'utf8').subarray(0, LO_NAME_SIZE - 1);
  config.set(name, LO_FILE_NAME_OFFSET);
  assert(config[LO_FILE_NAME_OFFSET + LO_NAME_SIZE - 1] === 0, 'lo_file_name is NUL-terminated');
  return config;
}

export interface DetachLoopOptions {
  /** How long to wait for the kernel to unbind the device (default 5000 ms). */
  timeoutMs?: number;
}

/**
 * Detaches loop device `device` (`/dev/loopN`). Resolves once the kernel unbound it; an
 * unbound or missing device is already detached. LOOP_CLR_FD is retried while EBUSY; while
 * someone else keeps the device open (a mount), the kernel only marks it to unbind at their
 * last close, and after `timeoutMs` this fails with EBUSY naming the mount points.
 */
export async function detachLoop(device: string, options: DetachLoopOptions = {}): Promise<void> {
  const name = loopName(device);
  let fd: number;
  try {
    fd = await open(device, constants.O_RDONLY);
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === 'ENOENT' || code === 'ENXIO') return;
    throw toFssError(error, { syscall: 'open', path: device });
  }
  try {
    for (let attempt = 0; ; attempt++) {
      const { result, errno } = await callAsync(libc().ioctlULongArg, fd, LOOP_CLR_FD, 0);
      if (result === 0 || errno === ENXIO) break;
      if (errno !== EBUSY || attempt + 1 >= CLEAR_ATTEMPTS)
        throw errnoError(errno, 'ioctl(LOOP_CLR_FD)', device);
      await sleep(RETRY_MS);
    }
  } finally {
    // With us as the last opener, this close is what unbinds the device: it may wait for I/O.
    await close(fd);
  }
  const deadline = Date.now() + (options.timeoutMs ?? DEFAULT_DETACH_TIMEOUT_MS);
  while ((await loopBackingFile(name)) !== undefined) {
    if (Date.now() > deadline) {
      const mounts = await mountPointsOf(device).catch(() => []);
      const where = mounts.length > 0 ? `mounted on ${mounts.join(', ')}` : 'held open by another process';
      throw new FssError('EBUSY', `${device} is ${where}; it detaches when the last user closes it`, {
        syscall: 'ioctl(LOOP_CLR_FD)',
        path: device,
      });
    }
    await sleep(RETRY_MS / 2);
  }
}

/**
 * Detaches `device` synchronously, for an exit hook: LOOP_CLR_FD, then the close that unbinds
 * it. Only safe when no I/O of the device can wait for this thread (the FUSE server behind it
 * has already aborted its connection); everywhere else use detachLoop. Returns false when
 * the device could not be opened or unbound (it then stays as it was).
 */
export function detachLoopSync(device: string): boolean {
  loopName(device);
  let fd: number;
  try {
    fd = openSync(device, constants.O_RDONLY);
  } catch {
    return false;
  }
  try {
    return libc().ioctlULongArg(fd, LOOP_CLR_FD, 0) === 0 || lastErrno() === ENXIO;
  } finally {
    closeSync(fd);
  }
}

/** `loop7` of `/dev/loop7`; asserts the name is a loop device's. */
function loopName(device: string): string {
  const match = /^\/dev\/(loop\d+)$/.exec(device);
  assert(match !== null, `${device} is not a /dev/loopN path`);
  return match[1]!;
}

/** Attached loop devices and their backing files, from sysfs. */
async function attachedLoops(): Promise<Array<{ device: string; backing: string }>> {
  let names: string[];
  try {
    names = (await readdir('/sys/block')).filter((name) => /^loop\d+$/.test(name));
  } catch {
    return [];
  }
  const found: Array<{ device: string; backing: string }> = [];
  for (const name of names) {
    const backing = await loopBackingFile(name);
    if (backing !== undefined) found.push({ device: `/dev/${name}`, backing });
  }
  return found;
}

/**
 * The loop devices backed by `file`, compared by device and inode (another name for the same
 * file counts), or by path when a backing file cannot be stat'ed. Every stat is async: a
 * backing file may be one this process serves.
 */
export async function loopDevicesOf(file: string): Promise<string[]> {
  const target = await stat(file, { bigint: true });
  const found: string[] = [];
  for (const { device, backing } of await attachedLoops()) {
    try {
      const candidate = await stat(backing, { bigint: true });
      if (candidate.dev === target.dev && candidate.ino === target.ino) found.push(device);
    } catch {
      if (backing === file) found.push(device);
    }
  }
  return found;
}

/**
 * The loop devices whose backing file's path lies under `directory`, by path alone (so it
 * works when the files there can no longer be reached, e.g. a dead FUSE mount).
 */
export async function loopDevicesUnder(directory: string): Promise<string[]> {
  const prefix = directory.endsWith('/') ? directory : `${directory}/`;
  return (await attachedLoops())
    .filter(({ backing }) => backing.startsWith(prefix))
    .map(({ device }) => device);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
