/**
 * Kernel block devices of origins and units (SPEC §5): what makes `mount /dev/fss0 /mnt`
 * work, as on NetBSD.
 *
 * This kernel has neither the nbd nor the ublk module, so a device is a loop device over a
 * file that fssd serves itself through FUSE (@fss/fuse's attachBlockDevice): the loop driver's
 * requests arrive as FUSE requests and go to the engine, so every write to an origin's device
 * takes the copy-on-write path, and a unit's device reads the snapshot. Each gets a name:
 *
 *   origins   $FSS_DEVDIR/fss/NAME -> /dev/loopN   (read-write; `fss origin add --attach`)
 *   units     $FSS_DEVDIR/fssN     -> /dev/loopN   (read-only; every unit when devices are on)
 *
 * $FSS_DEVDIR is /dev unless set (tests give each sandbox its own). The FUSE mount points are
 * $FSS_RUNDIR/fuse/NAME, in the run directory, never on a filesystem fss serves.
 *
 * Records. Before anything is attached, a record (the mount point and the link) is written to
 * $FSS_RUNDIR/devices/; it is removed once the device is detached. A daemon that died (SIGKILL,
 * a crash) leaves its FUSE mounts mounted and their loop devices attached, failing every I/O
 * with EIO; the next start reads the records and removes what they name: the loop devices
 * under each mount point, the mount (lazily), the link if it still points at that loop.
 *
 * Detaching fails with EBUSY, changing nothing, while the loop device is in use (a mounted
 * filesystem): callers refuse `fssconfig -u` and `fss origin rm` then, naming the mount.
 */
import {
  lstat,
  mkdir,
  readdir,
  readFile,
  readlink,
  rename,
  rm,
  rmdir,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { mountPointsOf, statx } from '@fss/blockdev-linux';
import type { RunPaths } from '@fss/control';
import { assert, type BlockDevice, FssError, isFssError, toFssError } from '@fss/core';
import type { Log } from './log';

/** What a running daemon's device looks like to the unit and origin tables. */
export interface KernelDevice {
  /** The name users see: /dev/fss0, /dev/fss/NAME. */
  readonly linkPath: string;
  /** The block device behind it: /dev/loopN. */
  readonly loopPath: string;
  /** Its device number, "MAJ:MIN": how a mount's source is recognised. */
  readonly rdev: string;
  readonly readOnly: boolean;
  /** Where filesystems on it are mounted now (empty when none). */
  mountPoints(): Promise<string[]>;
  /** Detaches it and removes its link and record; EBUSY, changing nothing, while it is in use. */
  close(): Promise<void>;
}

/** The part of @fss/fuse fssd uses: a loop device over a FUSE file of `device`. */
export interface Attacher {
  attach(
    device: BlockDevice,
    options: { mountPoint: string; readOnly: boolean },
  ): Promise<{ loopPath: string; close(): Promise<unknown> }>;
  /** Undoes what a killed daemon left at `mountPoint`. */
  removeStale(mountPoint: string): Promise<{ loops: string[] }>;
}

interface DeviceRecord {
  kind: 'origin' | 'unit';
  name: string;
  mountPoint: string;
  linkPath: string;
  loopPath?: string;
  pid: number;
}

export interface KernelDevicesOptions {
  paths: RunPaths;
  /** Where the links go (default /dev). */
  devDir: string;
  attacher: Attacher;
  log: Log;
}

export class KernelDevices {
  private readonly recordDir: string;
  private readonly fuseDir: string;

  constructor(private readonly options: KernelDevicesOptions) {
    this.recordDir = join(options.paths.dir, 'devices');
    this.fuseDir = join(options.paths.dir, 'fuse');
  }

  /** The link a unit's or an origin's device gets. */
  linkPath(kind: 'origin' | 'unit', name: string): string {
    return kind === 'unit' ? join(this.options.devDir, name) : join(this.options.devDir, 'fss', name);
  }

  /**
   * Makes `device` a kernel block device named after `name`. On failure nothing stays
   * attached, linked or recorded.
   */
  async attach(
    kind: 'origin' | 'unit',
    name: string,
    device: BlockDevice,
    readOnly: boolean,
  ): Promise<KernelDevice> {
    const linkPath = this.linkPath(kind, name);
    const mountPoint = join(this.fuseDir, `${kind === 'unit' ? '' : 'origin-'}${name}`);
    await checkLinkFree(linkPath);
    await mkdir(mountPoint, { recursive: true, mode: 0o700 });
    const record: DeviceRecord = { kind, name, mountPoint, linkPath, pid: process.pid };
    await this.writeRecord(record);
    let attached: Awaited<ReturnType<Attacher['attach']>> | undefined;
    try {
      attached = await this.options.attacher.attach(device, { mountPoint, readOnly });
      record.loopPath = attached.loopPath;
      await this.writeRecord(record);
      await mkdir(dirname(linkPath), { recursive: true, mode: 0o755 });
      await symlink(attached.loopPath, linkPath);
    } catch (error) {
      await attached?.close().catch(() => undefined);
      await this.forget(record).catch(() => undefined);
      throw toFssError(error, { syscall: 'attach', path: linkPath });
    }
    const { loopPath } = attached;
    const found = statx(loopPath);
    assert(found.kind === 'block', 'a loop device is a block device');
    this.options.log(`${name}: attached as ${linkPath} (${loopPath}${readOnly ? ', read-only' : ''})`);
    return {
      linkPath,
      loopPath,
      rdev: found.rdev,
      readOnly,
      mountPoints: () => mountPointsOf(loopPath).catch(() => []),
      close: async () => {
        const mounted = await mountPointsOf(loopPath).catch(() => []);
        if (mounted.length > 0) throw busy(linkPath, loopPath, mounted);
        try {
          await attached.close();
        } catch (error) {
          if (isFssError(error, 'EBUSY')) throw busy(linkPath, loopPath, mounted);
          throw error;
        }
        await this.forget(record);
        this.options.log(`${name}: detached ${linkPath} (${loopPath})`);
      },
    };
  }

  /**
   * At start: removes what the records of a daemon that is gone name (loop devices, FUSE
   * mounts, links, records). A device still in use stays, with its record, and is logged.
   */
  async removeStale(): Promise<void> {
    const names = await readdir(this.recordDir).catch(() => [] as string[]);
    for (const file of names.filter((entry) => entry.endsWith('.json'))) {
      const record = await readRecord(join(this.recordDir, file));
      if (record === undefined) {
        await rm(join(this.recordDir, file), { force: true });
        continue;
      }
      try {
        const { loops } = await this.options.attacher.removeStale(record.mountPoint);
        await this.forget(record);
        const what = loops.length > 0 ? ` (${loops.join(', ')})` : '';
        this.options.log(`${record.name}: removed the stale device ${record.linkPath}${what}`);
      } catch (error) {
        this.options.log(
          `${record.name}: stale device ${record.linkPath} (${record.loopPath ?? 'no loop'}) is still ` +
            `in use, left as it is: ${toFssError(error).message}`,
        );
      }
    }
  }

  /** At shutdown: the records and mount points directories go when nothing is left in them. */
  async tidy(): Promise<void> {
    await rmdir(this.fuseDir).catch(() => undefined);
    await rmdir(this.recordDir).catch(() => undefined);
  }

  private recordPath(record: DeviceRecord): string {
    return join(this.recordDir, `${record.kind}-${basename(record.mountPoint)}.json`);
  }

  /** Written atomically (temp + rename): a crash leaves the old record or the new one. */
  private async writeRecord(record: DeviceRecord): Promise<void> {
    await mkdir(this.recordDir, { recursive: true, mode: 0o700 });
    const path = this.recordPath(record);
    const temporary = `${path}.tmp`;
    await writeFile(temporary, `${JSON.stringify(record)}\n`, { mode: 0o600 });
    await rename(temporary, path);
  }

  /** Removes a detached device's link (when it is still ours), mount point and record. */
  private async forget(record: DeviceRecord): Promise<void> {
    const target = await readlink(record.linkPath).catch(() => undefined);
    if (target !== undefined && (record.loopPath === undefined || target === record.loopPath)) {
      await rm(record.linkPath, { force: true });
    }
    await rmdir(record.mountPoint).catch(() => undefined); // gone, or still (lazily) mounted
    await rm(this.recordPath(record), { force: true });
  }
}

/** A link path must be free, or a dangling symlink fss left (a crash before records existed). */
async function checkLinkFree(linkPath: string): Promise<void> {
  const existing = await lstat(linkPath).catch(() => undefined);
  if (existing === undefined) return;
  if (existing.isSymbolicLink()) {
    const target = await readlink(linkPath);
    const live = await lstat(target).catch(() => undefined);
    if (live === undefined) {
      await rm(linkPath, { force: true });
      return;
    }
  }
  throw new FssError('EEXIST', `${linkPath} exists already; fss will not replace it`, {
    syscall: 'symlink',
    path: linkPath,
  });
}

async function readRecord(path: string): Promise<DeviceRecord | undefined> {
  try {
    const parsed = JSON.parse(await readFile(path, 'utf8')) as Partial<DeviceRecord>;
    if (typeof parsed.mountPoint !== 'string' || typeof parsed.linkPath !== 'string') return undefined;
    if (parsed.kind !== 'origin' && parsed.kind !== 'unit') return undefined;
    return parsed as DeviceRecord;
  } catch {
    return undefined;
  }
}

function busy(linkPath: string, loopPath: string, mounted: string[]): FssError {
  const where = mounted.length > 0 ? `mounted on ${mounted.join(', ')}` : 'open';
  return new FssError('EBUSY', `${linkPath} (${loopPath}) is ${where}: unmount it first`, {
    syscall: 'detach',
    path: linkPath,
  });
}
