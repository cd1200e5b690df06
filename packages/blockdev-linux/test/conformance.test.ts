/**
 * LinuxBlockDevice runs the BlockDevice conformance suite: over a disk image (O_DIRECT on
 * the temp directory's ext4, and buffered), read-only over an image with known contents, and,
 * as root, over loop devices with O_DIRECT (512- and 4096-byte sectors, small bounce buffers
 * so requests split, and a read-only loop device). Every variant can reopen its storage, so
 * the persistence cases run too.
 */
import { truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { patternBytes, testBlockDevice } from '@fss/core/testing';
import { describe, expect, it } from 'vitest';
import { type LinuxBlockDevice, type OpenBlockDeviceOptions, openBlockDevice } from '../src';
import { createLoop, isRoot, ROOT_REASON, tempDir } from './helpers';

const DEVICE_BYTES = 8 * 1024 * 1024;

/** Everything a Linux device does: any offset, zeroing, discard, aligned memory, reopening. */
const capable = {
  unaligned: true,
  reopen: true,
  writeZeroes: true,
  discard: true,
  allocateBuffer: true,
  preferredIoSize: false,
} as const;

/** A fresh sparse image (or one holding `contents`), opened with `options`, removed after. */
function imageFixture(options: OpenBlockDeviceOptions, contents?: Uint8Array) {
  return async () => {
    const dir = tempDir('fss-conformance-');
    const image = join(dir.path, 'disk.img');
    writeFileSync(image, contents ?? new Uint8Array(0));
    if (contents === undefined) truncateSync(image, DEVICE_BYTES); // sparse
    return {
      device: await openBlockDevice(image, options),
      contents,
      reopen: () => openBlockDevice(image, options),
      cleanup: () => dir.remove(),
    };
  };
}

/** A loop device over a fresh image (holding `contents` when given), opened with `options`. */
function loopFixture(
  options: OpenBlockDeviceOptions,
  loop: { sectorSize: number; readOnly?: boolean },
  contents?: Uint8Array,
) {
  return async () => {
    const fixture = createLoop(DEVICE_BYTES, loop.sectorSize, loop.readOnly ?? false);
    try {
      // Written to the image before anything reads the fresh loop device, so none of it is cached.
      if (contents !== undefined) writeFileSync(fixture.image, contents);
      return {
        device: await openBlockDevice(fixture.device, options),
        contents,
        reopen: () => openBlockDevice(fixture.device, options),
        cleanup: () => fixture.release(),
      };
    } catch (error) {
      fixture.release();
      throw error;
    }
  };
}

testBlockDevice('LinuxBlockDevice on an image (ext4: O_DIRECT)', imageFixture({}), capable, (context) => {
  it('opens the image for direct I/O', async () => {
    const device = (await context.open()) as LinuxBlockDevice;
    expect(device.properties.kind).toBe('file');
    expect(device.ioMode).toBe('direct');
  });
});

testBlockDevice(
  'LinuxBlockDevice on an image, buffered',
  imageFixture({ direct: false }),
  capable,
  (context) => {
    it('opens the image buffered, as asked', async () => {
      const device = (await context.open()) as LinuxBlockDevice;
      expect(device.ioMode).toBe('buffered');
      expect(device.properties.bufferedReason).toMatch(/turned off/);
    });
  },
);

const imageContents = patternBytes(DEVICE_BYTES, 1);
testBlockDevice(
  'LinuxBlockDevice on an image, opened read-only',
  imageFixture({ readOnly: true }, imageContents),
  { ...capable, readOnly: true },
);

describe.skipIf(!isRoot)(`loop devices (${ROOT_REASON})`, () => {
  testBlockDevice(
    'LinuxBlockDevice on a loop device, 512-byte sectors, O_DIRECT, 64 KiB bounce buffers',
    loopFixture({ bounceBufferBytes: 64 * 1024, bounceBufferCount: 2 }, { sectorSize: 512 }),
    capable,
    (context) => {
      it('opens the loop device for direct I/O with its 512-byte sectors', async () => {
        const device = (await context.open()) as LinuxBlockDevice;
        expect(device.properties.kind).toBe('block');
        expect(device.ioMode).toBe('direct');
        expect(device.logicalSectorSize).toBe(512);
      });
    },
  );

  testBlockDevice(
    'LinuxBlockDevice on a loop device, 4096-byte sectors, O_DIRECT',
    loopFixture({}, { sectorSize: 4096 }),
    capable,
    (context) => {
      it('opens the loop device for direct I/O with its 4096-byte sectors', async () => {
        const device = (await context.open()) as LinuxBlockDevice;
        expect(device.ioMode).toBe('direct');
        expect(device.logicalSectorSize).toBe(4096);
      });
    },
  );

  const loopContents = patternBytes(DEVICE_BYTES, 2);
  testBlockDevice(
    'LinuxBlockDevice on a read-only loop device, O_DIRECT',
    loopFixture({}, { sectorSize: 512, readOnly: true }, loopContents),
    { ...capable, readOnly: true },
  );
});
