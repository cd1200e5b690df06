/**
 * Storage identity: which storage a path really is, so that fss can tell when two names are
 * the same bytes. fssd uses it to find an origin again by any of its names, to refuse a
 * backup on an origin or an origin that is a unit's store, and backing-rawdev to refuse a
 * store on its own origin (a partition of it, a loop device over its image), all before
 * anything is opened.
 *
 * A path's identity is a set of tokens; two paths overlap when their sets intersect:
 *
 *   block device      "dev:MAJ:MIN", plus "file:DEV:INO" of its backing file when it (or the
 *                     disk it is a partition of) is a loop device
 *   partition         also "disk:MAJ:MIN" of its whole disk, which overlaps that disk's "dev:"
 *                     token only: two partitions of one disk do not overlap each other
 *   image file        "file:DEV:INO"
 *
 * Writing one of two overlapping paths changes the other's bytes behind fss's back, which a
 * snapshot can never survive: callers refuse that up front, not at run time.
 */
import { readFile, realpath } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { loopBackingFile } from './claim';
import { statxAsync } from './statx';

/** The storage a path is: a set of tokens (see above). */
export type StorageIdentity = ReadonlySet<string>;

/**
 * What `path` is (following symlinks); fails as statx does (an errno-shaped FssError with
 * syscall `statx`) when it is not there.
 */
export async function storageIdentity(path: string): Promise<Set<string>> {
  const found = await statxAsync(path);
  const tokens = new Set<string>();
  if (found.kind === 'file') {
    tokens.add(`file:${found.dev}:${found.inode}`);
    return tokens;
  }
  if (found.kind !== 'block') {
    tokens.add(`char:${found.rdev}`);
    return tokens;
  }
  tokens.add(`dev:${found.rdev}`);
  const sysfs = await realpath(`/sys/dev/block/${found.rdev}`).catch(() => undefined);
  if (sysfs === undefined) return tokens;
  // A partition's sysfs directory sits inside its disk's, and has a `partition` file.
  const isPartition = await readFile(`${sysfs}/partition`, 'utf8').then(
    () => true,
    () => false,
  );
  if (isPartition) {
    const disk = await readFile(`${dirname(sysfs)}/dev`, 'utf8').catch(() => undefined);
    if (disk !== undefined) tokens.add(`disk:${disk.trim()}`);
  }
  const loopName = basename(isPartition ? dirname(sysfs) : sysfs);
  const backing = await loopBackingFile(loopName);
  if (backing !== undefined) {
    try {
      const file = await statxAsync(backing); // may be a FUSE file fssd serves: never on the main thread
      tokens.add(`file:${file.dev}:${file.inode}`);
    } catch {
      // The backing file is gone from the namespace; nothing to compare with.
    }
  }
  return tokens;
}

/** True when writing one of the two paths could change the other's bytes. */
export async function sameStorage(a: string, b: string): Promise<boolean> {
  const [first, second] = await Promise.all([storageIdentity(a), storageIdentity(b)]);
  return identitiesOverlap(first, second);
}

/** True when two identities (from storageIdentity) share storage. */
export function identitiesOverlap(a: StorageIdentity, b: StorageIdentity): boolean {
  return overlaps(a, b) || overlaps(b, a);
}

/** The same storage, not just overlapping (a partition is not its disk). */
export function sameIdentity(a: StorageIdentity, b: StorageIdentity): boolean {
  return a.size === b.size && [...a].every((token) => b.has(token));
}

/** A shared token, or `a` is a partition of the whole disk `b`. */
function overlaps(a: StorageIdentity, b: StorageIdentity): boolean {
  for (const token of a) {
    if (!token.startsWith('disk:')) {
      if (b.has(token)) return true;
    } else if (b.has(`dev:${token.slice('disk:'.length)}`)) {
      return true; // sharing only a disk (sibling partitions) is no overlap
    }
  }
  return false;
}
