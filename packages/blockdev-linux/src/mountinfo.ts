/**
 * /proc/self/mountinfo (proc(5)): which device a mount point comes from, and where a device
 * is mounted. A line reads
 *
 *   36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
 *   (1)(2) (3)  (4)   (5)    (6)       (7)     (8) (9)  (10)      (11)
 *
 * mount id, parent id, major:minor (the st_dev of files on that filesystem), root within the
 * filesystem, mount point, mount options, optional fields ended by "-", fs type, source,
 * superblock options. Paths escape space, tab, newline and backslash as octal (`\040`).
 *
 * btrfs, overlayfs, tmpfs and FUSE report anonymous devices (major 0); they are not block
 * devices and `sourceDeviceOf` says so with ENOTBLK.
 */
import { readFile, realpath, stat } from 'node:fs/promises';
import { FssError, toFssError } from '@fss/core';

export interface MountInfoEntry {
  mountId: number;
  parentId: number;
  major: number;
  minor: number;
  /** The directory of the filesystem mounted here (not "/" for bind mounts). */
  root: string;
  mountPoint: string;
  mountOptions: string;
  optionalFields: string[];
  fsType: string;
  source: string;
  superOptions: string;
}

/** Parses the text of a mountinfo file; malformed lines are skipped. */
export function parseMountInfo(text: string): MountInfoEntry[] {
  const entries: MountInfoEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    const separator = fields.indexOf('-', 6);
    if (separator < 0 || fields.length < separator + 4) continue;
    const [major, minor] = (fields[2] ?? '').split(':').map(Number);
    if (major === undefined || minor === undefined || Number.isNaN(major) || Number.isNaN(minor)) continue;
    entries.push({
      mountId: Number(fields[0]),
      parentId: Number(fields[1]),
      major,
      minor,
      root: unescapeMountPath(fields[3] ?? ''),
      mountPoint: unescapeMountPath(fields[4] ?? ''),
      mountOptions: fields[5] ?? '',
      optionalFields: fields.slice(6, separator),
      fsType: fields[separator + 1] ?? '',
      source: unescapeMountPath(fields[separator + 2] ?? ''),
      superOptions: fields[separator + 3] ?? '',
    });
  }
  return entries;
}

/** Undoes the kernel's octal escapes (`\040` → space). */
export function unescapeMountPath(text: string): string {
  return text.replace(/\\([0-7]{3})/g, (_match, octal: string) =>
    String.fromCharCode(Number.parseInt(octal, 8)),
  );
}

/** The mount table of this process's mount namespace. */
export async function readMountInfo(file = '/proc/self/mountinfo'): Promise<MountInfoEntry[]> {
  try {
    return parseMountInfo(await readFile(file, 'utf8'));
  } catch (error) {
    throw toFssError(error, { syscall: 'open', path: file });
  }
}

/** Splits a Linux st_dev/st_rdev into major and minor (glibc's gnu_dev_major/minor). */
export function decodeDeviceNumber(dev: bigint): { major: number; minor: number } {
  // The masks bound each part to 32 bits; an unbounded `& ~0xff` would pull the major's high
  // bits into the minor.
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & 0xfffff000n);
  const minor = (dev & 0xffn) | ((dev >> 12n) & 0xffffff00n);
  return { major: Number(major), minor: Number(minor) };
}

export interface MountSource {
  mountPoint: string;
  major: number;
  minor: number;
  fsType: string;
  /** The source field of mountinfo, e.g. `/dev/loop3`. */
  source: string;
  /** The block device node, from /sys/dev/block/MAJ:MIN (e.g. `/dev/loop3`). */
  devicePath: string;
}

/**
 * The block device a mounted filesystem lives on. `path` must be a mount point (ENOENT / EINVAL
 * otherwise); a filesystem without a block device (tmpfs, btrfs, FUSE) is ENOTBLK.
 */
export async function sourceDeviceOf(path: string, mountInfo?: MountInfoEntry[]): Promise<MountSource> {
  let mountPoint: string;
  let dev: bigint;
  try {
    mountPoint = await realpath(path);
    dev = (await stat(mountPoint, { bigint: true })).dev;
  } catch (error) {
    throw toFssError(error, { syscall: 'stat', path });
  }
  const { major, minor } = decodeDeviceNumber(dev);
  const entries = mountInfo ?? (await readMountInfo());
  // With stacked mounts the last entry for a mount point is the visible one.
  const entry = entries.findLast(
    (e) => e.mountPoint === mountPoint && e.major === major && e.minor === minor,
  );
  if (entry === undefined) {
    throw new FssError('EINVAL', `${path} is not a mount point`, { syscall: 'mountinfo', path });
  }
  const devicePath = major === 0 ? undefined : await blockDeviceNode(major, minor);
  if (devicePath === undefined) {
    throw new FssError(
      'ENOTBLK',
      `${entry.fsType} at ${mountPoint} is not on a block device (${entry.source})`,
      {
        syscall: 'mountinfo',
        path,
      },
    );
  }
  return { mountPoint, major, minor, fsType: entry.fsType, source: entry.source, devicePath };
}

/** Every mount point of the block device at `devicePath` (empty when it is not mounted). */
export async function mountPointsOf(devicePath: string, mountInfo?: MountInfoEntry[]): Promise<string[]> {
  let rdev: bigint;
  try {
    const stats = await stat(devicePath, { bigint: true });
    if (!stats.isBlockDevice()) return [];
    rdev = stats.rdev;
  } catch (error) {
    throw toFssError(error, { syscall: 'stat', path: devicePath });
  }
  const { major, minor } = decodeDeviceNumber(rdev);
  const entries = mountInfo ?? (await readMountInfo());
  return entries.filter((e) => e.major === major && e.minor === minor).map((e) => e.mountPoint);
}

/** /dev/NAME for a block device number, from sysfs; undefined when there is no such block device. */
export async function blockDeviceNode(major: number, minor: number): Promise<string | undefined> {
  try {
    const uevent = await readFile(`/sys/dev/block/${major}:${minor}/uevent`, 'utf8');
    const name = /^DEVNAME=(.+)$/m.exec(uevent)?.[1];
    return name === undefined ? undefined : `/dev/${name}`;
  } catch {
    return undefined;
  }
}
