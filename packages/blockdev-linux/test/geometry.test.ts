/**
 * Goal: the geometry we report is the kernel's. Method: open real loop devices with 512- and
 * 4096-byte sectors and compare every number with `blockdev --getsize64 --getss --getpbsz`.
 */
import { describe, expect, it } from 'vitest';
import { openBlockDevice } from '../src';
import { blockdevGeometry, isRoot, ROOT_REASON, withLoop } from './helpers';

describe.skipIf(!isRoot)(`geometry of loop devices (${ROOT_REASON})`, () => {
  for (const sectorSize of [512, 4096]) {
    it(`matches blockdev for a ${sectorSize}-byte-sector loop device`, async () => {
      await withLoop({ sizeBytes: 48 * 1024 * 1024 + 3 * 4096, sectorSize }, async ({ device }) => {
        const kernel = blockdevGeometry(device);
        expect(kernel.logical).toBe(sectorSize);
        const opened = await openBlockDevice(device);
        try {
          expect(opened.size).toBe(kernel.size);
          expect(opened.logicalSectorSize).toBe(kernel.logical);
          expect(opened.physicalSectorSize).toBe(kernel.physical);
          expect(opened.readOnly).toBe(false);
          expect(opened.properties).toMatchObject({
            kind: 'block',
            ioMode: 'direct',
            exclusive: true,
            offsetAlignment: sectorSize,
          });
          expect(opened.properties.memoryAlignment).toBeGreaterThan(0);
        } finally {
          await opened.close();
        }
      });
    });
  }

  it('reports a read-only loop device (BLKROGET) and refuses writes with EROFS', async () => {
    await withLoop({ sizeBytes: 1 << 20, readOnly: true }, async ({ device }) => {
      const opened = await openBlockDevice(device);
      try {
        expect(opened.readOnly).toBe(true);
        await expect(opened.write(new Uint8Array(512), 0)).rejects.toMatchObject({ code: 'EROFS' });
        expect(await opened.read(new Uint8Array(512), 0)).toBe(512);
      } finally {
        await opened.close();
      }
      await expect(openBlockDevice(device, { readOnly: false })).rejects.toMatchObject({ code: 'EROFS' });
    });
  });

  it('names the syscall and path when a device cannot be opened', async () => {
    await expect(openBlockDevice('/dev/does-not-exist')).rejects.toMatchObject({
      code: 'ENOENT',
      syscall: 'statx',
      path: '/dev/does-not-exist',
    });
    await expect(openBlockDevice('/tmp')).rejects.toMatchObject({ code: 'ENOTBLK' });
  });
});
