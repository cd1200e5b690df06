/**
 * The engine-level conformance case on the in-memory store: a snapshot kept on a
 * MemoryBackingStore reads back the origin as it was, through the cache and the store.
 * (The store's own contract runs in @fss/core's tests; every other store runs both through
 * testBackingStoreWithEngine.)
 */
import { MemoryBackingStore } from '@fss/core';
import { testBackingStoreWithEngine } from '../src/testing/index';

testBackingStoreWithEngine('MemoryBackingStore with the engine', () => new MemoryBackingStore(), {
  sparse: true,
  writev: false,
});
