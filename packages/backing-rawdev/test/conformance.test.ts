/**
 * The shared BackingStore conformance suite on raw loop devices, plus this store's own rules:
 * block size = logical sector size, ENOSPC at the device's end, the exclusive claim, and the
 * refusal of the origin itself.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testBackingStoreWithEngine } from '@fss/engine/testing';
import { createLoop, isRoot, ROOT_REASON } from '@fss/test-utils';
import { describe, expect, it } from 'vitest';
import { openRawDeviceBackingStore } from '../src';

// Sparse, so it costs nothing; past 5 GiB so the suite's large-offset cases run.
const DEVICE_BYTES = 6 * 1024 ** 3;

describe.skipIf(!isRoot)(`raw loop devices (${ROOT_REASON})`, () => {
  for (const sectorSize of [512, 4096]) {
    testBackingStoreWithEngine(
      `RawDeviceBackingStore, ${sectorSize}-byte sectors`,
      async () => {
        const loop = createLoop(DEVICE_BYTES, sectorSize);
        try {
          return { store: await openRawDeviceBackingStore(loop.device), cleanup: loop.release };
        } catch (error) {
          loop.release();
          throw error;
        }
      },
      { sparse: false, capacityBytes: DEVICE_BYTES, sizeBytes: DEVICE_BYTES, writev: true },
      (context) => {
        it('has the device logical sector size as its block size', async () => {
          const store = await context.open();
          expect(store.blockSize).toBe(sectorSize);
        });
      },
    );
  }

  it('fails a write past the end with ENOSPC and claims the device exclusively', async () => {
    const loop = createLoop(1 << 20);
    try {
      const store = await openRawDeviceBackingStore(loop.device);
      try {
        await expect(store.write(new Uint8Array(1024), (1 << 20) - 512)).rejects.toMatchObject({
          code: 'ENOSPC',
          path: loop.device,
        });
        await expect(openRawDeviceBackingStore(loop.device)).rejects.toMatchObject({ code: 'EBUSY' });
      } finally {
        await store.close();
      }
      // Released on close: it opens again.
      await (await openRawDeviceBackingStore(loop.device)).close();
    } finally {
      loop.release();
    }
  });

  it('refuses the origin itself, and the loop device over the origin image, with EINVAL', async () => {
    const loop = createLoop(1 << 20);
    try {
      await expect(openRawDeviceBackingStore(loop.device, { origin: loop.device })).rejects.toMatchObject({
        code: 'EINVAL',
      });
      await expect(openRawDeviceBackingStore(loop.device, { origin: loop.image })).rejects.toMatchObject({
        code: 'EINVAL',
      });
      const other = createLoop(1 << 20);
      try {
        await (await openRawDeviceBackingStore(other.device, { origin: loop.device })).close();
      } finally {
        other.release();
      }
    } finally {
      loop.release();
    }
  });

  it('refuses a regular file with ENOTBLK (files belong to backing-file)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fss-rawdev-file-'));
    try {
      writeFileSync(join(dir, 'store'), new Uint8Array(1 << 20));
      await expect(openRawDeviceBackingStore(join(dir, 'store'))).rejects.toMatchObject({ code: 'ENOTBLK' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
