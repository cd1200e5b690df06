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
 * btrfs, overlayfs, tmpfs and FUSE report anonymous devices (major 0). btrfs still names its
 * block device in the source field, so a major-0 entry whose source is a block device counts
 * as that device's; the others are not on a block device and `sourceDeviceOf` says so with
 * ENOTBLK.
 */
import { readFile, realpath, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
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
  // With stacked mounts the last entry for a mount point is the visible one. Its device
  // number is the superblock's; on btrfs a subvolume's files report their own anonymous one,
  // so only a block-device number must match what stat says.
  const entry = entries.findLast(
    (e) => e.mountPoint === mountPoint && (e.major === 0 || (e.major === major && e.minor === minor)),
  );
  if (entry === undefined) {
    throw new FssError('EINVAL', `${path} is not a mount point`, { syscall: 'mountinfo', path });
  }
  if (entry.major === 0) {
    const named = await namedBlockDevice(entry.source);
    if (named !== undefined) return { mountPoint, ...named, fsType: entry.fsType, source: entry.source };
  }
  const devicePath = entry.major === 0 ? undefined : await blockDeviceNode(major, minor);
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
  const mounted: string[] = [];
  for (const entry of entries) {
    if (entry.major === major && entry.minor === minor) mounted.push(entry.mountPoint);
    else if (entry.major === 0 && entry.source.startsWith('/')) {
      const named = await namedBlockDevice(entry.source); // btrfs: see the file comment
      if (named?.major === major && named.minor === minor) mounted.push(entry.mountPoint);
    }
  }
  return mounted;
}

/** A mount table source that names a block device (btrfs's), as its number and path. */
async function namedBlockDevice(
  source: string,
): Promise<{ major: number; minor: number; devicePath: string } | undefined> {
  if (!source.startsWith('/')) return undefined;
  const stats = await stat(source, { bigint: true }).catch(() => undefined);
  if (stats === undefined || !stats.isBlockDevice()) return undefined;
  return { ...decodeDeviceNumber(stats.rdev), devicePath: source };
}

/** The mounted filesystem a path lies on, and its block device when it has one. */
export interface Filesystem {
  mountPoint: string;
  fsType: string;
  source: string;
  /** The block device it is on ("MAJ:MIN" and node), undefined for tmpfs, FUSE, overlayfs … */
  device: { rdev: string; devicePath: string } | undefined;
}

/**
 * Which filesystem `path` is on: the visible mount with the longest mount point that
 * contains the path's real location (a path that does not exist yet counts as its nearest
 * existing ancestor, where it would be created).
 */
export async function filesystemOf(path: string, mountInfo?: MountInfoEntry[]): Promise<Filesystem> {
  let location = path;
  let real: string | undefined;
  for (;;) {
    real = await realpath(location).catch(() => undefined);
    if (real !== undefined) break;
    const parent = dirname(location);
    if (parent === location) throw new FssError('ENOENT', `${path} has no existing ancestor`, { path });
    location = parent;
  }
  const entries = mountInfo ?? (await readMountInfo());
  let best: MountInfoEntry | undefined;
  for (const entry of entries) {
    const inside =
      entry.mountPoint === '/' || real === entry.mountPoint || real.startsWith(`${entry.mountPoint}/`);
    // With stacked mounts the last entry for a mount point is the visible one.
    if (inside && (best === undefined || entry.mountPoint.length >= best.mountPoint.length)) best = entry;
  }
  if (best === undefined)
    throw new FssError('EINVAL', `no mount holds ${path}`, { syscall: 'mountinfo', path });
  let device: Filesystem['device'];
  if (best.major === 0) {
    const named = await namedBlockDevice(best.source);
    if (named !== undefined) device = { rdev: `${named.major}:${named.minor}`, devicePath: named.devicePath };
  } else {
    const node = await blockDeviceNode(best.major, best.minor);
    if (node !== undefined) device = { rdev: `${best.major}:${best.minor}`, devicePath: node };
  }
  return { mountPoint: best.mountPoint, fsType: best.fsType, source: best.source, device };
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
