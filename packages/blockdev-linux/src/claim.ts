/**
 * The exclusive claim of an origin (SPEC §1): while fss serves a device, nothing else may
 * write it behind our back, or a snapshot would silently miss writes.
 *
 * - Block devices are opened O_EXCL (without O_CREAT). The kernel then refuses a second
 *   O_EXCL open and any mount with EBUSY, and our own open fails with EBUSY when the device
 *   is mounted or claimed by someone else (another fss, a dm or md device, a mount).
 *   Plain opens (dd) are still allowed; that is the kernel's rule, not ours to change.
 * - Image files get an exclusive, non-blocking flock(2); it conflicts with every other flock
 *   on the file, including a second open in this process. A file that backs a loop device
 *   is refused: the loop driver writes it without any lock.
 */
import { readdir, readFile } from 'node:fs/promises';
import { FssError } from '@fss/core';
import { errnoError } from './errors';
import { lastErrno, libc } from './libc';
import { mountPointsOf } from './mountinfo';
import { statx, statxAsync } from './statx';

const LOCK_EX = 2;
const LOCK_NB = 4;
const EWOULDBLOCK = 11;

/** Why an O_EXCL open of a block device failed with EBUSY, as a message that says what to do. */
export async function busyDeviceError(path: string, cause?: unknown): Promise<FssError> {
  const mountPoints = await mountPointsOf(path).catch(() => []);
  const where =
    mountPoints.length > 0
      ? `mounted on ${mountPoints.join(', ')}`
      : 'claimed by another user (fss, a mount, a dm/md/loop holder)';
  return new FssError(
    'EBUSY',
    `${path} is ${where}; fss snapshots only a device whose every write passes through it: ` +
      `unmount or release it, attach it to fss (fss origin add ${path} --attach) and mount ` +
      `/dev/fss/NAME instead`,
    { syscall: 'open', path, cause },
  );
}

/** Takes the exclusive lock of an open image file; EBUSY when someone else holds a lock on it. */
export function lockImage(fd: number, path: string): void {
  if (libc().flock(fd, LOCK_EX | LOCK_NB) === 0) return;
  const errno = lastErrno();
  if (errno === EWOULDBLOCK) {
    throw new FssError('EBUSY', `${path} is locked by another process (or another open in this one)`, {
      syscall: 'flock',
      path,
    });
  }
  throw errnoError(errno, 'flock', path);
}

/**
 * The backing file of loop device `name` (e.g. `loop3`), as the kernel reports it in
 * /sys/block/<name>/loop/backing_file; undefined when `name` is not an attached loop device.
 */
export async function loopBackingFile(name: string): Promise<string | undefined> {
  try {
    return (await readFile(`/sys/block/${name}/loop/backing_file`, 'utf8')).trimEnd();
  } catch {
    return undefined;
  }
}

/** The loop devices (e.g. `/dev/loop3`) whose backing file is the file open at `fd`. */
export async function loopDevicesBackedBy(fd: number, path: string): Promise<string[]> {
  const image = statx(path, fd);
  let names: string[];
  try {
    names = (await readdir('/sys/block')).filter((name) => name.startsWith('loop'));
  } catch {
    return [];
  }
  const found: string[] = [];
  for (const name of names) {
    const backing = await loopBackingFile(name);
    if (backing === undefined) continue; // not attached
    // Compare by inode: the path may be a different name for the same file. Off the main
    // thread: the backing file may be a FUSE file this process serves (an attached device).
    try {
      const candidate = await statxAsync(backing);
      if (candidate.dev === image.dev && candidate.inode === image.inode) found.push(`/dev/${name}`);
    } catch {
      // The backing file was deleted or renamed; a path match is all we can do.
      if (backing === path) found.push(`/dev/${name}`);
    }
  }
  return found;
}

/** EBUSY when the image at `fd` backs a loop device, naming the devices and the way out. */
export async function refuseLoopBacked(fd: number, path: string): Promise<void> {
  const loops = await loopDevicesBackedBy(fd, path);
  if (loops.length === 0) return;
  throw new FssError(
    'EBUSY',
    `${path} backs loop device ${loops.join(', ')}, whose writes fss cannot see; detach it (losetup -d ${loops[0]}) or use the loop device as the origin`,
    { syscall: 'open', path },
  );
}
