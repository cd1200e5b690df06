/**
 * MemoryBackingStore runs the shared conformance suite, as every store does, declared sparse
 * and, in a second run, with a capacity so the ENOSPC cases run too. (The engine-level case
 * on this store runs in @fss/engine's tests: core does not depend on the engine.)
 */
import { MemoryBackingStore } from '@fss/core';
import { testBackingStore } from '@fss/core/testing';
import { expect, it } from 'vitest';

const CAPACITY_BYTES = 64 * 1024 * 1024;

testBackingStore('MemoryBackingStore', () => new MemoryBackingStore(), { sparse: true, writev: false });

testBackingStore(
  'MemoryBackingStore with capacityBytes and 4 KiB blocks',
  () => new MemoryBackingStore({ blockSize: 4096, capacityBytes: CAPACITY_BYTES }),
  { sparse: true, capacityBytes: CAPACITY_BYTES },
  (context) => {
    it('reports the configured block size', async () => {
      const store = await context.open();
      expect(store.blockSize).toBe(4096);
    });
  },
);
