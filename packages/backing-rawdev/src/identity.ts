/**
 * Which storage a path really is, so a store on the origin itself (or on a partition of it,
 * or on a loop device over the origin's image) is refused before anything is opened.
 *
 * A path's identity is a set of tokens; two paths overlap when their sets intersect:
 *
 *   block device      "dev:MAJ:MIN", plus "file:DEV:INO" of its backing file when it (or the
 *                     disk it is a partition of) is a loop device
 *   partition         also "disk:MAJ:MIN" of its whole disk, which overlaps that disk's "dev:"
 *                     token only: two partitions of one disk do not overlap each other
 *   image file        "file:DEV:INO"
 *
 * Writing the store would then overwrite the origin's data (or the reverse), which a snapshot
 * can never survive: that is EINVAL, not a runtime failure.
 */
import { readFile, realpath } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { loopBackingFile, statx } from '@fss/blockdev-linux';

export async function storageIdentity(path: string): Promise<Set<string>> {
  const found = statx(path);
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
      const file = statx(backing);
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
export function identitiesOverlap(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  return overlaps(a, b) || overlaps(b, a);
}

/** A shared token, or `a` is a partition of the whole disk `b`. */
function overlaps(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  for (const token of a) {
    if (!token.startsWith('disk:')) {
      if (b.has(token)) return true;
    } else if (b.has(`dev:${token.slice('disk:'.length)}`)) {
      return true; // sharing only a disk (sibling partitions) is no overlap
    }
  }
  return false;
}
