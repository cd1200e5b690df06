import {
  decodeHeader,
  FaultyBackingStore,
  FaultyBlockDevice,
  FssError,
  MemoryBackingStore,
  MemoryBlockDevice,
} from '@fss/core';
import { describe, expect, it } from 'vitest';
import { Origin } from '../src/index';

/** Waits (at most 5 s) for background work such as write-back to make `condition` true. */
async function until(condition: () => boolean | Promise<boolean>): Promise<void> {
  for (const start = Date.now(); !(await condition()); ) {
    if (Date.now() - start > 5000) throw new Error('condition not reached within 5 s');
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

function patterned(size: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 31 + seed) & 0xff;
  return bytes;
}

describe('engine: the t_fss basic scenario', () => {
  it('keeps "Original data" in the snapshot after "Replacement data" reaches the origin', async () => {
    const device = new MemoryBlockDevice(2 * 1024 * 1024);
    const origin = new Origin(device, { name: 'image' });
    await origin.write(new TextEncoder().encode('Original data\n'), 4096);
    const snapshot = await origin.createSnapshot(new MemoryBackingStore(), { name: 'fss0' });
    await origin.write(new TextEncoder().encode('Replacement data\n'), 4096);

    const fromSnapshot = new Uint8Array(14);
    await snapshot.read(fromSnapshot, 4096);
    const fromOrigin = new Uint8Array(17);
    await origin.read(fromOrigin, 4096);
    expect(new TextDecoder().decode(fromSnapshot)).toBe('Original data\n');
    expect(new TextDecoder().decode(fromOrigin)).toBe('Replacement data\n');
  });
});

describe('engine: copy-on-write', () => {
  it('reads the whole device as it was, after writes everywhere, through cache and store', async () => {
    const size = 1_000_000; // not a multiple of the cluster size: the last cluster is partial
    const device = new MemoryBlockDevice(patterned(size, 7));
    const model = device.bytes.slice();
    const origin = new Origin(device);
    const store = new MemoryBackingStore();
    const snapshot = await origin.createSnapshot(store, { clusterSize: 4096 });
    expect(snapshot.geometry.clusterSize).toBe(4096);
    for (let offset = 0; offset < size; offset += 10_000) {
      await origin.write(patterned(Math.min(3000, size - offset), offset), offset);
    }
    const whole = new Uint8Array(size);
    expect(await snapshot.read(whole, 0)).toBe(size);
    expect(Buffer.compare(whole, model)).toBe(0);
    expect(store.bytesWritten).toBeGreaterThan(0);
    const info = snapshot.info();
    expect(info.fsg_csize).toBe(4096);
    expect(info.fsg_mount_size).toBe(Math.ceil(size / 4096));
    expect(info.fsg_bs_size).toBeGreaterThan(snapshot.layout.tableClusters);
  });

  it('counts fsg_bs_size as NetBSD does: the indirect table and stored data, not our header', async () => {
    const origin = new Origin(new MemoryBlockDevice(2 * 1024 * 1024));
    const snapshot = await origin.createSnapshot(new MemoryBackingStore({ blockSize: 512 }));
    expect(snapshot.geometry).toMatchObject({ clusterSize: 65536, clusterCount: 32 });
    expect(snapshot.layout.tableClusters).toBe(1);
    expect(snapshot.info().fsg_bs_size).toBe(1); // fssconfig -lv: "64K backup", as on NetBSD
    await origin.write(new Uint8Array(100).fill(1), 70_000);
    await origin.write(new Uint8Array(100).fill(2), 200_000);
    await snapshot.close(); // drains the cache onto the store
    expect(snapshot.info().fsg_bs_size).toBe(3);
    expect(snapshot.storeClustersInUse).toBe(4); // and the header cluster
  });

  it('refuses writes to a snapshot with EROFS', async () => {
    const origin = new Origin(new MemoryBlockDevice(65536));
    const snapshot = await origin.createSnapshot(new MemoryBackingStore());
    await expect(snapshot.write(new Uint8Array(512), 0)).rejects.toMatchObject({ code: 'EROFS' });
  });

  it('applies the read rules past the end: EINVAL beyond, 0 at the end, truncated across', async () => {
    const origin = new Origin(new MemoryBlockDevice(10_000));
    const snapshot = await origin.createSnapshot(new MemoryBackingStore());
    await expect(snapshot.read(new Uint8Array(1), 10_001)).rejects.toBeInstanceOf(FssError);
    await expect(snapshot.read(new Uint8Array(1), 10_001)).rejects.toMatchObject({ code: 'EINVAL' });
    expect(await snapshot.read(new Uint8Array(100), 10_000)).toBe(0);
    expect(await snapshot.read(new Uint8Array(100), 9_950)).toBe(50);
  });

  it('invalidates once on a store failure, then reads ENXIO while origin writes land', async () => {
    const lines: string[] = [];
    const device = new MemoryBlockDevice(1 << 20);
    const origin = new Origin(device, { logger: (line) => lines.push(line) });
    const store = new MemoryBackingStore({ capacityBytes: 4 * 65536 });
    const snapshot = await origin.createSnapshot(store, { name: 'fss3' });
    for (let offset = 0; offset < 1 << 20; offset += 65536) {
      await origin.write(patterned(65536, offset), offset);
    }
    await until(() => !snapshot.valid);
    expect(lines.length).toBe(1);
    expect(lines[0]).toMatch(/^fss3: snapshot invalid: write error on backing store/);
    await expect(snapshot.read(new Uint8Array(512), 0)).rejects.toMatchObject({ code: 'ENXIO' });
    for (let offset = 0; offset < 1 << 20; offset += 65536) {
      expect(Buffer.compare(device.bytes.subarray(offset, offset + 65536), patterned(65536, offset))).toBe(0);
    }
    expect(snapshot.info().fsg_csize).toBe(65536);
  });
});

/** A device whose writes wait until the test releases them. */
class HeldWritesDevice extends MemoryBlockDevice {
  private held: Array<() => void> = [];
  holdWrites = false;

  override async write(source: Uint8Array, offset: number): Promise<void> {
    if (this.holdWrites) await new Promise<void>((resolve) => this.held.push(resolve));
    await super.write(source, offset);
  }

  get heldCount(): number {
    return this.held.length;
  }

  release(): void {
    for (const resolve of this.held.splice(0)) resolve();
  }
}

describe('engine: the write gate', () => {
  it('takes the snapshot only once writes in flight have landed, so no write is torn', async () => {
    const device = new HeldWritesDevice(4 * 4096);
    const origin = new Origin(device);
    device.holdWrites = true;
    const spanning = new Uint8Array(4096).fill(0xaa); // covers the end of cluster 0 and start of cluster 1
    const inFlight = origin.write(spanning, 2048);
    await new Promise((resolve) => setImmediate(resolve));
    expect(device.heldCount).toBe(1);

    let created = false;
    const creating = origin
      .createSnapshot(new MemoryBackingStore(), { clusterSize: 4096 })
      .then((snapshot) => {
        created = true;
        return snapshot;
      });
    await new Promise((resolve) => setTimeout(resolve, 5));
    expect(created).toBe(false); // waiting for the write in flight

    device.holdWrites = false;
    device.release();
    await inFlight;
    const snapshot = await creating;
    await origin.write(new Uint8Array(8192).fill(0x55), 0); // copies clusters 0 and 1
    const seen = new Uint8Array(8192);
    await snapshot.read(seen, 0);
    expect(seen.subarray(2048, 6144).every((byte) => byte === 0xaa)).toBe(true);
    expect(seen.subarray(0, 2048).every((byte) => byte === 0)).toBe(true);
  });

  it('runs onActivate inside the gate: it sees every write before the snapshot and none after', async () => {
    const device = new HeldWritesDevice(4 * 4096);
    const origin = new Origin(device);
    device.holdWrites = true;
    const before = origin.write(new Uint8Array(4096).fill(0xaa), 0);
    await new Promise((resolve) => setImmediate(resolve));
    let seenAtActivation: Uint8Array | undefined;
    let writeAfter: Promise<void> | undefined;
    const creating = origin.createSnapshot(new MemoryBackingStore(), {
      clusterSize: 4096,
      onActivate: () => {
        seenAtActivation = device.bytes.slice();
        writeAfter = origin.write(new Uint8Array(4096).fill(0x55), 4096); // waits for the gate
        expect(device.heldCount).toBe(0);
      },
    });
    await new Promise((resolve) => setTimeout(resolve, 5));
    expect(seenAtActivation).toBeUndefined(); // the write in flight has not landed yet
    device.holdWrites = false;
    device.release();
    await before;
    const snapshot = await creating;
    await writeAfter;
    expect(seenAtActivation?.subarray(0, 4096).every((byte) => byte === 0xaa)).toBe(true);
    expect(seenAtActivation?.subarray(4096, 8192).every((byte) => byte === 0)).toBe(true);
    const seen = new Uint8Array(8192);
    await snapshot.read(seen, 0);
    expect(Buffer.compare(seen, seenAtActivation!.subarray(0, 8192))).toBe(0);
  });

  it('fails createSnapshot and closes the store when onActivate throws; the origin keeps working', async () => {
    const origin = new Origin(new MemoryBlockDevice(65536));
    const store = new MemoryBackingStore();
    await expect(
      origin.createSnapshot(store, {
        onActivate: () => {
          throw new FssError('EIO', 'observer failed');
        },
      }),
    ).rejects.toMatchObject({ code: 'EIO' });
    expect(origin.snapshots).toEqual([]);
    await origin.write(new Uint8Array(512).fill(1), 0);
    await expect(store.write(new Uint8Array(512), 0)).rejects.toMatchObject({ code: 'EBADF' });
  });

  it('fails an origin write with the origin read error when the copy cannot be read', async () => {
    const memory = new MemoryBlockDevice(65536 * 2);
    const device = new FaultyBlockDevice(memory);
    const origin = new Origin(device);
    const snapshot = await origin.createSnapshot(new MemoryBackingStore());
    device.faults.failNext('read', 'EIO');
    await expect(origin.write(new Uint8Array(10).fill(1), 0)).rejects.toMatchObject({ code: 'EIO' });
    expect(memory.bytes.subarray(0, 10).every((byte) => byte === 0)).toBe(true); // not issued
    expect(snapshot.valid).toBe(true);
    await origin.write(new Uint8Array(10).fill(1), 0); // the next attempt copies and lands
    const seen = new Uint8Array(10);
    await snapshot.read(seen, 0);
    expect(seen.every((byte) => byte === 0)).toBe(true);
  });
});

describe('engine: the store header', () => {
  it('records the geometry and time when taken, and the invalid state and reason after a failure', async () => {
    const memory = new MemoryBackingStore({ blockSize: 4096 });
    const store = new FaultyBackingStore(memory);
    const origin = new Origin(new MemoryBlockDevice(1 << 20), {
      name: '/dev/demo',
      now: () => 1_700_000_000_250,
    });
    const snapshot = await origin.createSnapshot(store, { name: 'fss0', clusterSize: 8192 });
    const read = async () => {
      const bytes = new Uint8Array(512);
      await memory.read(bytes, 0);
      return decodeHeader(bytes);
    };
    expect(await read()).toMatchObject({
      state: 'valid',
      clusterShift: 13,
      deviceBytes: 1 << 20,
      clusterCount: 128,
      tableClusters: 1,
      nextCluster: 2,
      timeMicros: 1_700_000_000_250_000,
      originIdentity: '/dev/demo',
    });
    store.faults.failNext('write', 'ENOSPC');
    await origin.write(new Uint8Array(100).fill(9), 0);
    await until(async () => (await read()).state === 'invalid'); // written in the background
    expect(snapshot.valid).toBe(false);
    const header = await read();
    expect(header.invalidReason).toMatch(/write error on backing store: ENOSPC/);
  });
});

describe('MemoryBackingStore', () => {
  it('says EINVAL, not ENOSPC, for an offset that is not a byte offset, even with a capacity', async () => {
    const store = new MemoryBackingStore({ capacityBytes: 4096 });
    await expect(store.write(new Uint8Array(1), 2 ** 53)).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(store.write(new Uint8Array(1), -1)).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(store.write(new Uint8Array(1), 4096)).rejects.toMatchObject({ code: 'ENOSPC' });
  });
});

describe('engine: closing the origin', () => {
  it('fails a snapshot still waiting for the write gate with EBADF and closes its store', async () => {
    const device = new HeldWritesDevice(65536);
    const origin = new Origin(device);
    device.holdWrites = true;
    const inFlight = origin.write(new Uint8Array(512), 0);
    const closing = origin.close(); // queues for the gate first: waits for the write in flight
    const store = new MemoryBackingStore();
    const creating = origin.createSnapshot(store); // queues behind the close
    creating.catch(() => undefined);
    await new Promise((resolve) => setTimeout(resolve, 5));
    device.holdWrites = false;
    device.release();
    await inFlight;
    await closing;
    await expect(creating).rejects.toMatchObject({ code: 'EBADF' });
    expect(store.isClosed).toBe(true);
    expect(origin.snapshots).toEqual([]);
  });

  it('invalidates open snapshots: their reads say ENXIO', async () => {
    const origin = new Origin(new MemoryBlockDevice(65536));
    const snapshot = await origin.createSnapshot(new MemoryBackingStore(), { logger: () => undefined });
    await origin.close();
    expect(snapshot.valid).toBe(false);
    expect(snapshot.invalidReason).toBe('origin went away');
    await expect(snapshot.read(new Uint8Array(1), 0)).rejects.toMatchObject({ code: 'ENXIO' });
    await expect(origin.write(new Uint8Array(1), 0)).rejects.toMatchObject({ code: 'EBADF' });
  });
});

describe('engine: Origin.bytesWritten', () => {
  it('counts the bytes of writes and write-zeroes that landed, not discards, refused or empty writes', async () => {
    const device = new MemoryBlockDevice(1024 * 1024);
    const origin = new Origin(device);
    expect(origin.bytesWritten).toBe(0);
    await origin.write(new Uint8Array(4096), 0);
    await origin.write(new Uint8Array(0), 8192);
    await origin.writeZeroes?.(65536, 512);
    await origin.discard?.(131072, 4096);
    await expect(origin.write(new Uint8Array(4096), 1024 * 1024)).rejects.toBeInstanceOf(FssError);
    const expected = 4096 + (origin.writeZeroes === undefined ? 0 : 512);
    expect(origin.bytesWritten).toBe(expected);
  });
});

describe('engine: reserved writes', () => {
  it('keeps other writers out (EBUSY naming why) while its own writes copy-on-write as usual', async () => {
    const device = new MemoryBlockDevice(patterned(4 * 65536, 1));
    const model = device.bytes.slice();
    const origin = new Origin(device, { name: 'image' });
    const snapshot = await origin.createSnapshot(new MemoryBackingStore(), { clusterSize: 65536 });
    const writer = await origin.reserveWrites('fss1 is being rolled back');
    await expect(origin.write(new Uint8Array(512).fill(1), 0)).rejects.toMatchObject({
      code: 'EBUSY',
      description: 'origin is reserved: fss1 is being rolled back',
    });
    await expect(origin.reserveWrites('another')).rejects.toMatchObject({ code: 'EBUSY' });
    expect(Buffer.compare(device.bytes, model)).toBe(0); // the refused write was not issued
    await writer.write(new Uint8Array(512).fill(2), 65536);
    expect(device.bytes[65536]).toBe(2);
    const seen = new Uint8Array(4 * 65536);
    await snapshot.read(seen, 0);
    expect(Buffer.compare(seen, model)).toBe(0); // the reserved write was preserved first
    writer.release();
    await origin.write(new Uint8Array(512).fill(3), 0);
    expect(device.bytes[0]).toBe(3);
  });
});
