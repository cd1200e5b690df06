/**
 * Goal: the exclusive claim of SPEC §1. A mounted filesystem's device is refused with EBUSY
 * (and the message says where it is mounted and how to route it through fss); while we hold a
 * device, nobody can claim or mount it; an image is locked and refused while a loop device is
 * backed by it.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loopBackingFile, openBlockDevice } from '../src';
import { isRoot, ROOT_REASON, run, tempDir, unmount, withExt4Mount, withLoop } from './helpers';

describe.skipIf(!isRoot)(`exclusive claim of block devices (${ROOT_REASON})`, () => {
  it('refuses a mounted ext4 with EBUSY, naming the mount point', async () => {
    await withLoop({ sizeBytes: 64 << 20 }, async ({ device }) => {
      await withExt4Mount(device, async (mountPoint) => {
        const error = await openBlockDevice(device).then(
          () => undefined,
          (reason: unknown) => reason,
        );
        expect(error).toMatchObject({ code: 'EBUSY', errno: 16, syscall: 'open', path: device });
        expect((error as Error).message).toContain(mountPoint);
        expect((error as Error).message).toContain(`fss origin add ${device} --attach`);
      });
      // Unmounted: the claim succeeds.
      await (await openBlockDevice(device)).close();
    });
  });

  it('while held: a second claim is EBUSY and mount fails; after close both work', async () => {
    await withLoop({ sizeBytes: 64 << 20 }, async ({ device }) => {
      run('mkfs.ext4', ['-q', '-F', device]);
      const held = await openBlockDevice(device);
      const dir = tempDir('fss-mnt-');
      try {
        await expect(openBlockDevice(device)).rejects.toMatchObject({ code: 'EBUSY' });
        let mounted = false;
        try {
          execFileSync('mount', [device, dir.path], { stdio: 'ignore' });
          mounted = true;
        } catch {
          // expected: the kernel refuses to mount a device claimed O_EXCL
        } finally {
          if (mounted) unmount(dir.path);
        }
        expect(mounted).toBe(false);
        await held.close();
        await withExt4Mount(device, async (mountPoint) => {
          expect(mountPoint.length).toBeGreaterThan(0);
        });
      } finally {
        await held.close();
        dir.remove();
      }
    });
  });

  it('refuses an image that backs a loop device, naming the device', async () => {
    await withLoop({ sizeBytes: 1 << 20 }, async ({ device, image }) => {
      const error = await openBlockDevice(image).then(
        () => undefined,
        (reason: unknown) => reason,
      );
      expect(error).toMatchObject({ code: 'EBUSY', path: image });
      expect((error as Error).message).toContain(device);
      // Looking without claiming is allowed.
      await (await openBlockDevice(image, { exclusive: false, readOnly: true })).close();
    });
  });

  it('reads the backing file of an attached loop device, and undefined for anything else', async () => {
    await withLoop({ sizeBytes: 1 << 20 }, async ({ device, image }) => {
      expect(await loopBackingFile(device.replace('/dev/', ''))).toBe(image);
      expect(await loopBackingFile('sda-not-a-loop')).toBeUndefined();
    });
  });
});

describe('exclusive claim of image files', () => {
  it('locks an image: a second open is EBUSY until the first closes', async () => {
    const dir = tempDir();
    try {
      const image = join(dir.path, 'disk.img');
      writeFileSync(image, new Uint8Array(1 << 20));
      const first = await openBlockDevice(image);
      try {
        await expect(openBlockDevice(image)).rejects.toMatchObject({ code: 'EBUSY', syscall: 'flock' });
      } finally {
        await first.close();
      }
      await (await openBlockDevice(image)).close();
    } finally {
      dir.remove();
    }
  });
});
