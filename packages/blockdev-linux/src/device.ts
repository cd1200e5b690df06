/**
 * LinuxBlockDevice: a Linux block device or a disk-image file as an fss `BlockDevice`.
 *
 * Notes on the design.
 *
 * Geometry. Block devices answer BLKGETSIZE64, BLKSSZGET, BLKPBSZGET and BLKROGET. Image
 * files take their size from statx, a logical sector size from the caller (default 512)
 * and report their filesystem block size as the physical sector size.
 *
 * Direct I/O. Data moves with `fs.read`/`fs.write` (libuv threads) on an O_DIRECT
 * descriptor, so the page cache neither doubles memory nor hides device errors. O_DIRECT
 * wants the buffer address, the offset and the length aligned (statx STATX_DIOALIGN tells
 * how; block devices fall back to the logical sector size). A request that already meets
 * those rules goes straight into or out of the caller's buffer. Anything else goes through
 * a bounce buffer from a fixed pool, split into pool-sized chunks, each chunk covering the
 * sector-aligned extent of its piece of the request:
 *
 *   read   read the aligned extent into the bounce buffer, copy out the requested bytes;
 *   write  read the partial head and tail sectors (read-modify-write), copy the caller's
 *          bytes over them, write the aligned extent back.
 *
 * Every write holds a lock on its aligned extent (range-lock.ts) so two writes sharing a
 * sector cannot undo each other's read-modify-write.
 *
 * Complete transfers. Every pread/pwrite/pwritev goes through @fss/core's readFully,
 * writeFully and writevFully, the loops that continue a short transfer (the same ones the
 * file backing store uses), over three syscall primitives made once per device. Writing
 * zeroes where BLKZEROOUT or fallocate is refused is core's writeZeroesByWriting.
 *
 * Buffered fallback. Where O_DIRECT is refused (EINVAL at open), or the filesystem does not
 * report a direct-I/O alignment (tmpfs: its O_DIRECT is the page cache anyway), or an image's
 * size is not a multiple of its sector size (the last sector could not be written without
 * growing the file), the device opens without O_DIRECT and says why in `ioMode` and
 * `bufferedReason`.
 *
 * Claim. Block devices are opened O_EXCL, image files flock()ed and refused while a loop
 * device is backed by them (claim.ts). `exclusive: false` skips the claim for tools that
 * only look.
 */
import {
  close as closeCallback,
  constants,
  fdatasync as fdatasyncCallback,
  open as openCallback,
  read as readCallback,
  write as writeCallback,
  writev as writevCallback,
} from 'node:fs';
import { promisify } from 'node:util';
import {
  type AllocationRun,
  assert,
  type BlockDevice,
  checkWriteRange,
  FssError,
  isPowerOfTwo,
  type ReadAt,
  readableLength,
  readFully,
  toFssError,
  type WorkerIo,
  WorkerIoGate,
  WorkerIoPermit,
  type WriteAt,
  type WritevAt,
  writeFully,
  writevFully,
  writeZeroesByWriting,
  type ZeroWritable,
} from '@fss/core';
import { alignedBuffer, BufferPool, isAddressAligned } from './aligned';
import { fileAllocation } from './allocation';
import { busyDeviceError, lockImage, refuseLoopBacked } from './claim';
import { errnoError } from './errors';
import {
  BLKDISCARD,
  BLKZEROOUT,
  blockDeviceSize,
  isReadOnlyDevice,
  logicalSectorSize,
  physicalSectorSize,
  rangeIoctl,
} from './ioctl';
import { callAsync, libc } from './libc';
import { RangeLock } from './range-lock';
import { type FileKind, type StatxResult, statx } from './statx';

// Raw descriptors, not FileHandles: the fd is shared with ioctl and statx calls, and a
// FileHandle would close itself (with a warning) when garbage collected.
const open = promisify(openCallback);
const close = promisify(closeCallback);
const fdatasync = promisify(fdatasyncCallback);

export interface OpenBlockDeviceOptions {
  /**
   * Open read-only. Default: read-write, falling back to read-only when the device or file
   * refuses writing (EROFS, EACCES, or BLKROGET says read-only).
   */
  readOnly?: boolean;
  /** Claim the device exclusively (O_EXCL / flock + loop check). Default true. */
  exclusive?: boolean;
  /** Use O_DIRECT where the device supports it. Default true. */
  direct?: boolean;
  /** Logical sector size of an image file (default 512). Block devices report their own. */
  imageSectorSize?: number;
  /** Bytes per bounce buffer; requests are split into chunks of this size (default 1 MiB). */
  bounceBufferBytes?: number;
  /** Number of bounce buffers, i.e. unaligned requests in flight (default 8). */
  bounceBufferCount?: number;
}

export type IoMode = 'direct' | 'buffered';

/** What was opened and how; everything a caller might log or test. */
export interface LinuxBlockDeviceProperties {
  path: string;
  kind: 'block' | 'character' | 'file';
  size: number;
  logicalSectorSize: number;
  physicalSectorSize: number;
  readOnly: boolean;
  exclusive: boolean;
  ioMode: IoMode;
  /** Why the device is buffered, when it is. */
  bufferedReason: string | undefined;
  /** O_DIRECT buffer address alignment (1 when buffered). */
  memoryAlignment: number;
  /** O_DIRECT offset and length alignment (1 when buffered). */
  offsetAlignment: number;
  /** "major:minor" of a device node, "" for files. */
  rdev: string;
}

const DEFAULT_BOUNCE_BYTES = 1 << 20;
const DEFAULT_BOUNCE_COUNT = 8;
const FALLOC_FL_KEEP_SIZE = 0x01;
const FALLOC_FL_PUNCH_HOLE = 0x02;
const FALLOC_FL_ZERO_RANGE = 0x10;

/** Opens `path` as a BlockDevice. See the file comment for what each option changes. */
export async function openBlockDevice(
  path: string,
  options: OpenBlockDeviceOptions = {},
): Promise<LinuxBlockDevice> {
  const exclusive = options.exclusive ?? true;
  const target = statx(path);
  if (target.kind === 'directory' || target.kind === 'other') {
    throw new FssError('ENOTBLK', `${path} is not a block device or an image file`, {
      syscall: 'open',
      path,
    });
  }
  const isDevice = target.kind !== 'file';
  const plan = planIo(path, target.kind, target.directIo, target.size, options);
  const handle = await openWithFallbacks(path, isDevice, exclusive, plan, options.readOnly);
  try {
    if (!isDevice && exclusive) {
      lockImage(handle.fd, path);
      await refuseLoopBacked(handle.fd, path);
    }
    return new LinuxBlockDevice(describe(path, target, handle, exclusive, options), handle.fd, options);
  } catch (error) {
    await close(handle.fd).catch(() => undefined);
    throw error;
  }
}

interface IoPlan {
  ioMode: IoMode;
  bufferedReason: string | undefined;
  memoryAlignment: number;
  offsetAlignment: number;
}

/** Decides direct or buffered I/O before opening, from statx (see "Buffered fallback"). */
function planIo(
  path: string,
  kind: FileKind,
  directIo: { memoryAlignment: number; offsetAlignment: number } | undefined,
  size: number,
  options: OpenBlockDeviceOptions,
): IoPlan {
  const buffered = (reason: string): IoPlan => ({
    ioMode: 'buffered',
    bufferedReason: reason,
    memoryAlignment: 1,
    offsetAlignment: 1,
  });
  if (options.direct === false) return buffered('direct I/O turned off by the caller');
  if (kind === 'file') {
    const sector = options.imageSectorSize ?? 512;
    if (!isPowerOfTwo(sector) || sector < 512) {
      throw new FssError('EINVAL', `image sector size ${sector} is not a power of two ≥ 512`, { path });
    }
    if (directIo === undefined) return buffered('the filesystem reports no direct-I/O alignment (statx)');
    if (directIo.memoryAlignment === 0) return buffered('the filesystem does not support direct I/O');
    if (size % sector !== 0) return buffered(`the image size ${size} is not a multiple of ${sector}`);
    return {
      ioMode: 'direct',
      bufferedReason: undefined,
      memoryAlignment: directIo.memoryAlignment,
      offsetAlignment: Math.max(directIo.offsetAlignment, sector),
    };
  }
  // Block and character devices: statx alignment when known, else the sector size (after open).
  return {
    ioMode: 'direct',
    bufferedReason: undefined,
    memoryAlignment: directIo?.memoryAlignment || 0,
    offsetAlignment: directIo?.offsetAlignment || 0,
  };
}

interface OpenHandle {
  fd: number;
  writable: boolean;
  /** The plan as carried out: buffered when O_DIRECT was refused at open. */
  plan: IoPlan;
}

/** open(2) with the claim and O_DIRECT, retrying read-only and buffered where that is allowed. */
async function openWithFallbacks(
  path: string,
  isDevice: boolean,
  exclusive: boolean,
  plan: IoPlan,
  readOnly: boolean | undefined,
): Promise<OpenHandle> {
  // libuv adds O_CLOEXEC to every open.
  const base = isDevice && exclusive ? constants.O_EXCL : 0;
  const attempt = async (writable: boolean): Promise<OpenHandle> => {
    const access = writable ? constants.O_RDWR : constants.O_RDONLY;
    if (plan.ioMode !== 'direct') return { fd: await open(path, base | access), writable, plan };
    try {
      return { fd: await open(path, base | access | constants.O_DIRECT), writable, plan };
    } catch (error) {
      if ((error as { code?: string }).code !== 'EINVAL') throw error;
      const buffered: IoPlan = {
        ioMode: 'buffered',
        bufferedReason: 'O_DIRECT refused at open (EINVAL)',
        memoryAlignment: 1,
        offsetAlignment: 1,
      };
      return { fd: await open(path, base | access), writable, plan: buffered };
    }
  };
  try {
    if (readOnly === true) return await attempt(false);
    try {
      return await attempt(true);
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (readOnly === false || (code !== 'EROFS' && code !== 'EACCES')) throw error;
      return await attempt(false);
    }
  } catch (error) {
    if ((error as { code?: string }).code === 'EBUSY' && isDevice) throw await busyDeviceError(path, error);
    throw toFssError(error, { syscall: 'open', path });
  }
}

/**
 * Reads the geometry of the opened descriptor into the device's properties. `target` is the
 * statx of the path before open: a device node's rdev comes from it; a file's size and
 * block size are read again from the descriptor.
 */
function describe(
  path: string,
  target: StatxResult,
  handle: OpenHandle,
  exclusive: boolean,
  options: OpenBlockDeviceOptions,
): LinuxBlockDeviceProperties {
  const { kind } = target;
  const { plan } = handle;
  let size: number;
  let logical: number;
  let physical: number;
  let readOnly = !handle.writable;
  if (kind === 'file') {
    const opened = statx(path, handle.fd);
    size = opened.size;
    logical = options.imageSectorSize ?? 512;
    physical = Math.max(logical, opened.blockSize);
  } else {
    size = blockDeviceSize(handle.fd, path);
    logical = logicalSectorSize(handle.fd, path);
    physical = physicalSectorSize(handle.fd, path);
    readOnly ||= isReadOnlyDevice(handle.fd, path);
    if (readOnly && options.readOnly === false) {
      throw new FssError('EROFS', `${path} is a read-only device`, { syscall: 'open', path });
    }
  }
  const direct = plan.ioMode === 'direct';
  return {
    path,
    kind: kind === 'file' ? 'file' : kind === 'block' ? 'block' : 'character',
    size,
    logicalSectorSize: logical,
    physicalSectorSize: physical,
    readOnly,
    exclusive,
    ioMode: plan.ioMode,
    bufferedReason: plan.bufferedReason,
    memoryAlignment: direct ? plan.memoryAlignment || logical : 1,
    offsetAlignment: direct ? Math.max(plan.offsetAlignment, logical) : 1,
    rdev: kind === 'file' ? '' : target.rdev,
  };
}

/** A BlockDevice on an open Linux descriptor. Create it with `openBlockDevice`. */
export class LinuxBlockDevice implements BlockDevice {
  readonly properties: Readonly<LinuxBlockDeviceProperties>;
  readonly size: number;
  readonly logicalSectorSize: number;
  readonly physicalSectorSize: number;
  readonly readOnly: boolean;
  readonly path: string;
  private fd: number;
  private readonly pool: BufferPool;
  private readonly writeLock = new RangeLock();
  private readonly inFlight = new Set<Promise<unknown>>();
  /**
   * Other threads' pread/pwrite on `fd` (workerIo): closed, and drained, before the
   * descriptor is; writes are never permitted on a read-only device.
   */
  private readonly workerGate: WorkerIoGate;
  /** Zeroes for writeZeroes where the device cannot zero by itself; read from, never written. */
  private zeroes: Uint8Array | undefined;
  private closing: Promise<void> | undefined;
  /**
   * The syscalls core's complete-transfer loops call (readFully, writeFully, writevFully),
   * made once: each reads `fd` when it runs and reports errors as FssErrors naming the syscall
   * and the path.
   */
  private readonly preadAt: ReadAt;
  private readonly pwriteAt: WriteAt;
  private readonly pwritevAt: WritevAt;
  /**
   * The device as writeZeroesByWriting sees it: writes go through writeRange, not `write`, so
   * they are part of the writeZeroes already tracked and are not refused once close began.
   */
  private readonly rangeWriter: ZeroWritable;

  constructor(properties: LinuxBlockDeviceProperties, fd: number, options: OpenBlockDeviceOptions = {}) {
    this.properties = Object.freeze({ ...properties });
    this.size = properties.size;
    this.logicalSectorSize = properties.logicalSectorSize;
    this.physicalSectorSize = properties.physicalSectorSize;
    this.readOnly = properties.readOnly;
    this.path = properties.path;
    this.fd = fd;
    const chunk = roundUp(options.bounceBufferBytes ?? DEFAULT_BOUNCE_BYTES, this.alignment);
    this.pool = new BufferPool(
      options.bounceBufferCount ?? DEFAULT_BOUNCE_COUNT,
      chunk,
      Math.max(4096, properties.memoryAlignment),
    );
    assert(isPowerOfTwo(properties.offsetAlignment), 'offset alignment must be a power of two');
    assert(Number.isSafeInteger(this.size) && this.size >= 0, 'device size must be a safe integer');
    this.workerGate = new WorkerIoGate(
      properties.readOnly ? WorkerIoPermit.READ : WorkerIoPermit.READ | WorkerIoPermit.WRITE,
    );
    const path = this.path;
    this.preadAt = (buffer, offset, length, position) =>
      new Promise((resolve, reject) => {
        readCallback(this.fd, buffer, offset, length, position, (error, bytesRead) => {
          if (error) reject(toFssError(error, { syscall: 'pread', path }));
          else resolve(bytesRead);
        });
      });
    this.pwriteAt = (buffer, offset, length, position) =>
      new Promise((resolve, reject) => {
        writeCallback(this.fd, buffer, offset, length, position, (error, written) => {
          if (error) reject(toFssError(error, { syscall: 'pwrite', path }));
          else resolve(written);
        });
      });
    this.pwritevAt = (buffers, position) =>
      new Promise((resolve, reject) => {
        writevCallback(this.fd, buffers, position, (error, written) => {
          if (error) reject(toFssError(error, { syscall: 'pwritev', path }));
          else resolve(written);
        });
      });
    this.rangeWriter = {
      size: this.size,
      path,
      write: (source, offset) => this.writeRange(source, offset),
    };
    // Only an image file can say where its holes are; a block device has no allocation
    // capability and every byte of it counts as data (what it tells about discards is no
    // promise that they read back as zeroes).
    if (properties.kind === 'file') {
      this.allocation = async (offset, length, runsMax) => {
        this.checkOpen('lseek');
        if (!Number.isSafeInteger(offset) || offset < 0 || length <= 0 || offset + length > this.size) {
          throw new FssError('EINVAL', `allocation query ${offset}+${length} is outside the device`, {
            syscall: 'lseek',
            path,
          });
        }
        return this.track(fileAllocation(this.fd, offset, length, runsMax, path));
      };
    }
  }

  /** Image files: SEEK_DATA/SEEK_HOLE (allocation.ts). Block devices do not have it. */
  readonly allocation?: (offset: number, length: number, runsMax: number) => Promise<AllocationRun[]>;

  /** Offset/length alignment of requests that can skip the bounce buffer. */
  private get alignment(): number {
    return this.properties.offsetAlignment;
  }

  get ioMode(): IoMode {
    return this.properties.ioMode;
  }

  async read(target: Uint8Array, offset: number): Promise<number> {
    this.checkOpen('read');
    const length = readableLength(this.size, offset, target.length, this.path);
    if (length === 0) return 0;
    return this.track(this.readRange(target.subarray(0, length), offset));
  }

  async write(source: Uint8Array, offset: number): Promise<void> {
    this.checkOpen('write');
    if (this.readOnly) throw new FssError('EROFS', undefined, { syscall: 'write', path: this.path });
    checkWriteRange(this.size, offset, source.length, this.path);
    if (source.length === 0) return;
    await this.track(this.writeRange(source, offset));
  }

  /**
   * Writes `sources` back to back from `offset`: one pwritev per 1024 buffers (IOV_MAX) when
   * every buffer can go to O_DIRECT as it is, else buffer by buffer.
   */
  async writev(sources: readonly Uint8Array[], offset: number): Promise<void> {
    this.checkOpen('pwritev');
    if (this.readOnly) throw new FssError('EROFS', undefined, { syscall: 'pwritev', path: this.path });
    const buffers = sources.filter((source) => source.length > 0);
    const length = buffers.reduce((sum, source) => sum + source.length, 0);
    checkWriteRange(this.size, offset, length, this.path);
    if (length === 0) return;
    await this.track(this.writevRange(buffers, offset, length));
  }

  async flush(): Promise<void> {
    this.checkOpen('fdatasync');
    await this.track(
      fdatasync(this.fd).catch((error: unknown) => {
        throw toFssError(error, { syscall: 'fdatasync', path: this.path });
      }),
    );
  }

  /**
   * Discards a range. Block devices: BLKDISCARD on the whole sectors inside the range (a
   * partial sector keeps its data: discarding it would destroy bytes outside the range).
   * Image files: a hole punched with fallocate.
   */
  async discard(offset: number, length: number): Promise<void> {
    this.checkOpen('discard');
    if (this.readOnly) throw new FssError('EROFS', undefined, { syscall: 'discard', path: this.path });
    checkWriteRange(this.size, offset, length, this.path);
    if (length === 0) return; // fallocate refuses an empty range with EINVAL
    if (this.properties.kind === 'file') {
      await this.track(this.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length));
      return;
    }
    const sector = this.logicalSectorSize;
    const start = roundUp(offset, sector);
    const end = roundDown(offset + length, sector);
    if (end <= start) return;
    await this.track(this.discardSectors(start, end));
  }

  private async discardSectors(start: number, end: number): Promise<void> {
    const unlock = await this.writeLock.lock(start, end);
    try {
      await rangeIoctl(this.fd, BLKDISCARD, start, end - start, this.path);
    } finally {
      unlock();
    }
  }

  /**
   * Zeroes a range. Whole sectors by BLKZEROOUT (block devices) or the whole range by
   * fallocate ZERO_RANGE (files); partial sectors, and filesystems without ZERO_RANGE, by
   * writing zeroes.
   */
  async writeZeroes(offset: number, length: number): Promise<void> {
    this.checkOpen('write');
    if (this.readOnly) throw new FssError('EROFS', undefined, { syscall: 'write', path: this.path });
    checkWriteRange(this.size, offset, length, this.path);
    // Tracked as a whole, so close() waits for every piece of it, not only the ioctl.
    await this.track(this.zeroRange(offset, length));
  }

  private async zeroRange(offset: number, length: number): Promise<void> {
    const requestEnd = offset + length;
    const unit = this.properties.kind === 'file' ? 1 : this.logicalSectorSize;
    const start = Math.min(roundUp(offset, unit), requestEnd);
    const end = Math.max(roundDown(requestEnd, unit), start);
    if (end > start && !(await this.zeroWholeUnits(start, end))) {
      // Not supported by this device or filesystem: send the zeroes.
      await this.writeZeroBytes(offset, length);
      return;
    }
    if (start > offset) await this.writeZeroBytes(offset, start - offset);
    if (requestEnd > end) await this.writeZeroBytes(end, requestEnd - end);
  }

  /** A buffer this device can transfer without a bounce copy (aligned for O_DIRECT). */
  allocateBuffer(length: number): Uint8Array {
    return alignedBuffer(length, Math.max(4096, this.properties.memoryAlignment));
  }

  /**
   * The descriptor for other threads (a FUSE server's reader threads): positioned I/O of
   * aligned ranges, straight to the device, as `read` and `write` would do them. Undefined
   * once closing.
   */
  workerIo(): WorkerIo | undefined {
    if (this.closing !== undefined) return undefined;
    return this.workerGate.workerIo({
      fd: this.fd,
      offsetAlignment: this.properties.offsetAlignment,
      memoryAlignment: this.properties.memoryAlignment,
      size: this.size,
    });
  }

  /** Waits for requests in flight (workers' too), then closes the descriptor (releasing the claim). */
  async close(): Promise<void> {
    if (this.closing !== undefined) return this.closing;
    this.closing = (async () => {
      await this.workerGate.revoke(WorkerIoPermit.READ | WorkerIoPermit.WRITE);
      await Promise.allSettled([...this.inFlight]);
      const fd = this.fd;
      this.fd = -1;
      await close(fd).catch((error: unknown) => {
        throw toFssError(error, { syscall: 'close', path: this.path });
      });
    })();
    return this.closing;
  }

  // --- Internal helpers ---

  private checkOpen(syscall: string): void {
    if (this.closing !== undefined) {
      throw new FssError('EBADF', 'device is closed', { syscall, path: this.path });
    }
  }

  private track<T>(work: Promise<T>): Promise<T> {
    this.inFlight.add(work);
    const forget = () => this.inFlight.delete(work);
    work.then(forget, forget);
    return work;
  }

  /** Reads all of `target` (already clipped to the device) from `offset`. */
  private async readRange(target: Uint8Array, offset: number): Promise<number> {
    if (this.canTransferDirectly(target, offset)) {
      return readFully(this.preadAt, target, offset);
    }
    // Bounce: each chunk reads the aligned extent around its piece and copies the piece out.
    let done = 0;
    await this.pool.with(async (bounce) => {
      while (done < target.length) {
        const position = offset + done;
        const start = roundDown(position, this.alignment);
        const end = Math.min(roundUp(offset + target.length, this.alignment), start + bounce.length);
        const got = await readFully(this.preadAt, bounce.subarray(0, end - start), start);
        const pieceEnd = Math.min(offset + target.length, end, start + got);
        if (pieceEnd <= position) break; // end of file
        target.set(bounce.subarray(position - start, pieceEnd - start), done);
        done += pieceEnd - position;
      }
    });
    return done;
  }

  /** Writes all of `source` at `offset` under the lock of its aligned extent. */
  private async writeRange(source: Uint8Array, offset: number): Promise<void> {
    const lockStart = roundDown(offset, this.alignment);
    const lockEnd = roundUp(offset + source.length, this.alignment);
    const unlock = await this.writeLock.lock(lockStart, lockEnd);
    try {
      if (this.canTransferDirectly(source, offset)) {
        await writeFully(this.pwriteAt, source, offset, this.path);
        return;
      }
      await this.pool.with(async (bounce) => {
        let done = 0;
        while (done < source.length) {
          const position = offset + done;
          const start = roundDown(position, this.alignment);
          const end = Math.min(roundUp(offset + source.length, this.alignment), start + bounce.length);
          const pieceEnd = Math.min(offset + source.length, end);
          const chunk = bounce.subarray(0, end - start);
          // Read-modify-write: only the partial head and tail sectors hold bytes we must keep.
          if (position > start) await this.readSector(chunk, start, start);
          const tail = end - this.alignment;
          if (pieceEnd < end && !(tail === start && position > start))
            await this.readSector(chunk, tail, start);
          chunk.set(source.subarray(done, done + (pieceEnd - position)), position - start);
          await writeFully(this.pwriteAt, chunk, start, this.path);
          done += pieceEnd - position;
        }
      });
    } finally {
      unlock();
    }
  }

  private async writevRange(buffers: Uint8Array[], offset: number, length: number): Promise<void> {
    let position = offset;
    if (!buffers.every((buffer, index) => this.canTransferDirectly(buffer, index === 0 ? offset : 0))) {
      for (const buffer of buffers) {
        await this.writeRange(buffer, position);
        position += buffer.length;
      }
      return;
    }
    const unlock = await this.writeLock.lock(offset, offset + length);
    try {
      // writevFully takes IOV_MAX buffers per call and resumes a short write where it stopped.
      await writevFully(this.pwritevAt, buffers, offset, this.path);
    } finally {
      unlock();
    }
  }

  /** Reads the aligned unit at `at` into `chunk` (which starts at device offset `chunkStart`). */
  private async readSector(chunk: Uint8Array, at: number, chunkStart: number): Promise<void> {
    const unit = chunk.subarray(at - chunkStart, at - chunkStart + this.alignment);
    const got = await readFully(this.preadAt, unit, at);
    unit.fill(0, got); // past the end of an image file
  }

  /** True when O_DIRECT can use `bytes` at `offset` as they are (always, when buffered). */
  private canTransferDirectly(bytes: Uint8Array, offset: number): boolean {
    if (this.properties.ioMode === 'buffered') return true;
    return (
      offset % this.alignment === 0 &&
      bytes.length % this.alignment === 0 &&
      isAddressAligned(bytes, this.properties.memoryAlignment)
    );
  }

  /** Zeroes [start, end) without sending data; false when the device or filesystem cannot. */
  private async zeroWholeUnits(start: number, end: number): Promise<boolean> {
    const unlock = await this.writeLock.lock(start, end);
    try {
      if (this.properties.kind === 'file') {
        await this.fallocate(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, start, end - start);
      } else {
        await rangeIoctl(this.fd, BLKZEROOUT, start, end - start, this.path);
      }
      return true;
    } catch (error) {
      if (error instanceof FssError && error.code === 'EOPNOTSUPP') return false;
      throw error;
    } finally {
      unlock();
    }
  }

  /**
   * Writes zeroes by writing them (core's writeZeroesByWriting, through writeRange) from one
   * never-written zero buffer of the device's own aligned memory, a bounce buffer long, so
   * aligned pieces need no bounce copy. Not a buffer from the bounce pool: writeRange may need
   * a bounce buffer itself for an unaligned piece, and holding one here while waiting for
   * another deadlocks once the pool is empty (8 concurrent WRITE_ZEROES).
   */
  private writeZeroBytes(offset: number, length: number): Promise<void> {
    this.zeroes ??= this.allocateBuffer(this.pool.bufferBytes).fill(0);
    return writeZeroesByWriting(this.rangeWriter, offset, length, this.zeroes);
  }

  private async fallocate(mode: number, offset: number, length: number): Promise<void> {
    const { result, errno } = await callAsync(libc().fallocate, this.fd, mode, offset, length);
    if (result < 0) throw errnoError(errno, 'fallocate', this.path);
  }
}

function roundDown(value: number, unit: number): number {
  return value - (value % unit);
}

function roundUp(value: number, unit: number): number {
  const rest = value % unit;
  return rest === 0 ? value : value + unit - rest;
}
