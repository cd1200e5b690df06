/**
 * Which storage a path really is, so a store on the origin itself (or on a partition of it,
 * or on a loop device over the origin's image) is refused before anything is opened.
 *
 * A path's identity is a set of tokens; two paths overlap when their sets intersect:
 *
 *   block device      "dev:MAJ:MIN", plus its whole disk's "dev:MAJ:MIN" when it is a
 *                     partition, plus "file:DEV:INO" of its backing file when it is a loop
 *   image file        "file:DEV:INO"
 *
 * Writing the store would then overwrite the origin's data (or the reverse), which a snapshot
 * can never survive: that is EINVAL, not a runtime failure.
 */
import { readFile, realpath } from 'node:fs/promises';
import { basename } from 'node:path';
import { statx } from '@fss/blockdev-linux';

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
    const disk = await readFile(`${sysfs}/../dev`, 'utf8').catch(() => undefined);
    if (disk !== undefined) tokens.add(`dev:${disk.trim()}`);
  }
  const loopName = basename(isPartition ? `${sysfs}/..` : sysfs);
  const backing = await readFile(`/sys/block/${loopName}/loop/backing_file`, 'utf8').catch(() => undefined);
  if (backing !== undefined) {
    try {
      const file = statx(backing.trimEnd());
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
  for (const token of first) if (second.has(token)) return true;
  return false;
}
