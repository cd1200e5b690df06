/**
 * Goal: O_DIRECT reads and writes at any offset and length return exactly what a plain byte
 * array would. Method: seeded random requests (unaligned offsets and lengths, some larger
 * than a bounce buffer) against a loop device and a model array side by side; at the end the
 * backing image, read with ordinary buffered I/O, must equal the model byte for byte.
 */
import { readFileSync } from 'node:fs';
import { SeededRandom } from '@fss/core';
import { describe, expect, it } from 'vitest';
import { openBlockDevice } from '../src';
import { isRoot, pattern, ROOT_REASON, withLoop } from './helpers';

const SIZE = 8 * 1024 * 1024;

describe.skipIf(!isRoot)(`O_DIRECT round trips on loop devices (${ROOT_REASON})`, () => {
  for (const sectorSize of [512, 4096]) {
    it(`unaligned offsets and lengths, ${sectorSize}-byte sectors, seed ${sectorSize}`, async () => {
      await withLoop({ sizeBytes: SIZE, sectorSize }, async ({ device, image }) => {
        // Small bounce buffers so requests split into several chunks.
        const opened = await openBlockDevice(device, { bounceBufferBytes: 64 * 1024, bounceBufferCount: 2 });
        const model = new Uint8Array(SIZE);
        const random = new SeededRandom(sectorSize);
        try {
          expect(opened.ioMode).toBe('direct');
          for (let step = 0; step < 200; step++) {
            const length = random.integer(1, step % 10 === 0 ? 300_000 : 9000);
            const offset = random.integer(0, SIZE - length);
            if (random.next() < 0.5) {
              const data = pattern(length, step + 1);
              await opened.write(data, offset);
              model.set(data, offset);
            } else {
              const target = new Uint8Array(length);
              expect(await opened.read(target, offset)).toBe(length);
              expect(Buffer.from(target).equals(model.subarray(offset, offset + length))).toBe(true);
            }
          }
          // Aligned buffers take the zero-copy path; check it too.
          const aligned = opened.allocateBuffer(4 * sectorSize);
          aligned.set(pattern(aligned.length, 99));
          await opened.write(aligned, 8 * sectorSize);
          model.set(aligned, 8 * sectorSize);
          const back = opened.allocateBuffer(4 * sectorSize);
          await opened.read(back, 8 * sectorSize);
          expect(Buffer.from(back).equals(Buffer.from(aligned))).toBe(true);
          await opened.flush();
        } finally {
          await opened.close();
        }
        expect(Buffer.from(readFileSync(image)).equals(model)).toBe(true);
      });
    });
  }

  it('keeps concurrent unaligned writes that share a sector (read-modify-write is locked)', async () => {
    await withLoop({ sizeBytes: 1 << 20, sectorSize: 4096 }, async ({ device }) => {
      const opened = await openBlockDevice(device);
      try {
        // 64 one-byte writes into the same 4096-byte sector, all in flight at once.
        await Promise.all(
          Array.from({ length: 64 }, (_, index) => opened.write(new Uint8Array([index + 1]), 100 + index)),
        );
        const target = new Uint8Array(64);
        await opened.read(target, 100);
        expect([...target]).toEqual(Array.from({ length: 64 }, (_, index) => index + 1));
      } finally {
        await opened.close();
      }
    });
  });

  it('answers out-of-range requests like every fss device', async () => {
    await withLoop({ sizeBytes: 1 << 20 }, async ({ device }) => {
      const opened = await openBlockDevice(device);
      try {
        const size = opened.size;
        expect(await opened.read(new Uint8Array(1000), size - 10)).toBe(10);
        expect(await opened.read(new Uint8Array(10), size)).toBe(0);
        await expect(opened.read(new Uint8Array(1), size + 1)).rejects.toMatchObject({ code: 'EINVAL' });
        await expect(opened.write(new Uint8Array(2), size - 1)).rejects.toMatchObject({ code: 'ENOSPC' });
        await expect(opened.read(new Uint8Array(1), -1)).rejects.toMatchObject({ code: 'EINVAL' });
      } finally {
        await opened.close();
      }
      await expect(opened.read(new Uint8Array(1), 0)).rejects.toMatchObject({ code: 'EBADF' });
    });
  });

  it('discards and zeroes ranges (BLKDISCARD, BLKZEROOUT) without touching neighbours', async () => {
    await withLoop({ sizeBytes: 1 << 20 }, async ({ device }) => {
      const opened = await openBlockDevice(device);
      try {
        const ones = new Uint8Array(65536).fill(0xff);
        await opened.write(ones, 0);
        await opened.writeZeroes(1000, 20_000); // unaligned both ends
        const back = new Uint8Array(65536);
        await opened.read(back, 0);
        expect(back.subarray(0, 1000).every((b) => b === 0xff)).toBe(true);
        expect(back.subarray(1000, 21_000).every((b) => b === 0)).toBe(true);
        expect(back.subarray(21_000).every((b) => b === 0xff)).toBe(true);
        // Loop devices over a sparse file support discard; the partial sectors keep their bytes.
        await opened.discard(100, 8192);
        await opened.read(back, 0);
        expect(back.subarray(0, 100).every((b) => b === 0xff)).toBe(true);
      } finally {
        await opened.close();
      }
    });
  });
});

describe.skipIf(!isRoot)(`writeZeroes and close on loop devices (${ROOT_REASON})`, () => {
  it('zeroes unaligned ranges, many at once, even with a one-buffer bounce pool, and close waits for them', async () => {
    await withLoop({ sizeBytes: 1024 * 1024 }, async ({ device }) => {
      // Regression: writeZeroes held a pool buffer while its unaligned pieces waited for another.
      const opened = await openBlockDevice(device, { bounceBufferCount: 1 });
      try {
        expect(opened.ioMode).toBe('direct');
        const filled = pattern(1024 * 1024, 7);
        await opened.write(filled, 0);
        const ranges = Array.from({ length: 8 }, (_, i) => ({
          offset: i * 65536 + 1000 + i,
          length: 100 + 700 * i,
        }));
        const zeroing = Promise.all(ranges.map(({ offset, length }) => opened.writeZeroes(offset, length)));
        const outcome = await Promise.race([
          zeroing.then(() => 'done'),
          new Promise((resolve) => setTimeout(() => resolve('hung'), 5000)),
        ]);
        expect(outcome).toBe('done');
        const model = filled.slice();
        for (const { offset, length } of ranges) model.fill(0, offset, offset + length);
        const back = new Uint8Array(model.length);
        await opened.read(back, 0);
        expect(Buffer.from(back).equals(model)).toBe(true);
      } finally {
        await opened.close();
      }
    });
  });
});
