/**
 * Loop-device fixtures for these tests. Each device is detached by the name losetup gave it
 * (never `losetup -D`), and its image removed, in every outcome.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const isRoot = process.getuid?.() === 0;
export const ROOT_REASON = 'needs root: loop devices and O_EXCL claims (CI runs as root)';

export function run(command: string, args: string[]): string {
  return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

export interface LoopFixture {
  device: string;
  image: string;
  /** Detaches the device and removes its image; safe to call twice. */
  release(): void;
}

/** A loop device over a new sparse image of `sizeBytes`. */
export function createLoop(sizeBytes: number, sectorSize?: number): LoopFixture {
  const dir = mkdtempSync(join(tmpdir(), 'fss-rawdev-'));
  const image = join(dir, 'image');
  let device: string | undefined;
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    try {
      if (device !== undefined) detach(device);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  try {
    run('truncate', ['-s', String(sizeBytes), image]);
    const args = ['--show', '-f', ...(sectorSize === undefined ? [] : ['--sector-size', String(sectorSize)])];
    device = attachLoop([...args, image]);
    return { device, image, release };
  } catch (error) {
    release();
    throw error;
  }
}

/** losetup --show -f, retried: test files run in parallel and may race for the same free device. */
function attachLoop(args: string[]): string {
  for (let attempt = 0; ; attempt++) {
    try {
      return run('losetup', args);
    } catch (error) {
      if (attempt >= 5) throw error;
      execFileSync('sleep', ['0.2']);
    }
  }
}

function detach(device: string): void {
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
