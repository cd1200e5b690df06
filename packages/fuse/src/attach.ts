/**
 * attachBlockDevice: a BlockDevice as a kernel block device, /dev/loopN over our FUSE file.
 *
 * This is what fss does where the kernel has no nbd or ublk module: serveFuse makes the file,
 * attachLoop (from @fss/blockdev-linux) makes the block device, with direct I/O (the loop
 * driver then keeps many O_DIRECT requests in flight on the file, and nothing is cached
 * twice) and the device's logical sector size as the loop block size (so the kernel never
 * sends a request smaller or less aligned than the device accepts).
 *
 * The loop device's requests are limited to the FUSE file's largest READ/WRITE
 * (queue/max_sectors_kb = max_write): the block layer would otherwise merge sequential 1 MiB
 * requests into 1280 KiB ones (the driver's default limit), each of which FUSE then splits in
 * two requests, one of them a quarter the size. Best effort: a kernel that refuses the limit
 * only splits.
 *
 * Teardown runs in the reverse order: detach the loop device (which waits for its I/O),
 * then unmount the FUSE file. A loop device still open elsewhere (mounted) cannot be
 * detached: close() then fails with EBUSY and keeps serving, since unmounting the file under
 * a mounted filesystem would turn the filesystem's every I/O into an error.
 *
 * If the process exits without close(), serveFuse's exit hook aborts the FUSE connection and
 * unmounts lazily; ours, registered after it, then detaches the loop device synchronously,
 * which is safe only because nothing can wait for this process's answers any more. A lazily
 * unmounted file no longer has a path under the mount point, so a later removeStaleMount
 * could not find the device by its backing path. After SIGKILL neither hook runs and both
 * stay for removeStaleMount.
 */

import { writeFile } from 'node:fs/promises';
import { attachLoop, detachLoop, detachLoopSync, type LoopDevice } from '@fss/blockdev-linux';
import type { BlockDevice } from '@fss/core';
import { onProcessExit } from './exit-hooks';
import type { UnmountResult } from './mount';
import { type FuseFile, type ServeFuseOptions, serveFuse } from './serve';

export interface AttachBlockDeviceOptions extends ServeFuseOptions {
  /** Ask the loop driver for direct I/O (default true). */
  directIo?: boolean;
}

export interface AttachedBlockDevice {
  /** The block device, e.g. `/dev/loop3`, and how the kernel configured it. */
  readonly loop: LoopDevice;
  /** The FUSE file behind it. */
  readonly file: FuseFile;
  /** Detaches the loop device, then unmounts the file. Idempotent once it succeeded. */
  close(): Promise<UnmountResult>;
}

/** Makes `device` a kernel block device. On failure nothing stays attached or mounted. */
export async function attachBlockDevice(
  device: BlockDevice,
  options: AttachBlockDeviceOptions,
): Promise<AttachedBlockDevice> {
  const file = await serveFuse(device, options);
  let loop: LoopDevice;
  try {
    loop = await attachLoop(file.path, {
      readOnly: file.readOnly,
      directIo: options.directIo ?? true,
      blockSizeBytes: Math.min(4096, Math.max(512, device.logicalSectorSize)),
    });
  } catch (error) {
    await file.close().catch(() => undefined);
    throw error;
  }
  await limitRequestBytes(loop.number, options.maxWriteBytes ?? MiB);
  let closed: Promise<UnmountResult> | undefined;
  const removeExitHook = onProcessExit(() => detachLoopSync(loop.path));
  return {
    loop,
    file,
    close() {
      closed ??= (async () => {
        await detachLoop(loop.path);
        removeExitHook();
        return file.close();
      })();
      closed.catch(() => {
        closed = undefined; // EBUSY (still mounted): let the caller try again later
      });
      return closed;
    },
  };
}

const MiB = 1024 * 1024;

/** Caps loop device `number`'s requests at `bytes` (see the file comment); never throws. */
async function limitRequestBytes(number: number, bytes: number): Promise<void> {
  await writeFile(`/sys/block/loop${number}/queue/max_sectors_kb`, String(bytes / 1024)).catch(
    () => undefined,
  );
}
