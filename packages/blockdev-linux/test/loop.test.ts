/**
 * Goal: attachLoop / detachLoop / loopDevicesOf / loopDevicesUnder do what losetup does,
 * through the ioctls alone. Method: real loop devices over image files in a temporary
 * directory; the kernel's view is read back with blockdev, losetup and sysfs; every device is
 * detached by name in a finally block.
 */
import { linkSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { firstDifference } from '@fss/core/testing';
import { afterAll, describe, expect, it } from 'vitest';
import {
  attachLoop,
  detachLoop,
  type LoopDevice,
  loopBackingFile,
  loopDevicesOf,
  loopDevicesUnder,
} from '../src';
import { blockdevGeometry, isRoot, pattern, ROOT_REASON, run, tempDir, unmount } from './helpers';

const MiB = 1024 * 1024;

describe.skipIf(!isRoot)(`loop devices through ioctls (${ROOT_REASON})`, () => {
  const dir = tempDir('fss-loop-ioctl-');
  const attached = new Set<string>();
  afterAll(async () => {
    for (const device of attached) await detachLoop(device).catch(() => undefined);
    dir.remove();
  });

  function image(name: string, bytes: Uint8Array): string {
    const path = join(dir.path, name);
    writeFileSync(path, bytes);
    return path;
  }

  async function attach(path: string, options: Parameters<typeof attachLoop>[1] = {}): Promise<LoopDevice> {
    const loop = await attachLoop(path, options);
    attached.add(loop.path);
    return loop;
  }

  async function detach(loop: LoopDevice): Promise<void> {
    await detachLoop(loop.path);
    attached.delete(loop.path);
  }

  it('attaches a file with direct I/O: the kernel reports its size, sectors and backing file', async () => {
    const path = image('plain.raw', pattern(4 * MiB, 1));
    const loop = await attach(path);
    try {
      expect(loop.path).toBe(`/dev/loop${loop.number}`);
      expect(loop.directIo).toBe(true); // /tmp is ext4 here: O_DIRECT works on it
      expect(readFileSync(`/sys/block/loop${loop.number}/loop/dio`, 'utf8').trim()).toBe('1');
      expect(await loopBackingFile(`loop${loop.number}`)).toBe(path);
      expect(blockdevGeometry(loop.path)).toMatchObject({ size: 4 * MiB, logical: 512 });
      expect(run('blockdev', ['--getro', loop.path])).toBe('0');
      // What the kernel writes through the device lands in the file.
      const data = join(dir.path, 'data');
      writeFileSync(data, pattern(MiB, 2));
      run('dd', [
        `if=${data}`,
        `of=${loop.path}`,
        'bs=64k',
        'seek=16',
        'oflag=direct',
        'conv=notrunc',
        'status=none',
      ]);
      expect(firstDifference(readFileSync(path).subarray(MiB, 2 * MiB), pattern(MiB, 2))).toBe(-1);
    } finally {
      await detach(loop);
    }
    expect(await loopBackingFile(`loop${loop.number}`)).toBeUndefined();
  });

  it('read-only, without direct I/O, and with 4096-byte blocks (size rounded down to whole blocks)', async () => {
    const path = image('options.raw', pattern(MiB + 512, 3));
    const readOnly = await attach(path, { readOnly: true, directIo: false });
    const big = await attach(path, { blockSizeBytes: 4096 });
    try {
      expect(readOnly).toMatchObject({ readOnly: true, directIo: false });
      expect(run('blockdev', ['--getro', readOnly.path])).toBe('1');
      expect(() =>
        run('dd', ['if=/dev/zero', `of=${readOnly.path}`, 'bs=512', 'count=1', 'status=none']),
      ).toThrow();
      expect(blockdevGeometry(readOnly.path).size).toBe(MiB + 512);
      expect(blockdevGeometry(big.path)).toMatchObject({ size: MiB, logical: 4096 });
      expect(big.blockSizeBytes).toBe(4096);
    } finally {
      await detach(readOnly);
      await detach(big);
    }
  });

  it('refuses a bad block size and a missing file, leaving nothing attached', async () => {
    const path = image('bad.raw', pattern(MiB, 4));
    await expect(attachLoop(path, { blockSizeBytes: 1000 })).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(attachLoop(path, { blockSizeBytes: 8192 })).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(attachLoop(join(dir.path, 'missing.raw'))).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await loopDevicesOf(path)).toEqual([]);
  });

  it('attaches several files at once: each gets its own device (free-device races retried)', async () => {
    const paths = [0, 1, 2, 3].map((index) => image(`many-${index}.raw`, pattern(MiB, 10 + index)));
    const loops = await Promise.all(paths.map((path) => attach(path)));
    try {
      expect(new Set(loops.map((loop) => loop.path)).size).toBe(4);
      for (const [index, loop] of loops.entries()) {
        expect(await loopBackingFile(`loop${loop.number}`)).toBe(paths[index]);
      }
    } finally {
      for (const loop of loops) await detach(loop);
    }
  });

  it('loopDevicesOf finds a device by another name of the same file; loopDevicesUnder by directory', async () => {
    const path = image('named.raw', pattern(MiB, 5));
    const other = join(dir.path, 'other-name.raw');
    linkSync(path, other);
    const loop = await attach(path);
    try {
      expect(await loopDevicesOf(path)).toEqual([loop.path]);
      expect(await loopDevicesOf(other)).toEqual([loop.path]);
      expect(await loopDevicesUnder(dir.path)).toEqual([loop.path]);
      expect(await loopDevicesUnder(`${dir.path}-not`)).toEqual([]);
    } finally {
      await detach(loop);
    }
    expect(await loopDevicesOf(path)).toEqual([]);
  });

  it('detaching twice is harmless; a mounted device is EBUSY and detaches itself at its unmount', async () => {
    const path = image('busy.raw', new Uint8Array(32 * MiB));
    const loop = await attach(path);
    await detach(loop);
    await detachLoop(loop.path); // unbound already: nothing to do
    const again = await attach(path);
    const mountPoint = tempDir('fss-loop-mnt-');
    let mounted = false;
    try {
      run('mkfs.ext4', ['-q', '-F', again.path]);
      run('mount', [again.path, mountPoint.path]);
      mounted = true;
      await expect(detachLoop(again.path, { timeoutMs: 500 })).rejects.toMatchObject({
        code: 'EBUSY',
        message: expect.stringContaining(mountPoint.path),
      });
      unmount(mountPoint.path);
      mounted = false;
      // LOOP_CLR_FD marked it: the last close (the unmount) unbound it.
      await detachLoop(again.path);
      expect(await loopDevicesOf(path)).toEqual([]);
      attached.delete(again.path);
    } finally {
      if (mounted) unmount(mountPoint.path);
      mountPoint.remove();
    }
  });
});
