/**
 * Image files report their holes (SEEK_DATA/SEEK_HOLE) through the allocation capability;
 * block devices have none. Compared with the holes the test made, on the test's filesystem.
 */
import { closeSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '@fss/test-utils';
import { afterAll, describe, expect, it } from 'vitest';
import { fileAllocation } from '../src/allocation';
import { openBlockDevice } from '../src/device';

const KiB = 1024;
const dir = tempDir('fss-allocation-');
afterAll(() => dir.remove());

/** A 1 MiB file with data at [64K, 192K) and [512K, 576K), holes elsewhere. */
function sparseFile(name: string): string {
  const path = join(dir.path, name);
  const fd = openSync(path, 'w');
  ftruncateSync(fd, 1024 * KiB);
  writeSync(fd, Buffer.alloc(128 * KiB, 1), 0, 128 * KiB, 64 * KiB);
  writeSync(fd, Buffer.alloc(64 * KiB, 2), 0, 64 * KiB, 512 * KiB);
  closeSync(fd);
  return path;
}

const hole = (length: number) => ({ length, hole: true, zero: true });
const data = (length: number) => ({ length, hole: false, zero: false });

describe('allocation of an image file', () => {
  it('reports holes as hole+zero and data as data, from any offset, within the range', async () => {
    const device = await openBlockDevice(sparseFile('a.img'), { exclusive: false });
    try {
      expect(device.allocation).toBeDefined();
      expect(await device.allocation!(0, 1024 * KiB, 100)).toEqual([
        hole(64 * KiB),
        data(128 * KiB),
        hole(320 * KiB),
        data(64 * KiB),
        hole(448 * KiB),
      ]);
      expect(await device.allocation!(96 * KiB, 448 * KiB, 100)).toEqual([
        data(96 * KiB),
        hole(320 * KiB),
        data(32 * KiB),
      ]);
      // runsMax stops early; the caller asks again from where it ended.
      expect(await device.allocation!(0, 1024 * KiB, 2)).toEqual([hole(64 * KiB), data(128 * KiB)]);
    } finally {
      await device.close();
    }
  });

  it('refuses a range outside the device with EINVAL, and a closed device with EBADF', async () => {
    const device = await openBlockDevice(sparseFile('b.img'), { exclusive: false });
    await expect(device.allocation!(1024 * KiB - 512, 1024, 1)).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(device.allocation!(0, 0, 1)).rejects.toMatchObject({ code: 'EINVAL' });
    await device.close();
    await expect(device.allocation!(0, 512, 1)).rejects.toMatchObject({ code: 'EBADF' });
  });

  it('fileAllocation on a bad descriptor is EBADF naming lseek', async () => {
    await expect(fileAllocation(987654, 0, 512, 1, '/nowhere')).rejects.toMatchObject({
      code: 'EBADF',
      syscall: 'lseek SEEK_DATA',
    });
  });
});
