/**
 * Mounting and unmounting our FUSE filesystem with mount(2) and umount2(2), without
 * fusermount: we run as root and speak the protocol ourselves.
 *
 * A FUSE mount is: open /dev/fuse, then mount(2) with fstype `fuse.fss` and the options
 * `fd=N,rootmode=40000,user_id=U,group_id=G` (the descriptor that will serve it, the root's
 * mode, the owner), plus `allow_other` (root's loop driver and other users may use the file)
 * and `default_permissions` (the kernel checks the file's mode bits, so we do not have to).
 * The kernel sends INIT on the descriptor right after; nothing is answered until we read it.
 *
 * Every call that may wait on the filesystem (mount, umount2) runs off the main thread
 * (koffi's async pool), because the main thread is the one that must answer the kernel.
 *
 * What a killed process leaves. When the serving process dies, even by SIGKILL, its /dev/fuse
 * descriptors close and the kernel aborts the connection: every request in flight and every
 * later access fails (ENOTCONN, "Transport endpoint is not connected"), nothing blocks. The
 * mount point itself stays mounted, since nobody unmounted it, and a loop device attached to
 * the file stays attached, failing its I/O with EIO. `removeStaleMount` cleans both: it
 * detaches loop devices whose backing file lies under the mount point and unmounts it lazily
 * (what `losetup -d` and `umount -l` would do). A later start calls it before mounting.
 */
import { closeSync, constants, openSync } from 'node:fs';
import {
  callAsync,
  detachLoop,
  errnoError,
  libc,
  loopDevicesUnder,
  readMountInfo,
} from '@fss/blockdev-linux';
import { FssError } from '@fss/core';

export const FUSE_FSTYPE = 'fuse.fss';
const MS_RDONLY = 1;
const MS_NOSUID = 2;
const MS_NODEV = 4;
const MNT_DETACH = 2;
const EBUSY = 16;
const EINVAL = 22;
const ENOENT = 2;
/** umount2 attempts before falling back to MNT_DETACH: EBUSY is often brief (udev, a closing fd). */
const UNMOUNT_ATTEMPTS = 10;
const UNMOUNT_RETRY_MS = 100;

export interface MountOptions {
  /** Mount read-only (MS_RDONLY): the kernel refuses writes before they reach us. */
  readOnly: boolean;
  /** Largest read the kernel may send (max_read=), the same as max_write. */
  maxReadBytes: number;
  /** Owner of the mount (user_id/group_id). */
  uid: number;
  gid: number;
}

/**
 * Opens /dev/fuse and mounts it on `mountPoint` (an existing directory). Returns the session
 * descriptor, non-blocking (the readers poll it). On failure nothing stays open or mounted.
 */
export async function mountFuse(mountPoint: string, options: MountOptions): Promise<number> {
  let fd: number;
  try {
    fd = openSync('/dev/fuse', constants.O_RDWR | constants.O_NONBLOCK);
  } catch (error) {
    throw new FssError('ENODEV', 'cannot open /dev/fuse (is FUSE available, and are we root?)', {
      syscall: 'open',
      path: '/dev/fuse',
      cause: error,
    });
  }
  const data = [
    `fd=${fd}`,
    'rootmode=40000',
    `user_id=${options.uid}`,
    `group_id=${options.gid}`,
    'allow_other',
    'default_permissions',
    `max_read=${options.maxReadBytes}`,
  ].join(',');
  const flags = MS_NOSUID | MS_NODEV | (options.readOnly ? MS_RDONLY : 0);
  const { result, errno } = await callAsync(libc().mount, 'fss', mountPoint, FUSE_FSTYPE, flags, data);
  if (result < 0) {
    closeSync(fd);
    throw errnoError(errno, 'mount', mountPoint);
  }
  return fd;
}

/** How an unmount went. */
export type UnmountResult = 'unmounted' | 'detached' | 'not-mounted';

/**
 * Unmounts `mountPoint`: umount2 retried while EBUSY, then MNT_DETACH (the mount leaves the
 * namespace at once; the connection lives until the last open file on it is closed).
 */
export async function unmountFuse(mountPoint: string): Promise<UnmountResult> {
  for (let attempt = 0; attempt < UNMOUNT_ATTEMPTS; attempt++) {
    const { result, errno } = await callAsync(libc().umount2, mountPoint, 0);
    if (result === 0) return 'unmounted';
    if (errno === EINVAL || errno === ENOENT) return 'not-mounted';
    if (errno !== EBUSY) throw errnoError(errno, 'umount2', mountPoint);
    await new Promise((resolve) => setTimeout(resolve, UNMOUNT_RETRY_MS));
  }
  const { result, errno } = await callAsync(libc().umount2, mountPoint, MNT_DETACH);
  if (result === 0) return 'detached';
  if (errno === EINVAL || errno === ENOENT) return 'not-mounted';
  throw errnoError(errno, 'umount2(MNT_DETACH)', mountPoint);
}

/** True when a `fuse.fss` filesystem is mounted exactly on `mountPoint`. */
export async function isFssFuseMounted(mountPoint: string): Promise<boolean> {
  const mounts = await readMountInfo();
  return mounts.some((entry) => entry.mountPoint === mountPoint && entry.fsType === FUSE_FSTYPE);
}

/**
 * Cleans what a killed server left at `mountPoint` (see the file comment): detaches the loop
 * devices backed by files under it, then unmounts it lazily. Returns what was done; does
 * nothing when no `fuse.fss` filesystem is mounted there. Never call it for a mount point a
 * live server of this process or another still serves.
 */
export async function removeStaleMount(mountPoint: string): Promise<{ loops: string[]; unmounted: boolean }> {
  if (!(await isFssFuseMounted(mountPoint))) return { loops: [], unmounted: false };
  const loops = await loopDevicesUnder(mountPoint);
  for (const loop of loops) await detachLoop(loop);
  const { result, errno } = await callAsync(libc().umount2, mountPoint, MNT_DETACH);
  if (result < 0 && errno !== EINVAL && errno !== ENOENT)
    throw errnoError(errno, 'umount2(MNT_DETACH)', mountPoint);
  return { loops, unmounted: result === 0 };
}
