/**
 * The fault-injecting wrappers are honest about capabilities: an optional method exists
 * exactly when the wrapped object has it, and it goes through the same fault checks as the
 * operation it is a kind of. FaultyBackingStore over memory (no faults) also runs the store
 * suite, so the wrapper itself keeps the BackingStore contract.
 */

import type { BackingStore, BlockDevice } from '@fss/core';
import {
  FaultyBackingStore,
  FaultyBlockDevice,
  FssError,
  MemoryBackingStore,
  MemoryBlockDevice,
} from '@fss/core';
import { testBackingStore } from '@fss/core/testing';
import { describe, expect, it } from 'vitest';

testBackingStore(
  'FaultyBackingStore over memory, no faults',
  () => new FaultyBackingStore(new MemoryBackingStore()),
  {
    sparse: true,
    writev: false,
  },
);

/** A store with writev and allocateBuffer, counting what reaches it. */
function capableStore() {
  const inner = new MemoryBackingStore();
  const calls = { writev: 0, allocateBuffer: 0 };
  const store: BackingStore = Object.assign(inner, {
    async writev(sources: readonly Uint8Array[], offset: number) {
      calls.writev += 1;
      let at = offset;
      for (const source of sources) {
        await inner.write(source, at);
        at += source.length;
      }
    },
    allocateBuffer(length: number) {
      calls.allocateBuffer += 1;
      return new Uint8Array(length);
    },
  });
  return { store, calls };
}

testBackingStore(
  'FaultyBackingStore over a store with writev, no faults',
  () => new FaultyBackingStore(capableStore().store),
  { sparse: true, writev: true },
);

/** A device with only the required methods. */
function bareDevice(size: number): BlockDevice {
  const memory = new MemoryBlockDevice(size);
  return {
    size,
    logicalSectorSize: 512,
    readOnly: false,
    read: (target, offset) => memory.read(target, offset),
    write: (source, offset) => memory.write(source, offset),
    flush: () => memory.flush(),
    close: () => memory.close(),
  };
}

describe('FaultyBackingStore capabilities', () => {
  it('has writev and allocateBuffer exactly when the inner store has them', () => {
    const bare = new FaultyBackingStore(new MemoryBackingStore());
    expect(bare.writev).toBeUndefined();
    expect(bare.allocateBuffer).toBeUndefined();
    const { store, calls } = capableStore();
    const capable = new FaultyBackingStore(store);
    expect(capable.writev).toBeTypeOf('function');
    const allocate = capable.allocateBuffer!;
    expect(allocate(4096)).toHaveLength(4096); // unbound: still the inner store's
    expect(calls.allocateBuffer).toBe(1);
  });

  it('fails writev like a write: failNext, and ENOSPC on its total length with nothing written', async () => {
    const { store, calls } = capableStore();
    const faulty = new FaultyBackingStore(store, { enospcAfterBytes: 4096 });
    faulty.faults.failNext('write', 'EIO');
    await expect(faulty.writev!([new Uint8Array(512)], 0)).rejects.toMatchObject({ code: 'EIO' });
    const sources = [new Uint8Array(2048).fill(1), new Uint8Array(2048).fill(2)];
    await faulty.writev!(sources, 0);
    const error = await faulty.writev!([new Uint8Array(512).fill(3)], 4096).catch((reason) => reason);
    expect(error).toBeInstanceOf(FssError);
    expect(error.code).toBe('ENOSPC');
    expect(calls.writev).toBe(1);
    expect(faulty.faults.faultsInjected).toBe(2);
  });
});

describe('FaultyBlockDevice capabilities', () => {
  it('has writeZeroes, discard and allocateBuffer exactly when the inner device has them', () => {
    const bare = new FaultyBlockDevice(bareDevice(1 << 20));
    expect(bare.writeZeroes).toBeUndefined();
    expect(bare.discard).toBeUndefined();
    expect(bare.allocateBuffer).toBeUndefined();
    expect(bare.preferredIoSize).toBeUndefined();
    const memory = new FaultyBlockDevice(new MemoryBlockDevice(1 << 20));
    expect(memory.writeZeroes).toBeTypeOf('function');
    expect(memory.discard).toBeTypeOf('function');
    expect(memory.allocateBuffer).toBeUndefined();
    const withMemory = new FaultyBlockDevice(
      Object.assign(bareDevice(1 << 20), { allocateBuffer: (length: number) => new Uint8Array(length) }),
    );
    expect(withMemory.allocateBuffer!(512)).toHaveLength(512);
  });

  it('fails writeZeroes like a write and discard as its own operation', async () => {
    const inner = new MemoryBlockDevice(1 << 20);
    inner.bytes.fill(7);
    const device = new FaultyBlockDevice(inner, { enospcAfterBytes: 8192 });
    device.faults.failNext('write', 'EIO');
    await expect(device.writeZeroes!(0, 512)).rejects.toMatchObject({ code: 'EIO', syscall: 'write' });
    await expect(device.writeZeroes!(0, 16_384)).rejects.toMatchObject({ code: 'ENOSPC' });
    expect(inner.bytes.every((byte) => byte === 7)).toBe(true);
    device.faults.failNext('discard', 'EIO');
    await expect(device.discard!(0, 512)).rejects.toMatchObject({ code: 'EIO', syscall: 'discard' });
    await device.writeZeroes!(0, 4096);
    await device.discard!(4096, 4096);
    expect(inner.bytes.subarray(0, 8192).every((byte) => byte === 0)).toBe(true);
    expect(device.faults.bytesWritten).toBe(4096); // discard counts no bytes
  });

  it('passes preferredIoSize through', () => {
    const device = new FaultyBlockDevice(Object.assign(bareDevice(1 << 20), { preferredIoSize: 65536 }));
    expect(device.preferredIoSize).toBe(65536);
  });

  it('lets requests waiting out their injected latency finish before closing the inner device', async () => {
    const device = new FaultyBlockDevice(new MemoryBlockDevice(1 << 20), { latencyMs: { min: 5, max: 10 } });
    const write = device.write(new Uint8Array(512).fill(9), 0);
    await device.close();
    await expect(write).resolves.toBeUndefined();
    await expect(device.read(new Uint8Array(512), 0)).rejects.toMatchObject({ code: 'EBADF' });
  });
});
