/**
 * Goal: the mountinfo helpers find the device behind a mount point and the mount points of a
 * device, as the kernel reports them. Parsing is checked on fixed text (escapes, optional
 * fields); lookups on a real ext4 mounted from a loop device.
 */

import { execFileSync } from 'node:child_process';
import { realpathSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { decodeDeviceNumber, filesystemOf, mountPointsOf, parseMountInfo, sourceDeviceOf } from '../src';
import { isRoot, ROOT_REASON, tempDir, withExt4Mount, withLoop } from './helpers';

describe('parseMountInfo', () => {
  it('reads every field, unescapes paths and keeps optional fields', () => {
    const text = [
      '36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue',
      '40 36 7:3 / /tmp/with\\040space\\011tab rw,relatime shared:5 master:2 - ext4 /dev/loop3 rw',
      '41 36 0:52 / /run/user rw - tmpfs tmpfs rw,size=10k',
      'garbage line',
      '',
    ].join('\n');
    const entries = parseMountInfo(text);
    expect(entries).toHaveLength(3);
    expect(entries[0]).toEqual({
      mountId: 36,
      parentId: 35,
      major: 98,
      minor: 0,
      root: '/mnt1',
      mountPoint: '/mnt2',
      mountOptions: 'rw,noatime',
      optionalFields: ['master:1'],
      fsType: 'ext3',
      source: '/dev/root',
      superOptions: 'rw,errors=continue',
    });
    expect(entries[1]).toMatchObject({
      major: 7,
      minor: 3,
      mountPoint: '/tmp/with space\ttab',
      optionalFields: ['shared:5', 'master:2'],
      source: '/dev/loop3',
    });
    expect(entries[2]).toMatchObject({ major: 0, minor: 52, optionalFields: [], fsType: 'tmpfs' });
  });

  it('decodes device numbers with large majors and minors (glibc makedev layout)', () => {
    const makedev = (major: bigint, minor: bigint) =>
      ((major & 0xfffn) << 8n) | ((major & ~0xfffn) << 32n) | (minor & 0xffn) | ((minor & ~0xffn) << 12n);
    for (const [major, minor] of [
      [7, 0],
      [259, 1],
      [4095, 255],
      [4096, 1 << 20],
      [253, 70_000],
    ] as const) {
      expect(decodeDeviceNumber(makedev(BigInt(major), BigInt(minor)))).toEqual({ major, minor });
    }
  });
});

describe.skipIf(!isRoot)(`mountinfo lookups on a mounted loop device (${ROOT_REASON})`, () => {
  it('finds the device of a mount point and the mount points of a device', async () => {
    await withLoop({ sizeBytes: 64 << 20 }, async ({ device }) => {
      expect(await mountPointsOf(device)).toEqual([]);
      await withExt4Mount(device, async (mountPoint) => {
        const source = await sourceDeviceOf(mountPoint);
        expect(source).toMatchObject({ devicePath: device, source: device, fsType: 'ext4' });
        expect(source.mountPoint).toBe(realpathSync(mountPoint));
        expect(await mountPointsOf(device)).toEqual([realpathSync(mountPoint)]);
      });
    });
  });

  it('says ENOTBLK for a filesystem without a block device and EINVAL for a plain directory', async () => {
    await expect(sourceDeviceOf('/dev/shm')).rejects.toMatchObject({ code: 'ENOTBLK' });
    const dir = tempDir();
    try {
      await expect(sourceDeviceOf(dir.path)).rejects.toMatchObject({ code: 'EINVAL' });
    } finally {
      dir.remove();
    }
    await expect(sourceDeviceOf('/no/such/dir')).rejects.toMatchObject({
      code: 'ENOENT',
      path: '/no/such/dir',
    });
  });
});

describe('filesystemOf', () => {
  const table = parseMountInfo(
    [
      '1 0 8:1 / / rw - ext4 /dev/sda1 rw',
      '2 1 0:30 / /run rw - tmpfs tmpfs rw',
      '3 2 0:31 / /run/sub rw - tmpfs tmpfs rw',
      '4 1 0:44 / /srv/pool rw - btrfs /dev/null rw',
    ].join('\n'),
  );

  it('picks the longest mount point that holds the path, for paths that do not exist yet too', async () => {
    expect(await filesystemOf('/', table)).toMatchObject({ mountPoint: '/', fsType: 'ext4' });
    expect(await filesystemOf('/run/nonexistent/file', table)).toMatchObject({
      mountPoint: '/run',
      device: undefined, // tmpfs: no block device
    });
    expect((await filesystemOf('/proc/self', table)).mountPoint).toBe('/');
  });

  it("takes a major-0 filesystem's block device from its source (btrfs), only when it is one", async () => {
    // /dev/null is a character device: not a block device, so no device.
    expect((await filesystemOf('/srv/pool/x', table)).device).toBeUndefined();
  });
});

describe.skipIf(!isRoot)(`btrfs mounts (${ROOT_REASON})`, () => {
  it('sourceDeviceOf and mountPointsOf see the block device behind a btrfs mount', async () => {
    await withLoop({ sizeBytes: 256 << 20 }, async ({ device }) => {
      execFileSync('mkfs.btrfs', ['-q', '-f', device]);
      const dir = tempDir('fss-btrfs-');
      execFileSync('mount', [device, dir.path]);
      try {
        const mountPoint = realpathSync(dir.path);
        const source = await sourceDeviceOf(mountPoint);
        expect(source).toMatchObject({ mountPoint, fsType: 'btrfs', devicePath: device });
        expect(await mountPointsOf(device)).toEqual([mountPoint]);
        expect((await filesystemOf(`${mountPoint}/a/new/file`)).device?.devicePath).toBe(device);
      } finally {
        execFileSync('umount', [dir.path]);
        dir.remove();
      }
    });
  });
});
