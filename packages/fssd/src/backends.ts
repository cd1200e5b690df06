/**
 * What the daemon opens, behind one small interface so the unit and origin logic can be
 * tested against memory devices and so each package boundary is in one place:
 *
 *   origins      @fss/blockdev-linux: block devices O_EXCL, image files flock()ed and refused
 *                while a loop device is backed by them (SPEC §1 claim)
 *   file stores  @fss/backing-file: created 0600 O_EXCL, sparse, optional unlink once open
 *   raw stores   @fss/backing-rawdev: claimed O_EXCL, refused when it shares the origin's storage
 *   mount points @fss/blockdev-linux mountinfo, to name the device behind a mount point, and
 *                FIFREEZE/FITHAW (in a worker, with a watchdog) around a snapshot of one
 *   devices      @fss/fuse: a loop device over fssd's own FUSE file of an origin or a snapshot
 */

import { existsSync } from 'node:fs';
import { type FileBackingStoreOptions, openFileBackingStore } from '@fss/backing-file';
import { openRawDeviceBackingStore } from '@fss/backing-rawdev';
import { openBlockDevice, sourceDeviceOf, withFrozenFilesystem } from '@fss/blockdev-linux';
import type { BackingStore, BlockDevice } from '@fss/core';
import { attachBlockDevice, removeStaleMount } from '@fss/fuse';
import type { Attacher } from './devices';

export interface Backends {
  /** Opens and claims an origin; EBUSY (with a message saying what to do) when it is in use. */
  openOrigin(path: string): Promise<BlockDevice>;
  /** The size in bytes of a would-be origin, read without claiming it. */
  originSize(path: string): Promise<number>;
  openFileStore(path: string, options: FileBackingStoreOptions): Promise<BackingStore>;
  /**
   * Opens (claims) a raw device store and says how many bytes it holds; refuses (EINVAL) one
   * that shares storage with `originPath`.
   */
  openRawStore(path: string, originPath: string): Promise<{ store: BackingStore; sizeBytes: number }>;
  /** The block device a mount point is mounted from. */
  mountSource(path: string): Promise<{ devicePath: string; rdev: string }>;
  /**
   * Runs `work` with the filesystem at `mountPoint` frozen (FIFREEZE), and thaws it in every
   * outcome; the freeze runs off the daemon's event loop, which serves the filesystem's I/O.
   */
  frozen<T>(mountPoint: string, work: () => Promise<T>): Promise<T>;
  /** Kernel block devices (a loop device over a FUSE file); undefined where they cannot be made. */
  attacher: Attacher | undefined;
}

/** Kernel devices need root, /dev/fuse and the loop driver. */
export function canAttachDevices(): boolean {
  return process.getuid?.() === 0 && existsSync('/dev/fuse') && existsSync('/dev/loop-control');
}

export const fuseAttacher: Attacher = {
  attach: async (device, options) => {
    const attached = await attachBlockDevice(device, {
      mountPoint: options.mountPoint,
      readOnly: options.readOnly,
    });
    return { loopPath: attached.loop.path, close: () => attached.close() };
  },
  removeStale: (mountPoint) => removeStaleMount(mountPoint),
};

export const linuxBackends: Backends = {
  openOrigin: (path) => openBlockDevice(path, { exclusive: true }),
  originSize: async (path) => {
    const device = await openBlockDevice(path, { readOnly: true, exclusive: false, direct: false });
    const { size } = device;
    await device.close();
    return size;
  },
  openFileStore: (path, options) => openFileBackingStore(path, options),
  openRawStore: async (path, originPath) => {
    const store = await openRawDeviceBackingStore(path, { origin: originPath });
    return { store, sizeBytes: store.sizeBytes };
  },
  mountSource: async (path) => {
    const source = await sourceDeviceOf(path);
    return { devicePath: source.devicePath, rdev: `${source.major}:${source.minor}` };
  },
  frozen: (mountPoint, work) => withFrozenFilesystem(mountPoint, work),
  attacher: canAttachDevices() ? fuseAttacher : undefined,
};
