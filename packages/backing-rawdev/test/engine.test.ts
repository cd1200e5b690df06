/**
 * Goal: the copy-on-write engine works end to end on real devices: an Origin on a loop
 * device (O_DIRECT, claimed) with snapshots kept on raw loop devices.
 *
 * Method: a seeded workload of origin writes, zero-writes and discards at unaligned offsets
 * and lengths, interleaved with snapshot reads, all checked against byte-array models: each
 * snapshot must read exactly the origin as it was when it was taken, the origin must read
 * its model, and after closing, the origin's image file (read with plain buffered I/O) must
 * equal the model, so every write reached the device. A second case gives the snapshot a
 * raw device too small for what it must save: the store's ENOSPC invalidates the snapshot
 * (reads ENXIO), and every origin write still lands.
 */
import { readFileSync } from 'node:fs';
import { openBlockDevice } from '@fss/blockdev-linux';
import { SeededRandom } from '@fss/core';
import { Origin } from '@fss/engine';
import { createLoop, isRoot, ROOT_REASON } from '@fss/test-utils';
import { describe, expect, it } from 'vitest';
import { openRawDeviceBackingStore } from '../src';

/** Not a multiple of the cluster size: the last cluster is partial. */
const ORIGIN_BYTES = 24 * 1024 * 1024 + 7 * 512;
const CLUSTER_BYTES = 16 * 1024;

function noise(length: number, random: SeededRandom): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let index = 0; index < length; index += 4) {
    const word = Math.floor(random.next() * 2 ** 32);
    for (let shift = 0; shift < 4 && index + shift < length; shift++)
      bytes[index + shift] = (word >>> (8 * shift)) & 0xff;
  }
  return bytes;
}

async function expectReads(
  device: { read(t: Uint8Array, o: number): Promise<number> },
  model: Uint8Array,
  what: string,
) {
  const chunk = 1 << 20;
  for (let offset = 0; offset < model.length; offset += chunk) {
    const length = Math.min(chunk, model.length - offset);
    const target = new Uint8Array(length);
    expect(await device.read(target, offset)).toBe(length);
    const expected = model.subarray(offset, offset + length);
    if (!Buffer.from(target).equals(expected)) {
      const at = target.findIndex((byte, index) => byte !== expected[index]);
      expect.fail(`${what}: first difference at byte ${offset + at}`);
    }
  }
}

describe.skipIf(!isRoot)(`the engine on loop devices with raw-device stores (${ROOT_REASON})`, () => {
  it('keeps two point-in-time snapshots through a concurrent unaligned workload (seed 4242)', async () => {
    const originLoop = createLoop(ORIGIN_BYTES);
    const storeLoops = [createLoop(32 << 20, 4096), createLoop(32 << 20)];
    const logged: string[] = [];
    const random = new SeededRandom(4242);
    try {
      const device = await openBlockDevice(originLoop.device);
      const model = noise(ORIGIN_BYTES, random);
      await device.write(model, 0);
      const origin = new Origin(device, { name: 'loop-origin', logger: (line) => logged.push(line) });
      try {
        const first = await origin.createSnapshot(
          await openRawDeviceBackingStore(storeLoops[0]!.device, { origin: originLoop.device }),
          { name: 'fss0', clusterSize: CLUSTER_BYTES },
        );
        const firstModel = model.slice();
        let second: Awaited<ReturnType<typeof origin.createSnapshot>> | undefined;
        let secondModel: Uint8Array | undefined;

        for (let round = 0; round < 12; round++) {
          if (round === 6) {
            second = await origin.createSnapshot(
              await openRawDeviceBackingStore(storeLoops[1]!.device, { origin: originLoop.device }),
              { name: 'fss1', clusterSize: CLUSTER_BYTES },
            );
            secondModel = model.slice();
          }
          // Eight writes in flight at once, on disjoint ranges so the model is exact, plus reads
          // of both snapshots racing them.
          const writes: Promise<void>[] = [];
          for (let index = 0; index < 8; index++) {
            const slot = Math.floor(ORIGIN_BYTES / 8);
            const length = random.integer(1, Math.min(200_000, slot));
            const offset = index * slot + random.integer(0, slot - length);
            const kind = random.next();
            if (kind < 0.8) {
              const data = noise(length, random);
              model.set(data, offset);
              writes.push(origin.write(data, offset));
            } else {
              model.fill(0, offset, offset + length);
              writes.push(origin.writeZeroes!(offset, length)); // a memory device has it
            }
          }
          const readOffset = random.integer(0, ORIGIN_BYTES - 65_536);
          const reads = [first, second].map(async (snapshot, which) => {
            if (snapshot === undefined) return;
            const target = new Uint8Array(random.integer(1, 65_536));
            await snapshot.read(target, readOffset);
            const expected = (which === 0 ? firstModel : secondModel!).subarray(
              readOffset,
              readOffset + target.length,
            );
            expect(Buffer.from(target).equals(expected), `snapshot ${which} at ${readOffset}`).toBe(true);
          });
          await Promise.all([...writes, ...reads]);
        }

        await expectReads(first, firstModel, 'fss0');
        await expectReads(second!, secondModel!, 'fss1');
        await expectReads(origin, model, 'origin');
        expect(first.valid && second!.valid).toBe(true);
        expect(first.info().fsg_csize).toBe(CLUSTER_BYTES);
        expect(logged).toEqual([]);
        await origin.flush();
        await first.close();
        await second!.close();
      } finally {
        await origin.close();
      }
      expect(Buffer.from(readFileSync(originLoop.image)).equals(model)).toBe(true);
    } finally {
      for (const loop of storeLoops) loop.release();
      originLoop.release();
    }
  });

  it('invalidates the snapshot when its raw device fills (ENOSPC) and loses no origin write', async () => {
    const originLoop = createLoop(ORIGIN_BYTES);
    // Room for the header, the table and a handful of clusters only.
    const storeLoop = createLoop(256 * 1024);
    const logged: string[] = [];
    const random = new SeededRandom(7);
    try {
      const device = await openBlockDevice(originLoop.device);
      const model = noise(ORIGIN_BYTES, random);
      await device.write(model, 0);
      const origin = new Origin(device, { logger: (line) => logged.push(line) });
      try {
        const snapshot = await origin.createSnapshot(await openRawDeviceBackingStore(storeLoop.device), {
          name: 'fss0',
          clusterSize: CLUSTER_BYTES,
        });
        // Touch every 64th cluster: far more clusters than the store can hold.
        for (let offset = 0; offset < ORIGIN_BYTES - 4096; offset += 64 * CLUSTER_BYTES) {
          const data = noise(4096, random);
          model.set(data, offset + 100);
          await origin.write(data, offset + 100);
        }
        await expect.poll(() => snapshot.state, { timeout: 10_000 }).toBe('invalid');
        expect(snapshot.invalidReason).toMatch(/No space left on device|ENOSPC/);
        await expect(snapshot.read(new Uint8Array(512), 0)).rejects.toMatchObject({ code: 'ENXIO' });
        expect(logged.filter((line) => line.includes('snapshot invalid'))).toHaveLength(1);
        await expectReads(origin, model, 'origin');
        await snapshot.close();
      } finally {
        await origin.close();
      }
      expect(Buffer.from(readFileSync(originLoop.image)).equals(model)).toBe(true);
    } finally {
      storeLoop.release();
      originLoop.release();
    }
  });
});
