/**
 * Where the bench's data lives, and how it keeps caches from favouring anyone.
 *
 * Medium. As root the images are files in the scratch directory attached as loop devices
 * (`loop`, the default): every server then opens a real block device, fss and qemu-nbd with
 * O_DIRECT exactly as they would a disk, fio with direct=1, and nbdkit through the device's
 * buffer cache. With the scratch directory on /dev/shm (the default when it has room) the
 * device is memory, so the runs are CPU-bound and the ratios measure software cost rather
 * than the noise of a shared virtual disk (back-to-back fio runs on this machine's disk
 * differed by 2x). `file` serves the image files directly (FSS_BENCH_DIR should then be a
 * filesystem with O_DIRECT, e.g. /var/tmp: tmpfs refuses O_DIRECT, so fss would fall back to
 * buffered I/O and qemu-nbd --cache=none would not start).
 *
 * Caches. Before every timed run `dropCaches()` drops what the kernel caches for each image
 * and store: BLKFLSBUF (`blockdev --flushbufs`) on loop devices, which empties nbdkit's buffer
 * cache (O_DIRECT users bypass it), and POSIX_FADV_DONTNEED (`dd oflag=nocache count=0`) on
 * files. Nobody starts a run with the data already in memory except where the medium itself
 * is memory, which is then the same for everyone.
 */
import { closeSync, mkdtempSync, openSync, rmSync, statfsSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Cleanup } from './cleanup';
import { type BenchConfig, GiB, type Medium, MiB } from './config';
import { runCommand } from './processes';

export interface Image {
  /** The file holding the data. */
  readonly file: string;
  /** What servers open: the loop device, or the file itself. */
  readonly path: string;
  readonly sizeBytes: number;
}

export class Sandbox {
  /** Paths whose cache dropCaches() drops: true for a block device, false for a file. */
  private readonly cachePaths = new Map<string, boolean>();

  private constructor(
    readonly dir: string,
    readonly medium: Medium,
    private readonly cleanup: Cleanup,
  ) {}

  /** Makes the scratch directory (removed by the Cleanup) and picks the medium. */
  static async create(config: BenchConfig, cleanup: Cleanup): Promise<Sandbox> {
    const base = config.dir ?? defaultScratchBase(requiredBytes(config));
    const availableBytes = freeBytes(base);
    if (availableBytes < requiredBytes(config)) {
      throw new Error(
        `${base} has ${(availableBytes / GiB).toFixed(1)} GiB free, the bench needs ` +
          `${(requiredBytes(config) / GiB).toFixed(1)} GiB: set FSS_BENCH_DIR or a smaller FSS_BENCH_SIZE`,
      );
    }
    const dir = mkdtempSync(join(base, 'fss-bench-'));
    cleanup.defer(`remove ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
    const medium = config.medium ?? ((await canUseLoopDevices()) ? 'loop' : 'file');
    return new Sandbox(dir, medium, cleanup);
  }

  path(name: string): string {
    return join(this.dir, name);
  }

  /**
   * Writes an image of `sizeBytes` whose contents depend only on `seed` (so images made with
   * the same seed are copies of each other), and attaches it when the medium is `loop`.
   */
  async makeImage(name: string, sizeBytes: number, seed: number): Promise<Image> {
    const file = this.makeDataFile(name, sizeBytes, seed);
    if (this.medium === 'file') {
      this.cachePaths.set(file, false);
      return { file, path: file, sizeBytes };
    }
    const device = await attachLoop(file);
    this.cleanup.defer(`detach ${device}`, () => runCommand('losetup', ['-d', device]).then(() => undefined));
    this.cachePaths.set(device, true);
    return { file, path: device, sizeBytes };
  }

  /** A plain file of `sizeBytes` of pattern data (see makeImage), never attached. */
  makeDataFile(name: string, sizeBytes: number, seed: number): string {
    const file = this.path(name);
    writePattern(file, sizeBytes, seed);
    return file;
  }

  /** A sparse file of `sizeBytes` (nothing allocated). */
  async makeSparseFile(name: string, sizeBytes: number): Promise<string> {
    const file = this.path(name);
    await runCommand('truncate', ['-s', String(sizeBytes), file]);
    return file;
  }

  /** Includes `path` (a store) in dropCaches() until forget(). */
  track(path: string): void {
    this.cachePaths.set(path, false);
  }

  /** Removes a store file and stops dropping its cache. */
  forget(path: string): void {
    this.cachePaths.delete(path);
    rmSync(path, { force: true });
  }

  /** Drops the kernel's cached pages of every image and store (see the file comment). */
  async dropCaches(): Promise<void> {
    await Promise.all(
      [...this.cachePaths].map(([path, isDevice]) =>
        isDevice
          ? runCommand('blockdev', ['--flushbufs', path])
          : runCommand('dd', [
              'if=/dev/null',
              `of=${path}`,
              'oflag=nocache',
              'conv=notrunc',
              'count=0',
            ]).catch(
              () => undefined, // the store may be gone already
            ),
      ),
    );
  }
}

/** Scratch space the default run needs at its peak (images, stores, scale copies), with room. */
function requiredBytes(config: BenchConfig): number {
  return 5 * config.imageBytes + 6 * config.writeBytes + 2 * config.scaleCopyBytes;
}

function freeBytes(dir: string): number {
  const stats = statfsSync(dir);
  return stats.bavail * stats.bsize;
}

function defaultScratchBase(neededBytes: number): string {
  try {
    if (freeBytes('/dev/shm') >= neededBytes) return '/dev/shm';
  } catch {
    // No /dev/shm.
  }
  return '/var/tmp';
}

async function canUseLoopDevices(): Promise<boolean> {
  if (process.getuid?.() !== 0) return false;
  try {
    await runCommand('losetup', ['-f']);
    return true;
  } catch {
    return false;
  }
}

async function attachLoop(file: string): Promise<string> {
  try {
    return (await runCommand('losetup', ['--show', '-f', '--direct-io=on', file])).stdout.trim();
  } catch {
    // tmpfs has no O_DIRECT; the loop device is then buffered onto memory, which is the medium.
    return (await runCommand('losetup', ['--show', '-f', file])).stdout.trim();
  }
}

/** Fills `file` with a cheap, non-repeating pattern (no two MiB alike), 16 MiB at a time. */
function writePattern(file: string, sizeBytes: number, seed: number): void {
  const chunk = Buffer.alloc(16 * MiB);
  for (let index = 0; index < chunk.length; index += 4) {
    chunk.writeUInt32LE((Math.imul(index, 2654435761) + seed) >>> 0, index);
  }
  const fd = openSync(file, 'w', 0o600);
  try {
    for (let written = 0; written < sizeBytes; ) {
      const length = Math.min(chunk.length, sizeBytes - written);
      for (let mib = 0; mib < length; mib += MiB) chunk.writeUInt32LE((written + mib) / MiB, mib);
      written += writeSync(fd, chunk, 0, length, written);
    }
  } finally {
    closeSync(fd);
  }
}
