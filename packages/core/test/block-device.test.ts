/**
 * The in-memory device and the fault-injecting wrapper (with no faults configured) run the
 * BlockDevice conformance suite: writable with 512- and 4096-byte sectors, and read-only over
 * known contents.
 */
import { FaultyBlockDevice, MemoryBlockDevice } from '@fss/core';
import { patternBytes, testBlockDevice } from '@fss/core/testing';
import { expect, it } from 'vitest';

const DEVICE_BYTES = 4 * 1024 * 1024;

const everything = { unaligned: true, writeZeroes: true, discard: true } as const;

testBlockDevice(
  'MemoryBlockDevice',
  () => new MemoryBlockDevice(DEVICE_BYTES),
  { ...everything, allocateBuffer: false, preferredIoSize: false },
  (context) => {
    it('keeps its bytes in `bytes`, written through write', async () => {
      const device = (await context.open()) as MemoryBlockDevice;
      const source = patternBytes(1000, 1);
      await device.write(source, 4096);
      expect(Buffer.from(device.bytes.subarray(4096, 5096)).equals(source)).toBe(true);
    });
  },
);

testBlockDevice(
  'MemoryBlockDevice with 4096-byte sectors',
  () => new MemoryBlockDevice(DEVICE_BYTES, { logicalSectorSize: 4096 }),
  everything,
);

testBlockDevice(
  'MemoryBlockDevice, read-only',
  () => {
    const contents = patternBytes(DEVICE_BYTES, 2);
    return { device: new MemoryBlockDevice(contents.slice(), { readOnly: true }), contents };
  },
  { readOnly: true, unaligned: true, writeZeroes: true, discard: true },
);

testBlockDevice(
  'FaultyBlockDevice over memory, no faults',
  () => new FaultyBlockDevice(new MemoryBlockDevice(DEVICE_BYTES)),
  { ...everything, allocateBuffer: false, preferredIoSize: false },
);
