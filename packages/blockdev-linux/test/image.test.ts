/**
 * Goal: disk images behave like devices, with O_DIRECT where the filesystem supports it and
 * a reported buffered fallback where it does not. Method: images on the temp directory's
 * filesystem (ext4 here: direct) and on /dev/shm (tmpfs: no direct-I/O alignment, buffered),
 * written at unaligned offsets and checked against the file's bytes.
 */
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openBlockDevice, statx } from '../src';
import { pattern, tempDir } from './helpers';

async function roundTrip(image: string) {
  const opened = await openBlockDevice(image);
  const model = new Uint8Array(readFileSync(image));
  try {
    for (const [offset, length, seed] of [
      [0, 1, 1],
      [511, 2, 2],
      [1000, 70_000, 3],
      [opened.size - 3, 3, 4],
    ] as const) {
      const data = pattern(length, seed);
      await opened.write(data, offset);
      model.set(data, offset);
      const back = new Uint8Array(length);
      expect(await opened.read(back, offset)).toBe(length);
      expect(Buffer.from(back).equals(data)).toBe(true);
    }
    await opened.flush();
    return opened;
  } finally {
    await opened.close();
    expect(Buffer.from(readFileSync(image)).equals(model)).toBe(true);
  }
}

describe('disk images', () => {
  it('uses O_DIRECT on a filesystem that reports a direct-I/O alignment', async (test) => {
    const dir = tempDir();
    try {
      const image = join(dir.path, 'disk.img');
      writeFileSync(image, pattern(1 << 20, 7));
      if (statx(image).directIo === undefined) test.skip('the temp filesystem reports no STATX_DIOALIGN');
      const opened = await roundTrip(image);
      expect(opened.properties).toMatchObject({ kind: 'file', ioMode: 'direct', size: 1 << 20 });
      expect(opened.logicalSectorSize).toBe(512);
    } finally {
      dir.remove();
    }
  });

  it.skipIf(!existsSync('/dev/shm'))('falls back to buffered I/O on tmpfs and says why', async () => {
    const image = join('/dev/shm', `fss-image-${process.pid}`);
    try {
      writeFileSync(image, pattern(256 * 1024, 8));
      const opened = await roundTrip(image);
      expect(opened.ioMode).toBe('buffered');
      expect(opened.properties.bufferedReason).toMatch(/direct-I\/O alignment|direct I\/O/);
    } finally {
      rmSync(image, { force: true });
    }
  });

  it('buffers an image whose size is not a sector multiple, and keeps its size', async () => {
    const dir = tempDir();
    try {
      const image = join(dir.path, 'odd.img');
      writeFileSync(image, pattern(100_001, 9));
      const opened = await roundTrip(image);
      expect(opened.ioMode).toBe('buffered');
      expect(opened.properties.bufferedReason).toContain('100001');
      expect(readFileSync(image).length).toBe(100_001);
    } finally {
      dir.remove();
    }
  });

  it('punches holes and zeroes ranges in an image', async () => {
    const dir = tempDir();
    try {
      const image = join(dir.path, 'disk.img');
      writeFileSync(image, new Uint8Array(1 << 20).fill(0xee));
      const opened = await openBlockDevice(image);
      try {
        await opened.discard(4096, 65536);
        await opened.writeZeroes(100_000, 3000);
      } finally {
        await opened.close();
      }
      const bytes = readFileSync(image);
      expect(bytes.length).toBe(1 << 20);
      expect(bytes.subarray(4096, 4096 + 65536).every((b) => b === 0)).toBe(true);
      expect(bytes.subarray(100_000, 103_000).every((b) => b === 0)).toBe(true);
      expect(bytes[4095]).toBe(0xee);
      expect(bytes[103_000]).toBe(0xee);
    } finally {
      dir.remove();
    }
  });
});
