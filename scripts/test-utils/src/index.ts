/**
 * Test fixtures on real loop devices, shared by every package's tests (a private workspace
 * package: never published). Every fixture is released by the name it was given
 * (`losetup -d /dev/loopN`, `umount DIR`), never with `losetup -D`, and in every outcome:
 * callers use try/finally through `withLoop`/`withExt4Mount`, or `createLoop().release()`.
 *
 * These helpers are synchronous child processes. Never use them on a filesystem whose I/O is
 * served by this same process (an in-process NBD export): that deadlocks it.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const isRoot = process.getuid?.() === 0;
export const ROOT_REASON = 'needs root: loop devices, mounts and O_EXCL claims (CI runs as root)';

export function run(command: string, args: string[]): string {
  return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

/** A fresh temporary directory, removed (with everything in it) by the returned function. */
export function tempDir(prefix = 'fss-test-'): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

export interface LoopOptions {
  sizeBytes: number;
  sectorSize?: number;
  readOnly?: boolean;
}

export interface Loop {
  device: string;
  image: string;
}

/** Runs `use` with a new loop device over a sparse image; detaches it by name afterwards. */
export async function withLoop<T>(options: LoopOptions, use: (loop: Loop) => Promise<T>): Promise<T> {
  const loop = createLoop(options.sizeBytes, options.sectorSize, options.readOnly);
  try {
    return await use({ device: loop.device, image: loop.image });
  } finally {
    loop.release();
  }
}

export interface LoopFixture {
  device: string;
  image: string;
  /** Detaches the device and removes its image; safe to call twice. */
  release(): void;
}

/** A loop device (read-only when asked) over a new sparse image of `sizeBytes`. */
export function createLoop(sizeBytes: number, sectorSize?: number, readOnly = false): LoopFixture {
  const dir = tempDir('fss-loop-');
  const image = join(dir.path, 'image');
  let device: string | undefined;
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    try {
      if (device !== undefined) detach(device);
    } finally {
      dir.remove();
    }
  };
  try {
    run('truncate', ['-s', String(sizeBytes), image]);
    const args = ['--show', '-f'];
    if (sectorSize !== undefined) args.push('--sector-size', String(sectorSize));
    if (readOnly) args.push('-r');
    device = attachLoop([...args, image]);
    return { device, image, release };
  } catch (error) {
    release();
    throw error;
  }
}

/** losetup --show -f, retried: test files run in parallel and may race for the same free device. */
export function attachLoop(args: string[]): string {
  for (let attempt = 0; ; attempt++) {
    try {
      return run('losetup', args);
    } catch (error) {
      if (attempt >= 5) throw error;
      execFileSync('sleep', ['0.2']);
    }
  }
}

/** losetup -d by name; retries briefly because udev may still hold the device just after use. */
export function detach(device: string): void {
  for (let attempt = 0; ; attempt++) {
    try {
      run('losetup', ['-d', device]);
      return;
    } catch (error) {
      if (attempt >= 20) throw error;
      execFileSync('sleep', ['0.1']);
    }
  }
}

/** Runs `use` with `device` formatted ext4 and mounted on a new directory; unmounts by name afterwards. */
export async function withExt4Mount<T>(device: string, use: (mountPoint: string) => Promise<T>): Promise<T> {
  run('mkfs.ext4', ['-q', '-F', device]);
  const dir = tempDir('fss-mnt-');
  try {
    run('mount', [device, dir.path]);
    try {
      return await use(dir.path);
    } finally {
      unmount(dir.path);
    }
  } finally {
    dir.remove();
  }
}

/** umount by mount point, retrying while busy; as a last resort a lazy unmount, so nothing stays mounted. */
export function unmount(mountPoint: string): void {
  for (let attempt = 0; ; attempt++) {
    try {
      run('umount', [mountPoint]);
      return;
    } catch (error) {
      if (attempt >= 20) {
        run('umount', ['-l', mountPoint]);
        throw error;
      }
      execFileSync('sleep', ['0.1']);
    }
  }
}

/** `blockdev --getsize64 --getss --getpbsz`: the kernel's own answer to compare with. */
export function blockdevGeometry(device: string): { size: number; logical: number; physical: number } {
  const [size, logical, physical] = run('blockdev', ['--getsize64', '--getss', '--getpbsz', device])
    .split('\n')
    .map(Number);
  return { size: size!, logical: logical!, physical: physical! };
}

/** A deterministic byte pattern (so a mismatch shows where it came from): core/testing's patternBytes. */
export { patternBytes as pattern } from '@fss/core/testing';
export * from './extent-map';
export * from './man';
export * from './nbd-client';
export * from './process';
export * from './sandbox';
export * from './tls';
