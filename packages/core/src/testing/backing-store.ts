/**
 * The conformance suite every BackingStore runs (STYLE practice 5, after random-access-test
 * and unstorage's testDriver).
 *
 * One function, `testBackingStore(name, factory, capabilities, additionalTests)`, registers a
 * vitest `describe` block. Every case opens a fresh store from `factory`, and the suite closes
 * it and runs the fixture's cleanup after the case, whatever the outcome.
 *
 * What a store must do is the `BackingStore` contract in device.ts; what it may lack is
 * declared in `capabilities`, and the cases that need it are skipped (`it.skipIf`) with the
 * reason in their name. Capabilities a store shows by itself (`writev`, `allocateBuffer`) are
 * detected on the opened store; declaring them turns "skip when absent" into "fail when absent".
 *
 * All I/O in the suite is block-aligned (offsets and lengths are multiples of `blockSize`),
 * because that is all the engine issues and all a raw device opened with O_DIRECT accepts.
 * Data is seeded noise, different for every write, so a misdirected or torn write shows up
 * as a byte mismatch at a named store offset.
 */
import type { BackingStore } from '@fss/core';
import { FssError, isPowerOfTwo } from '@fss/core';
import { afterEach, describe, expect, it } from 'vitest';
import { assertSameBytes, concatBytes, isAllZero, patternBytes } from './bytes';
import { expectFssError } from './errors';

/** What a factory returns: a store, optionally with a cleanup to run after it is closed. */
export interface BackingStoreFixture {
  store: BackingStore;
  /** Runs after the store was closed (e.g. removes a temporary directory). */
  cleanup?: () => void | Promise<void>;
}

/** Makes a fresh, empty store for one test case. */
export type BackingStoreFactory = () =>
  | BackingStore
  | BackingStoreFixture
  | Promise<BackingStore | BackingStoreFixture>;

export interface BackingStoreCapabilities {
  /**
   * Never-written bytes read as zeroes (files, memory; not raw devices). Default false: the
   * zero-read cases are skipped.
   */
  sparse?: boolean;
  /**
   * The store is full past this many bytes: a write ending beyond it fails with ENOSPC and
   * changes nothing, not even the part below the limit. Default: no limit, the cases are
   * skipped. The other cases need room: declare at least 64 MiB.
   */
  capacityBytes?: number;
  /**
   * The highest byte offset + 1 the store accepts (a raw device's size). Default: unlimited,
   * and the suite writes beyond 4 GiB; with a smaller size those cases are skipped.
   */
  sizeBytes?: number;
  /**
   * true: the store must have `writev`; false: it must not. Default: use it when present.
   */
  writev?: boolean;
  /**
   * Run the engine-level case (a snapshot kept on this store) when the suite is registered
   * through @fss/engine/testing's testBackingStoreWithEngine. Default true.
   */
  engine?: boolean;
}

/** Handed to `additionalTests`, so a store's own cases open stores the same way. */
export interface BackingStoreTestContext {
  readonly capabilities: Readonly<BackingStoreCapabilities>;
  /** Opens a fresh store from the factory; it is closed and cleaned up after the test. */
  open(): Promise<BackingStore>;
}

const GiB = 2 ** 30;
/** Where the large-offset cases write: past 4 GiB, so 32-bit offset truncation shows. */
const LARGE_OFFSET_BYTES = 5 * GiB;
/** A cluster shift must stay below 32, so no store block may be 2^32 bytes or more. */
const BLOCK_SIZE_MAX = 2 ** 31;

/**
 * Registers the conformance suite for one BackingStore implementation.
 *
 * @param name            What the `describe` block is called, e.g. "FileBackingStore".
 * @param factory         Makes a fresh, empty store for each case.
 * @param capabilities    What the store can and cannot do; see BackingStoreCapabilities.
 * @param additionalTests Registers the store's own cases inside the same describe block.
 */
export function testBackingStore(
  name: string,
  factory: BackingStoreFactory,
  capabilities: BackingStoreCapabilities = {},
  additionalTests?: (context: BackingStoreTestContext) => void,
): void {
  describe(`BackingStore conformance: ${name}`, () => {
    const context = createContext(factory, capabilities);
    afterEach(async () => {
      await context.releaseAll();
    });
    defineBasicTests(context);
    defineSparseTests(context);
    defineLargeOffsetTests(context);
    defineConcurrencyTests(context);
    defineWritevTests(context);
    defineCapacityTests(context);
    defineLifecycleTests(context);
    defineErrorTests(context);
    additionalTests?.(context);
  });
}

interface SuiteContext extends BackingStoreTestContext {
  releaseAll(): Promise<void>;
}

function createContext(factory: BackingStoreFactory, capabilities: BackingStoreCapabilities): SuiteContext {
  const fixtures: BackingStoreFixture[] = [];
  return {
    capabilities,
    async open() {
      const made = await factory();
      const fixture: BackingStoreFixture = 'store' in made ? made : { store: made };
      fixtures.push(fixture);
      return fixture.store;
    },
    // Close before cleanup (a file store must be closed before its directory goes), and
    // release every fixture even when one of them fails; report the first failure.
    async releaseAll() {
      const pending = fixtures.splice(0);
      const failures: unknown[] = [];
      for (const fixture of pending) {
        try {
          await fixture.store.close();
        } catch (error) {
          failures.push(error);
        }
        try {
          await fixture.cleanup?.();
        } catch (error) {
          failures.push(error);
        }
      }
      if (failures.length > 0) throw failures[0];
    },
  };
}

/** Writes `blocks` blocks of fresh noise at block index `block` and returns the bytes. */
async function writeBlocks(store: BackingStore, block: number, blocks: number, seed: number) {
  const source = patternBytes(blocks * store.blockSize, seed);
  await store.write(source, block * store.blockSize);
  return source;
}

/** Reads `length` bytes at `offset` into a fresh buffer. */
async function readBytes(store: BackingStore, offset: number, length: number): Promise<Uint8Array> {
  // Start from noise, not zeroes, so a read that leaves bytes untouched is caught.
  const target = patternBytes(length, 0x5eed ^ offset);
  await store.read(target, offset);
  return target;
}

function defineBasicTests(context: SuiteContext): void {
  it('has a block size that is a power of two from 512 up', async () => {
    const store = await context.open();
    const { blockSize } = store;
    expect(isPowerOfTwo(blockSize)).toBe(true);
    expect(blockSize).toBeGreaterThanOrEqual(512);
    expect(blockSize).toBeLessThan(BLOCK_SIZE_MAX);
  });

  it('reads back one block written at offset 0 and at a later block', async () => {
    const store = await context.open();
    const first = await writeBlocks(store, 0, 1, 1);
    const later = await writeBlocks(store, 7, 1, 2);
    assertSameBytes(await readBytes(store, 0, store.blockSize), first, 'block 0', 0);
    const laterOffset = 7 * store.blockSize;
    assertSameBytes(await readBytes(store, laterOffset, store.blockSize), later, 'block 7', laterOffset);
  });

  it('reads back a write of many blocks, whole and block by block', async () => {
    const store = await context.open();
    const blocks = Math.max(64, (1024 * 1024) / store.blockSize);
    const source = await writeBlocks(store, 3, blocks, 3);
    const offset = 3 * store.blockSize;
    assertSameBytes(await readBytes(store, offset, source.length), source, 'whole range', offset);
    for (const block of [0, 1, blocks / 2, blocks - 1]) {
      const at = offset + block * store.blockSize;
      const expected = source.subarray(block * store.blockSize, (block + 1) * store.blockSize);
      assertSameBytes(await readBytes(store, at, store.blockSize), expected, `block ${block}`, at);
    }
  });

  it('returns the newest bytes after overlapping overwrites, and leaves the rest alone', async () => {
    const store = await context.open();
    const block = store.blockSize;
    const model = new Uint8Array(8 * block);
    model.set(await writeBlocks(store, 0, 8, 10), 0);
    model.set(await writeBlocks(store, 2, 3, 11), 2 * block);
    model.set(await writeBlocks(store, 4, 3, 12), 4 * block);
    model.set(await writeBlocks(store, 0, 1, 13), 0);
    assertSameBytes(await readBytes(store, 0, model.length), model, 'after overwrites', 0);
  });

  it('treats an empty read and an empty write as no-ops', async () => {
    const store = await context.open();
    const source = await writeBlocks(store, 0, 1, 20);
    await store.write(new Uint8Array(0), 0);
    await store.read(new Uint8Array(0), 0);
    assertSameBytes(await readBytes(store, 0, store.blockSize), source, 'block 0', 0);
  });

  it('reads into and writes from a view into a larger buffer, touching only the view', async () => {
    const store = await context.open();
    const block = store.blockSize;
    const backing = patternBytes(4 * block, 21);
    const source = backing.subarray(block, 3 * block);
    await store.write(source, block);
    const target = new Uint8Array(4 * block).fill(0xaa);
    await store.read(target.subarray(block, 3 * block), block);
    assertSameBytes(target.subarray(block, 3 * block), source, 'view contents', block);
    expect(target.subarray(0, block).every((byte) => byte === 0xaa)).toBe(true);
    expect(target.subarray(3 * block).every((byte) => byte === 0xaa)).toBe(true);
  });

  it('flushes, and the data reads back the same afterwards', async () => {
    const store = await context.open();
    await store.flush();
    const source = await writeBlocks(store, 2, 16, 22);
    await store.flush();
    const offset = 2 * store.blockSize;
    assertSameBytes(await readBytes(store, offset, source.length), source, 'after flush', offset);
  });

  it('gives a usable buffer of the requested length from allocateBuffer (when present)', async (test) => {
    const store = await context.open();
    if (store.allocateBuffer === undefined) {
      test.skip('the store has no allocateBuffer');
      return;
    }
    const buffer = store.allocateBuffer(4 * store.blockSize);
    expect(buffer).toBeInstanceOf(Uint8Array);
    expect(buffer.length).toBe(4 * store.blockSize);
    buffer.set(patternBytes(buffer.length, 23));
    const expected = buffer.slice();
    await store.write(buffer, store.blockSize);
    const target = store.allocateBuffer(4 * store.blockSize);
    await store.read(target, store.blockSize);
    assertSameBytes(target, expected, 'allocated buffer round trip', store.blockSize);
  });
}

function defineSparseTests(context: SuiteContext): void {
  const skip = context.capabilities.sparse !== true;
  const why = skip ? ' (skipped: not sparse)' : '';

  it.skipIf(skip)(`reads zeroes from a fresh store${why}`, async () => {
    const store = await context.open();
    const target = await readBytes(store, 0, 16 * store.blockSize);
    expect(isAllZero(target)).toBe(true);
  });

  it.skipIf(skip)(`reads zeroes around and between written blocks${why}`, async () => {
    const store = await context.open();
    const block = store.blockSize;
    const a = await writeBlocks(store, 10, 2, 30);
    const b = await writeBlocks(store, 20, 1, 31);
    const expected = new Uint8Array(40 * block);
    expected.set(a, 10 * block);
    expected.set(b, 20 * block);
    // Blocks 21..39 lie past everything written: a file store reads them past its end.
    assertSameBytes(await readBytes(store, 0, expected.length), expected, 'sparse range', 0);
  });
}

function defineLargeOffsetTests(context: SuiteContext): void {
  const { sizeBytes, capacityBytes } = context.capabilities;
  const limit = Math.min(sizeBytes ?? Number.MAX_SAFE_INTEGER, capacityBytes ?? Number.MAX_SAFE_INTEGER);
  const skip = limit < LARGE_OFFSET_BYTES + 2 * 1024 * 1024;
  const why = skip ? ' (skipped: the store is smaller than 5 GiB)' : '';

  it.skipIf(skip)(`reads back writes beyond 4 GiB and across the 4 GiB boundary${why}`, async () => {
    const store = await context.open();
    const block = store.blockSize;
    // `alias` sits where a store truncating offsets to 32 bits would put `beyond`.
    const aliasOffset = LARGE_OFFSET_BYTES - 4 * GiB;
    const alias = patternBytes(4 * block, 39);
    await store.write(alias, aliasOffset);
    const beyond = patternBytes(4 * block, 40);
    await store.write(beyond, LARGE_OFFSET_BYTES);
    const across = patternBytes(2 * block, 41);
    const acrossOffset = 4 * GiB - block;
    await store.write(across, acrossOffset);
    assertSameBytes(await readBytes(store, LARGE_OFFSET_BYTES, beyond.length), beyond, 'at 5 GiB');
    assertSameBytes(await readBytes(store, acrossOffset, across.length), across, 'across 4 GiB');
    assertSameBytes(await readBytes(store, aliasOffset, alias.length), alias, 'at 1 GiB', aliasOffset);
  });

  it.skipIf(skip || context.capabilities.sparse !== true)(
    `reads zeroes beyond 4 GiB where nothing was written${why}`,
    async () => {
      const store = await context.open();
      await writeBlocks(store, 0, 1, 42);
      expect(isAllZero(await readBytes(store, LARGE_OFFSET_BYTES, 8 * store.blockSize))).toBe(true);
    },
  );
}

function defineConcurrencyTests(context: SuiteContext): void {
  it('keeps concurrent writes to disjoint ranges apart', async () => {
    const store = await context.open();
    const block = store.blockSize;
    // 48 ranges of 1..5 blocks, laid out back to back, issued all at once in a scrambled order.
    const ranges: { offset: number; source: Uint8Array }[] = [];
    let nextBlock = 1;
    for (let index = 0; index < 48; index++) {
      const blocks = 1 + ((index * 7) % 5);
      ranges.push({ offset: nextBlock * block, source: patternBytes(blocks * block, 100 + index) });
      nextBlock += blocks;
    }
    const scrambled = ranges.map((_, index) => (index * 29) % ranges.length);
    await Promise.all(scrambled.map((index) => store.write(ranges[index]!.source, ranges[index]!.offset)));

    const reads = await Promise.all(
      ranges.map((range) => readBytes(store, range.offset, range.source.length)),
    );
    reads.forEach((target, index) => {
      assertSameBytes(target, ranges[index]!.source, `range ${index}`, ranges[index]!.offset);
    });
    const whole = await readBytes(store, block, (nextBlock - 1) * block);
    assertSameBytes(whole, concatBytes(ranges.map((range) => range.source)), 'whole span', block);
  });

  it('serves concurrent reads while other ranges are being written', async () => {
    const store = await context.open();
    const block = store.blockSize;
    const stable = await writeBlocks(store, 0, 32, 150);
    const writes = Array.from({ length: 16 }, (_, index) =>
      store.write(patternBytes(2 * block, 160 + index), (64 + 2 * index) * block),
    );
    const reads = Array.from({ length: 16 }, (_, index) => readBytes(store, 2 * index * block, 2 * block));
    const [, targets] = await Promise.all([Promise.all(writes), Promise.all(reads)]);
    targets.forEach((target, index) => {
      const expected = stable.subarray(2 * index * block, 2 * (index + 1) * block);
      assertSameBytes(target, expected, `stable pair ${index}`, 2 * index * block);
    });
  });
}

function defineWritevTests(context: SuiteContext): void {
  const declared = context.capabilities.writev;

  /** Returns the store's writev, or skips the test (or fails it when writev was declared). */
  function writevOf(store: BackingStore, test: { skip: (note?: string) => void }) {
    if (declared === true) expect(store.writev, 'writev was declared but is missing').toBeTypeOf('function');
    if (store.writev === undefined) test.skip('the store has no writev');
    return store.writev!.bind(store);
  }

  it.skipIf(declared !== false)('has no writev, as declared', async () => {
    const store = await context.open();
    expect(store.writev).toBeUndefined();
  });

  it.skipIf(declared === false)('writes with writev exactly what sequential writes would', async (test) => {
    const viaWritev = await context.open();
    const writev = writevOf(viaWritev, test);
    const sequential = await context.open();
    const block = viaWritev.blockSize;
    const sources = [1, 3, 2, 1, 4].map((blocks, index) => patternBytes(blocks * block, 200 + index));
    const offset = 5 * block;
    await writev(sources, offset);
    let position = offset;
    for (const source of sources) {
      await sequential.write(source, position);
      position += source.length;
    }
    const length = position - offset;
    const fromWritev = await readBytes(viaWritev, offset, length);
    assertSameBytes(fromWritev, await readBytes(sequential, offset, length), 'writev vs write', offset);
    assertSameBytes(fromWritev, concatBytes(sources), 'writev vs sources', offset);
  });

  it.skipIf(declared === false)(
    'handles writev of many buffers, empty ones and an empty list',
    async (test) => {
      const store = await context.open();
      const writev = writevOf(store, test);
      const block = store.blockSize;
      // More buffers than IOV_MAX (1024), so an implementation must split the request.
      const sources = Array.from({ length: 1100 }, (_, index) =>
        index % 100 === 50 ? new Uint8Array(0) : patternBytes(block, 300 + index),
      );
      await writev([], 0);
      await writev(sources, block);
      const expected = concatBytes(sources);
      assertSameBytes(await readBytes(store, block, expected.length), expected, 'many buffers', block);
    },
  );
}

function defineCapacityTests(context: SuiteContext): void {
  const capacity = context.capabilities.capacityBytes;
  const skip = capacity === undefined;
  const why = skip ? ' (skipped: no capacity declared)' : '';

  it.skipIf(skip)(`fails a write crossing the capacity with ENOSPC, changing nothing${why}`, async () => {
    const store = await context.open();
    const block = store.blockSize;
    const lastBlock = Math.floor(capacity! / block) - 1;
    expect(lastBlock, 'capacity must hold at least 4 blocks').toBeGreaterThanOrEqual(3);
    const before = await writeBlocks(store, lastBlock - 2, 3, 400);
    const beforeOffset = (lastBlock - 2) * block;

    // Ends exactly at the last whole block: fits.
    const fits = await writeBlocks(store, lastBlock, 1, 401);
    before.set(fits, 2 * block);
    // Starts inside, ends past the capacity: must fail whole.
    const crossing = patternBytes(4 * block, 402);
    await expectFssError(store.write(crossing, (lastBlock - 1) * block), 'ENOSPC');
    assertSameBytes(await readBytes(store, beforeOffset, 3 * block), before, 'after ENOSPC', beforeOffset);
    // Entirely past the capacity: fails too.
    await expectFssError(store.write(patternBytes(block, 403), capacity! + 8 * block), 'ENOSPC');
  });

  it.skipIf(skip)(`keeps working for writes that fit after an ENOSPC${why}`, async () => {
    const store = await context.open();
    const block = store.blockSize;
    await expectFssError(store.write(patternBytes(2 * block, 410), capacity! - block), 'ENOSPC');
    const source = await writeBlocks(store, 0, 2, 411);
    assertSameBytes(await readBytes(store, 0, source.length), source, 'after ENOSPC', 0);
  });
}

function defineLifecycleTests(context: SuiteContext): void {
  it('fails every operation after close with EBADF', async () => {
    const store = await context.open();
    const block = store.blockSize;
    await writeBlocks(store, 0, 1, 500);
    await store.close();
    await expectFssError(store.read(new Uint8Array(block), 0), 'EBADF');
    await expectFssError(store.write(new Uint8Array(block), 0), 'EBADF');
    await expectFssError(store.flush(), 'EBADF');
    if (store.writev !== undefined) await expectFssError(store.writev([new Uint8Array(block)], 0), 'EBADF');
  });

  it('lets close be called twice', async () => {
    const store = await context.open();
    await store.close();
    await expect(store.close()).resolves.toBeUndefined();
  });

  it('completes writes already in flight when close is called', async () => {
    const store = await context.open();
    const block = store.blockSize;
    // Issue the writes without awaiting them, then close: a store that closes its file
    // under them would fail them with EBADF, losing data the caller was told is being written.
    const writes = Array.from({ length: 8 }, (_, index) =>
      store.write(patternBytes(4 * block, 510 + index), index * 4 * block),
    );
    const closing = store.close();
    const outcomes = await Promise.allSettled(writes);
    await closing;
    expect(outcomes.map((outcome) => outcome.status)).toEqual(Array(8).fill('fulfilled'));
  });
}

function defineErrorTests(context: SuiteContext): void {
  it('rejects offsets that are not byte offsets with EINVAL (an FssError)', async () => {
    const store = await context.open();
    const block = new Uint8Array(store.blockSize);
    for (const offset of [-store.blockSize, 1.5, Number.NaN]) {
      const readError = await expectFssError(store.read(block, offset), 'EINVAL');
      expect(readError.name).toBe('FssError');
      await expectFssError(store.write(block, offset), 'EINVAL');
    }
    // Past 2^53 a number is no longer an exact byte offset. A read must say so; a write may
    // also be refused as beyond the store's capacity, which is checked first by some stores.
    await expectFssError(store.read(block, 2 ** 53), 'EINVAL');
    const writeError = await store.write(block, 2 ** 53).then(
      () => undefined,
      (reason: unknown) => reason,
    );
    expect(writeError).toBeInstanceOf(FssError);
    expect(['EINVAL', 'ENOSPC']).toContain((writeError as FssError).code);
  });
}
