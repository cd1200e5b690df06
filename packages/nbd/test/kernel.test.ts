/**
 * The kernel-visible path, as root: NBD export → nbdfuse (a FUSE file) → losetup (a loop
 * block device) → mount. There is no nbd kernel module on these machines; this is the route
 * fssd takes without it (SPEC §5).
 *
 * Goal: a real filesystem works on the origin export, and a snapshot export mounts read-only
 * and shows the filesystem as it was when the snapshot was taken. Method: mkfs.ext4 and files
 * written through the kernel on the origin, unmounted, `e2fsck -fn` clean; then a snapshot,
 * more changes through the kernel on the origin, and the snapshot mounted with `losetup -r` +
 * `mount -o ro,noload` still shows the old files, byte for byte, and checks clean.
 *
 * Every mount, loop device and FUSE mount is released by name in every outcome (finally
 * blocks); loop devices are found with `losetup --show -f` and detached by that name only.
 *
 * The NBD server runs in this process, so this process must never do file I/O on the mounts
 * itself: a write throttled by the kernel (dirty-page balancing) or a read missing the page
 * cache would block the very thread that has to answer the NBD request it waits for. Every
 * access to a mounted file goes through a child process (cp, cat, sha256sum, test), and the
 * helpers below only spawn asynchronously.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type LinuxBlockDevice, openBlockDevice } from '@fss/blockdev-linux';
import { MemoryBackingStore } from '@fss/core';
import { Origin } from '@fss/engine';
import { tempDir } from '@fss/test-utils';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, startServer } from './helpers';

const MiB = 1024 * 1024;
const isRoot = process.getuid?.() === 0;
const hasTools = ['/dev/fuse', '/dev/loop-control'].every((path) => existsSync(path));

/** Releases not yet run: afterAll runs them if a test timed out before its finally block. */
const unreleased = new Set<() => Promise<void>>();

/** A mounted export: FUSE file → loop device → mount point. `release()` undoes what was done. */
interface Attached {
  mountPoint: string;
  release: () => Promise<void>;
}

async function waitFor(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * Attaches the export on `socketPath` and mounts it. On any failure part-way, whatever was
 * already set up is released before the error propagates.
 */
async function attach(
  socketPath: string,
  base: string,
  options: { readOnly: boolean; mkfs?: boolean },
): Promise<Attached> {
  const fuseDir = join(base, 'fuse');
  const mountPoint = join(base, 'mnt');
  const pidFile = join(base, 'nbdfuse.pid');
  mkdirSync(fuseDir, { recursive: true });
  mkdirSync(mountPoint, { recursive: true });
  const steps: (() => Promise<void>)[] = [];
  const release = async (): Promise<void> => {
    unreleased.delete(release);
    const errors: unknown[] = [];
    for (const step of steps.reverse()) await step().catch((error: unknown) => errors.push(error));
    steps.length = 0;
    if (errors.length > 0) throw errors[0];
  };
  unreleased.add(release);
  try {
    const fuseArgs = [
      '-P',
      pidFile,
      ...(options.readOnly ? ['-r'] : []),
      join(fuseDir, 'disk'),
      '--unix',
      socketPath,
    ];
    const nbdfuse: ChildProcess = spawn('nbdfuse', fuseArgs, { stdio: 'ignore' });
    const exited = new Promise<void>((resolve) => nbdfuse.once('exit', () => resolve()));
    steps.push(async () => {
      await run('fusermount3', ['-u', fuseDir]);
      // nbdfuse exits by itself shortly after the unmount; only if it does not, end it.
      const timer = setTimeout(() => nbdfuse.kill('SIGTERM'), 5000);
      await exited;
      clearTimeout(timer);
    });
    await waitFor(() => existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim() !== '', 'nbdfuse');

    const loopArgs = ['--show', '-f', ...(options.readOnly ? ['-r'] : []), join(fuseDir, 'disk')];
    const loop = await run('losetup', loopArgs);
    if (loop.code !== 0) throw new Error(`losetup: ${loop.stderr}`);
    const loopDevice = loop.stdout.trim();
    expect(loopDevice).toMatch(/^\/dev\/loop\d+$/);
    steps.push(async () => {
      const detached = await run('losetup', ['-d', loopDevice]);
      if (detached.code !== 0) throw new Error(`losetup -d ${loopDevice}: ${detached.stderr}`);
    });

    if (options.mkfs === true) {
      const mkfs = await run('mkfs.ext4', ['-q', '-F', loopDevice]);
      if (mkfs.code !== 0) throw new Error(`mkfs.ext4: ${mkfs.stderr}`);
    }
    const mountArgs = options.readOnly
      ? ['-o', 'ro,noload', loopDevice, mountPoint]
      : [loopDevice, mountPoint];
    const mounted = await run('mount', mountArgs);
    if (mounted.code !== 0) throw new Error(`mount: ${mounted.stderr}`);
    steps.push(async () => {
      const unmounted = await run('umount', [mountPoint]);
      if (unmounted.code !== 0) throw new Error(`umount ${mountPoint}: ${unmounted.stderr}`);
    });
    return { mountPoint, release };
  } catch (error) {
    await release().catch(() => undefined);
    throw error;
  }
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

describe.skipIf(!isRoot || !hasTools)('kernel-visible path (needs root, /dev/fuse and loop devices)', () => {
  let dir: ReturnType<typeof tempDir>;
  let imagePath: string;
  let file: LinuxBlockDevice;
  let origin: Origin;
  beforeAll(async () => {
    dir = tempDir('fss-nbd-kernel-');
    imagePath = join(dir.path, 'origin.img');
    writeFileSync(imagePath, Buffer.alloc(0));
    await run('truncate', ['-s', `${128 * MiB}`, imagePath]);
    file = await openBlockDevice(imagePath, { exclusive: false });
    origin = new Origin(file, { name: 'origin', logger: () => {} });
  });
  afterAll(async () => {
    for (const release of [...unreleased]) await release().catch(() => undefined);
    await origin.close();
    dir.remove();
  });

  const big = randomBytes(8 * MiB);
  let bigPath: string;
  let hello: string;
  beforeAll(() => {
    bigPath = join(dir.path, 'big.bin');
    hello = join(dir.path, 'hello.txt');
    writeFileSync(bigPath, big);
    writeFileSync(hello, 'hello\n');
  });

  /** Copies a local file onto a mount, in a child process (see the top of the file). */
  async function copyIn(source: string, target: string): Promise<void> {
    const copied = await run('cp', [source, target]);
    expect(copied.code, copied.stderr).toBe(0);
  }

  it('origin export: mkfs.ext4, write files, unmount, e2fsck -fn clean', async () => {
    const server = await startServer(dir.path, [{ name: 'origin', device: origin }], {
      socketName: 'origin.sock',
    });
    try {
      const attached = await attach(server.socketPath, join(dir.path, 'rw'), { readOnly: false, mkfs: true });
      try {
        await copyIn(hello, join(attached.mountPoint, 'hello.txt'));
        await copyIn(bigPath, join(attached.mountPoint, 'big.bin'));
        expect((await run('sync', [])).code).toBe(0);
      } finally {
        await attached.release();
      }
      const copy = join(dir.path, 'origin-copy.img');
      expect((await run('nbdcopy', [server.uri(), copy])).code).toBe(0);
      const fsck = await run('e2fsck', ['-fn', copy]);
      expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0);
      const cat = await run('debugfs', ['-R', 'cat /hello.txt', copy]);
      expect(cat.stdout).toBe('hello\n');
    } finally {
      await server.close();
    }
  });

  it('snapshot export: mounts read-only (losetup -r, ro,noload) and shows the files as they were', async () => {
    const snapshot = await origin.createSnapshot(new MemoryBackingStore(), { name: 'fss0' });
    const originServer = await startServer(dir.path, [{ name: 'origin', device: origin }], {
      socketName: 'o2.sock',
    });
    const snapshotServer = await startServer(dir.path, [{ name: 'fss0', device: snapshot }], {
      socketName: 'fss0.sock',
    });
    try {
      // Change the origin through the kernel: replace one file, add another.
      const rw = await attach(originServer.socketPath, join(dir.path, 'rw2'), { readOnly: false });
      try {
        const changed = join(dir.path, 'changed.txt');
        writeFileSync(changed, 'changed after the snapshot\n');
        await copyIn(changed, join(rw.mountPoint, 'hello.txt'));
        await copyIn(bigPath, join(rw.mountPoint, 'new.bin'));
        expect((await run('rm', [join(rw.mountPoint, 'big.bin')])).code).toBe(0);
        expect((await run('sync', [])).code).toBe(0);
      } finally {
        await rw.release();
      }
      const ro = await attach(snapshotServer.socketPath, join(dir.path, 'ro'), { readOnly: true });
      try {
        expect((await run('cat', [join(ro.mountPoint, 'hello.txt')])).stdout).toBe('hello\n');
        const sum = await run('sha256sum', [join(ro.mountPoint, 'big.bin')]);
        expect(sum.stdout.split(' ')[0]).toBe(sha256(big));
        expect((await run('test', ['-e', join(ro.mountPoint, 'new.bin')])).code).toBe(1);
        const write = await run('sh', ['-c', `echo x > '${join(ro.mountPoint, 'nope')}'`]);
        expect(write.code).not.toBe(0);
      } finally {
        await ro.release();
      }
      const copy = join(dir.path, 'snapshot-copy.img');
      expect((await run('nbdcopy', [snapshotServer.uri(), copy])).code).toBe(0);
      const fsck = await run('e2fsck', ['-fn', copy]);
      expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0);
    } finally {
      await snapshotServer.close();
      await originServer.close();
      await snapshot.close();
    }
  });
});
