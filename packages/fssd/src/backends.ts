/**
 * What the daemon opens, behind one small interface so the unit and origin logic can be
 * tested against memory devices and so each package boundary is in one place:
 *
 *   origins      @fss/blockdev-linux: block devices O_EXCL, image files flock()ed and refused
 *                while a loop device is backed by them (SPEC §1 claim)
 *   file stores  @fss/backing-file: created 0600 O_EXCL, sparse, optional unlink once open
 *   raw stores   @fss/backing-rawdev: claimed O_EXCL, refused when it shares the origin's storage
 *   mount points @fss/blockdev-linux mountinfo, to name the device behind a mount point
 */

import { type FileBackingStoreOptions, openFileBackingStore } from '@fss/backing-file';
import { openRawDeviceBackingStore } from '@fss/backing-rawdev';
import { openBlockDevice, sourceDeviceOf } from '@fss/blockdev-linux';
import type { BackingStore, BlockDevice } from '@fss/core';

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
  mountSource(path: string): Promise<string>;
}

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
  mountSource: async (path) => (await sourceDeviceOf(path)).devicePath,
};
