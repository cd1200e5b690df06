/**
 * RawDeviceBackingStore: a snapshot's backing store on a raw block (or character) device.
 *
 * The device is opened through @fss/blockdev-linux: O_DIRECT, claimed exclusively (O_EXCL),
 * so nothing mounts or claims it while the snapshot lives. The store's block size is the
 * device's logical sector size, the smallest unit the engine may address on it; the engine
 * rounds its cluster size up to at least that.
 *
 * A raw device has a fixed end. A write crossing it fails with ENOSPC before any byte is
 * written, which the engine treats as a full store: the snapshot becomes invalid and the
 * origin keeps working (SPEC §2 "Invalidation"). Reads must lie wholly inside the device:
 * the engine only reads what it wrote, so anything else is EINVAL. Unlike a file, a raw
 * device is not sparse: never-written blocks read as whatever was on the device.
 *
 * The origin itself (or anything sharing its storage: a partition of it, the loop device over
 * its image) is refused with EINVAL before the device is opened.
 */

import { type LinuxBlockDevice, openBlockDevice, sameStorage } from '@fss/blockdev-linux';
import { type BackingStore, FssError } from '@fss/core';

export interface RawDeviceBackingStoreOptions {
  /**
   * The path of the origin the snapshot is of (a block device or image). The store refuses
   * to live on the same storage (EINVAL).
   */
  origin?: string;
  /** Use O_DIRECT (default true). */
  direct?: boolean;
  /** Bounce buffers for unaligned or unaligned-memory requests (see @fss/blockdev-linux). */
  bounceBufferBytes?: number;
  bounceBufferCount?: number;
}

/** Opens the raw device at `path` as a BackingStore; see the file comment for the rules. */
export async function openRawDeviceBackingStore(
  path: string,
  options: RawDeviceBackingStoreOptions = {},
): Promise<RawDeviceBackingStore> {
  if (options.origin !== undefined && (await sameStorage(path, options.origin))) {
    throw new FssError(
      'EINVAL',
      `${path} is the origin ${options.origin} (or shares its storage); a snapshot cannot be stored on its own origin`,
      {
        syscall: 'open',
        path,
      },
    );
  }
  const device = await openBlockDevice(path, {
    readOnly: false,
    exclusive: true,
    direct: options.direct,
    bounceBufferBytes: options.bounceBufferBytes,
    bounceBufferCount: options.bounceBufferCount,
  });
  if (device.properties.kind === 'file') {
    await device.close();
    throw new FssError('ENOTBLK', `${path} is a regular file; use @fss/backing-file for files`, {
      syscall: 'open',
      path,
    });
  }
  return new RawDeviceBackingStore(device);
}

export class RawDeviceBackingStore implements BackingStore {
  readonly blockSize: number;
  readonly path: string;
  /** Bytes the device holds; a write ending past this is ENOSPC. */
  readonly sizeBytes: number;
  /** The underlying device, for its properties (sector sizes, I/O mode). */
  readonly device: LinuxBlockDevice;

  constructor(device: LinuxBlockDevice) {
    this.device = device;
    this.blockSize = device.logicalSectorSize;
    this.path = device.path;
    this.sizeBytes = device.size;
  }

  async read(target: Uint8Array, offset: number): Promise<void> {
    const got = await this.device.read(target, offset);
    if (got !== target.length) {
      throw new FssError(
        'EINVAL',
        `read of ${target.length} at ${offset} crosses the end of the device (${this.sizeBytes} bytes)`,
        { syscall: 'read', path: this.path },
      );
    }
  }

  write(source: Uint8Array, offset: number): Promise<void> {
    return this.device.write(source, offset);
  }

  writev(sources: readonly Uint8Array[], offset: number): Promise<void> {
    return this.device.writev(sources, offset);
  }

  flush(): Promise<void> {
    return this.device.flush();
  }

  close(): Promise<void> {
    return this.device.close();
  }

  allocateBuffer(length: number): Uint8Array {
    return this.device.allocateBuffer(length);
  }
}
