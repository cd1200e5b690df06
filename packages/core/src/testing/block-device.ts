/**
 * The conformance suite every BlockDevice runs: the in-memory device, the fault-injecting
 * wrapper, Linux devices and images, the engine's Origin and Snapshot. It is the `BlockDevice`
 * contract of device.ts written as tests, in the style of the BackingStore suite beside it.
 *
 * One function, `testBlockDevice(name, factory, capabilities, additionalTests)`, registers a
 * vitest `describe` block. Every case opens a fresh device from `factory`; after the case the
 * suite closes it (and any device a case reopened) and runs the fixture's cleanup, whatever
 * the outcome.
 *
 * What every device must do: answer the bounds rules (read: EINVAL past the end, 0 bytes at
 * it, truncated across it; write: ENOSPC across it, nothing written; EINVAL for offsets that
 * are not byte offsets), read whole sectors at any memory address, serve concurrent requests,
 * flush, and fail with EBADF once closed. What a device may or may not do is declared in
 * `capabilities`, so the cases that need it are skipped with the reason in their name
 * (`it.skipIf`):
 *
 *   readOnly    declared, default false. Writable devices run the write cases; read-only
 *               ones the EROFS cases, and their reads are checked against the fixture's
 *               `contents` (what the device must read back: a snapshot's origin at the
 *               moment it was taken).
 *   unaligned   declared, default false: the device accepts any byte offset and length (not
 *               only whole sectors), and the unaligned cases run.
 *   reopen      declared, default false: the fixture can open its storage again, and the
 *               persistence cases run (flushed data survives close and reopen).
 *   writeZeroes, discard, allocateBuffer, preferredIoSize
 *               detected on the opened device, as the BackingStore suite detects writev:
 *               absent, the case is skipped ("when present"); declaring true turns that skip
 *               into a failure, declaring false requires the capability to be absent.
 *
 * A case a device is known to fail (a bug being fixed elsewhere) is declared in
 * `expectedFailures` with the reason, and runs as `it.fails`: it must keep failing, so a fix
 * shows at once, and an entry that names no case fails too.
 *
 * Layout. Cases address the device in sectors (`logicalSectorSize`) from the start and in
 * sectors back from the end; the device must hold at least DEVICE_BYTES_MIN bytes and
 * DEVICE_SECTORS_MIN sectors (checked by the first case). Data is seeded noise, different for
 * every write, and reads start from noise too, so a misdirected write, a torn write or a read
 * that leaves bytes untouched shows as a byte mismatch at a named device offset.
 */
import { type BlockDevice, type ErrnoCode, isPowerOfTwo } from '@fss/core';
import { afterEach, describe, expect, it } from 'vitest';
import { assertSameBytes, isAllZero, patternBytes } from './bytes';
import { expectFssError } from './errors';

/** What a factory returns: a device, optionally with what it holds, a way to reopen it, a cleanup. */
export interface BlockDeviceFixture {
  device: BlockDevice;
  /**
   * All of the device's bytes when handed over (length = `device.size`). Required for a
   * read-only device: its reads are checked against it. Ignored for writable ones, whose cases
   * write what they read.
   */
  contents?: Uint8Array;
  /**
   * Opens the same storage again after the suite closed `device` (declare `reopen: true`).
   * The suite closes what it returns.
   */
  reopen?: () => Promise<BlockDevice>;
  /** Runs after the device (and any reopened one) was closed, e.g. removes a temporary file. */
  cleanup?: () => void | Promise<void>;
}

/** Makes a fresh device for one test case. */
export type BlockDeviceFactory = () =>
  | BlockDevice
  | BlockDeviceFixture
  | Promise<BlockDevice | BlockDeviceFixture>;

export interface BlockDeviceCapabilities {
  /** The device is read-only (`readOnly` true, every write EROFS). Default false. */
  readOnly?: boolean;
  /** Reads and writes at any byte offset and length work. Default false: whole sectors only. */
  unaligned?: boolean;
  /** The fixture has `reopen`, and flushed data must survive close and reopen. Default false. */
  reopen?: boolean;
  /** true: the device must have writeZeroes; false: it must not. Default: test it when present. */
  writeZeroes?: boolean;
  /** true: the device must have discard; false: it must not. Default: test it when present. */
  discard?: boolean;
  /** true: the device must have allocateBuffer; false: it must not. Default: test it when present. */
  allocateBuffer?: boolean;
  /** true: the device must declare preferredIoSize; false: it must not. Default: test it when present. */
  preferredIoSize?: boolean;
  /**
   * The errno of a read after close. Default EBADF, the BlockDevice contract. A Snapshot
   * declares ENXIO: it answers as an unconfigured NetBSD fss unit does (fss_strategy).
   */
  readAfterCloseCode?: ErrnoCode;
  /**
   * Cases this device is known to fail, by the start of their name, each with the reason
   * (a bug being fixed elsewhere). They run as `it.fails`: they must still fail, so the day
   * the bug is fixed the case fails until its entry is removed. Default: none.
   */
  expectedFailures?: Readonly<Record<string, string>>;
}

/** Handed to `additionalTests`, so a device's own cases open devices the same way. */
export interface BlockDeviceTestContext {
  readonly capabilities: Readonly<BlockDeviceCapabilities>;
  /** Opens a fresh device from the factory; it is closed and cleaned up after the test. */
  open(): Promise<BlockDevice>;
  /** The same, with the rest of the fixture (contents, reopen). */
  openFixture(): Promise<BlockDeviceFixture>;
}

/** The smallest device the suite runs on, in bytes and in sectors. */
export const DEVICE_BYTES_MIN = 1024 * 1024;
export const DEVICE_SECTORS_MIN = 256;
/** What the large cases move: more than a 1 MiB bounce or zero buffer, not a multiple of it. */
const LARGE_BYTES = 2 * 1024 * 1024;
/** NBD's limit on a minimum block size, and the largest sector any Linux device has. */
const SECTOR_BYTES_MAX = 65536;

type OptionalCapability = 'writeZeroes' | 'discard' | 'allocateBuffer' | 'preferredIoSize';

interface SuiteContext extends BlockDeviceTestContext {
  /** The expectedFailures entries that named a registered case. */
  readonly matchedFailures: Set<string>;
  releaseAll(): Promise<void>;
  /** Registers a device a case opened itself (a reopen), to be closed after the case. */
  adopt(device: BlockDevice): void;
}

/**
 * Registers the conformance suite for one BlockDevice implementation.
 *
 * @param name            What the `describe` block is called, e.g. "LinuxBlockDevice (image)".
 * @param factory         Makes a fresh device for each case.
 * @param capabilities    What the device can and cannot do; see BlockDeviceCapabilities.
 * @param additionalTests Registers the device's own cases inside the same describe block.
 */
export function testBlockDevice(
  name: string,
  factory: BlockDeviceFactory,
  capabilities: BlockDeviceCapabilities = {},
  additionalTests?: (context: BlockDeviceTestContext) => void,
): void {
  describe(`BlockDevice conformance: ${name}`, () => {
    const context = createContext(factory, capabilities);
    afterEach(async () => {
      await context.releaseAll();
    });
    defineGeometryTests(context);
    defineReadTests(context);
    defineWriteTests(context);
    defineReadOnlyTests(context);
    defineWriteZeroesTests(context);
    defineDiscardTests(context);
    defineAllocateBufferTests(context);
    defineLifecycleTests(context);
    for (const start of Object.keys(capabilities.expectedFailures ?? {})) {
      it(`names a case in expectedFailures: "${start}"`, () => {
        expect(context.matchedFailures.has(start), `no case starts with "${start}"`).toBe(true);
      });
    }
    additionalTests?.(context);
  });
}

function createContext(factory: BlockDeviceFactory, capabilities: BlockDeviceCapabilities): SuiteContext {
  const fixtures: BlockDeviceFixture[] = [];
  const adopted: BlockDevice[] = [];
  const openFixture = async (): Promise<BlockDeviceFixture> => {
    const made = await factory();
    // A BlockDevice has `read`; a fixture does not (an Origin has a `device`, so look for `read`).
    const fixture: BlockDeviceFixture =
      typeof (made as BlockDevice).read === 'function'
        ? { device: made as BlockDevice }
        : (made as BlockDeviceFixture);
    fixtures.push(fixture);
    return fixture;
  };
  return {
    capabilities,
    matchedFailures: new Set(),
    openFixture,
    async open() {
      return (await openFixture()).device;
    },
    adopt(device) {
      adopted.push(device);
    },
    // Close every device before any cleanup (an image must be closed before its directory
    // goes), and release everything even when one step fails; report the first failure.
    async releaseAll() {
      const pending = fixtures.splice(0);
      const devices = [...pending.map((fixture) => fixture.device), ...adopted.splice(0)];
      const failures: unknown[] = [];
      for (const device of devices) {
        try {
          await device.close();
        } catch (error) {
          failures.push(error);
        }
      }
      for (const fixture of pending) {
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

// --- Helpers ---

/** A fresh fixture and the little every case needs from it. */
interface Opened {
  device: BlockDevice;
  fixture: BlockDeviceFixture;
  /** The sector size, the suite's unit. */
  sector: number;
}

async function openDevice(context: SuiteContext): Promise<Opened> {
  const fixture = await context.openFixture();
  return { device: fixture.device, fixture, sector: fixture.device.logicalSectorSize };
}

/** Reads `length` bytes at `offset` into a fresh buffer and expects all of them to arrive. */
async function readBytes(device: BlockDevice, offset: number, length: number): Promise<Uint8Array> {
  // Start from noise, not zeroes, so a read that leaves bytes untouched is caught.
  const target = patternBytes(length, 0x5eed ^ offset);
  expect(await device.read(target, offset), `bytes read at ${offset}`).toBe(length);
  return target;
}

/**
 * Bytes the device holds at `[offset, offset + length)` that a case can check reads against:
 * a writable device is written with fresh noise first; a read-only one answers from the
 * fixture's `contents`.
 */
async function knownBytes(opened: Opened, offset: number, length: number, seed: number): Promise<Uint8Array> {
  if (!opened.device.readOnly) {
    const source = patternBytes(length, seed);
    await opened.device.write(source, offset);
    return source;
  }
  const { contents } = opened.fixture;
  expect(contents, 'a read-only device’s fixture must give its contents').toBeInstanceOf(Uint8Array);
  expect(contents!.length, 'contents must be as long as the device').toBe(opened.device.size);
  return contents!.slice(offset, offset + length);
}

/**
 * Returns the device's optional method `name`, bound, or skips the case when it is absent
 * (and fails it when the capability was declared).
 */
function capabilityOf<Name extends 'writeZeroes' | 'discard' | 'allocateBuffer'>(
  context: SuiteContext,
  device: BlockDevice,
  name: Name,
  test: { skip: (note?: string) => void },
): NonNullable<BlockDevice[Name]> {
  if (context.capabilities[name] === true) {
    expect(device[name], `${name} was declared but is missing`).toBeTypeOf('function');
  }
  if (device[name] === undefined) test.skip(`the device has no ${name}`);
  const method = device[name] as (...args: never[]) => unknown;
  return method.bind(device) as NonNullable<BlockDevice[Name]>;
}

/**
 * Registers one case: skipped when `skip` (its name says why), run as `it.fails` when the
 * device declares it an expected failure (its name then says that, and why), else run.
 */
function defineCase(
  context: SuiteContext,
  skip: boolean,
  name: string,
  body: (test: { skip: (note?: string) => void }) => Promise<void>,
): void {
  const expected = Object.entries(context.capabilities.expectedFailures ?? {}).find(([start]) =>
    name.startsWith(start),
  );
  if (expected !== undefined) context.matchedFailures.add(expected[0]);
  if (expected !== undefined && !skip) {
    it.fails(`${name} (expected to fail: ${expected[1]})`, body);
    return;
  }
  it.skipIf(skip)(name, body);
}

/** The skip note of a case that needs a writable device, and whether to skip. */
function needsWritable(context: SuiteContext): [skip: boolean, why: string] {
  const skip = context.capabilities.readOnly === true;
  return [skip, skip ? ' (skipped: read-only device)' : ''];
}

function needsUnaligned(context: SuiteContext): [skip: boolean, why: string] {
  const skip = context.capabilities.unaligned !== true;
  return [skip, skip ? ' (skipped: whole sectors only)' : ''];
}

/** The number of sectors in the large cases: LARGE_BYTES plus 3 sectors, or half the device. */
function largeSectors(device: BlockDevice, sector: number): number {
  const wanted = LARGE_BYTES / sector + 3;
  return Math.min(wanted, Math.floor(device.size / sector / 2));
}

// --- Cases ---

function defineGeometryTests(context: SuiteContext): void {
  defineCase(
    context,
    false,
    'reports a safe-integer size, a power-of-two sector size and readOnly as declared',
    async () => {
      const { device, sector } = await openDevice(context);
      expect(Number.isSafeInteger(device.size)).toBe(true);
      expect(device.size).toBeGreaterThanOrEqual(DEVICE_BYTES_MIN);
      expect(device.size / sector).toBeGreaterThanOrEqual(DEVICE_SECTORS_MIN);
      expect(isPowerOfTwo(sector)).toBe(true);
      expect(sector).toBeGreaterThanOrEqual(512);
      expect(sector).toBeLessThanOrEqual(SECTOR_BYTES_MAX);
      expect(device.readOnly).toBe(context.capabilities.readOnly === true);
      // Whole-sector devices end on a sector boundary: their last sector can be written whole.
      if (context.capabilities.unaligned !== true) expect(device.size % sector).toBe(0);
    },
  );

  const declared = context.capabilities.preferredIoSize;
  const note = declared === false ? ' (skipped: declared without preferredIoSize)' : ' (when present)';
  defineCase(context, declared === false, `declares a power-of-two preferredIoSize${note}`, async (test) => {
    const { device } = await openDevice(context);
    if (declared === true) expect(device.preferredIoSize, 'preferredIoSize was declared').toBeDefined();
    if (device.preferredIoSize === undefined) test.skip('the device has no preferredIoSize');
    expect(Number.isSafeInteger(device.preferredIoSize)).toBe(true);
    expect(isPowerOfTwo(device.preferredIoSize!)).toBe(true);
  });

  for (const name of [
    'writeZeroes',
    'discard',
    'allocateBuffer',
    'preferredIoSize',
  ] as OptionalCapability[]) {
    const skip = context.capabilities[name] !== false;
    const why = skip ? ` (skipped: not declared absent)` : '';
    defineCase(context, skip, `has no ${name}, as declared${why}`, async () => {
      const { device } = await openDevice(context);
      expect(device[name]).toBeUndefined();
    });
  }
}

function defineReadTests(context: SuiteContext): void {
  defineCase(context, false, 'reads whole sectors at sector offsets, singly and in runs', async () => {
    const opened = await openDevice(context);
    const { device, sector } = opened;
    const one = await knownBytes(opened, 0, sector, 1);
    const three = await knownBytes(opened, 5 * sector, 3 * sector, 2);
    assertSameBytes(await readBytes(device, 0, sector), one, 'sector 0', 0);
    assertSameBytes(await readBytes(device, 5 * sector, 3 * sector), three, 'sectors 5..7', 5 * sector);
    for (const index of [0, 1, 2]) {
      const at = (5 + index) * sector;
      const expected = three.subarray(index * sector, (index + 1) * sector);
      assertSameBytes(await readBytes(device, at, sector), expected, `sector ${5 + index}`, at);
    }
  });

  defineCase(context, false, 'reads a run larger than any bounce buffer, whole and in pieces', async () => {
    const opened = await openDevice(context);
    const { device, sector } = opened;
    const sectors = largeSectors(device, sector);
    const start = 16 * sector;
    const run = await knownBytes(opened, start, sectors * sector, 3);
    assertSameBytes(await readBytes(device, start, run.length), run, 'large run', start);
    for (const index of [0, 1, Math.floor(sectors / 2), sectors - 1]) {
      const at = start + index * sector;
      const expected = run.subarray(index * sector, (index + 1) * sector);
      assertSameBytes(await readBytes(device, at, sector), expected, `run sector ${index}`, at);
    }
  });

  defineCase(
    context,
    false,
    'reads 0 bytes at the end, EINVAL beyond it, and truncates a read crossing it',
    async () => {
      const opened = await openDevice(context);
      const { device, sector } = opened;
      const tailStart = device.size - 2 * sector;
      const tail = await knownBytes(opened, tailStart, 2 * sector, 4);
      const crossing = patternBytes(4 * sector, 5);
      expect(await device.read(crossing, tailStart)).toBe(2 * sector);
      assertSameBytes(crossing.subarray(0, 2 * sector), tail, 'read across the end', tailStart);
      expect(await device.read(new Uint8Array(sector), device.size)).toBe(0);
      expect(await device.read(new Uint8Array(0), device.size)).toBe(0);
      await expectFssError(() => device.read(new Uint8Array(sector), device.size + sector), 'EINVAL');
      await expectFssError(() => device.read(new Uint8Array(1), device.size + 1), 'EINVAL');
    },
  );

  defineCase(context, false, 'reads into a view at any memory address, touching only the view', async () => {
    const opened = await openDevice(context);
    const { device, sector } = opened;
    const expected = await knownBytes(opened, 16 * sector, 4 * sector, 6);
    const backing = new Uint8Array(6 * sector + 3).fill(0xaa);
    // One byte in: not aligned to anything, so an O_DIRECT device must bounce.
    const view = backing.subarray(sector + 1, 5 * sector + 1);
    expect(await device.read(view, 16 * sector)).toBe(4 * sector);
    assertSameBytes(view, expected, 'misaligned view', 16 * sector);
    expect(backing.subarray(0, sector + 1).every((byte) => byte === 0xaa)).toBe(true);
    expect(backing.subarray(5 * sector + 1).every((byte) => byte === 0xaa)).toBe(true);
  });

  defineCase(
    context,
    false,
    'rejects offsets that are not byte offsets with EINVAL (an FssError)',
    async () => {
      const { device, sector } = await openDevice(context);
      const target = new Uint8Array(sector);
      for (const offset of [-sector, 1.5, Number.NaN, 2 ** 53]) {
        const error = await expectFssError(() => device.read(target, offset), 'EINVAL');
        expect(error.name).toBe('FssError');
        if (!device.readOnly) await expectFssError(() => device.write(target, offset), ['EINVAL', 'ENOSPC']);
      }
      if (!device.readOnly) await expectFssError(() => device.write(target, -sector), 'EINVAL');
    },
  );

  const [skipUnaligned, whyUnaligned] = needsUnaligned(context);
  defineCase(context, skipUnaligned, `reads at unaligned offsets and lengths${whyUnaligned}`, async () => {
    const opened = await openDevice(context);
    const { device, sector } = opened;
    const base = 32 * sector;
    const region = await knownBytes(opened, base, 8 * sector, 7);
    for (const [at, length] of [
      [1, 1],
      [100, sector],
      [sector - 3, 7],
      [5, 8 * sector - 10],
      [3 * sector + 1, 2 * sector - 1],
    ] as const) {
      const expected = region.subarray(at, at + length);
      assertSameBytes(await readBytes(device, base + at, length), expected, `read at +${at}`, base + at);
    }
  });

  defineCase(context, false, 'serves many concurrent reads, each with its own bytes', async () => {
    const opened = await openDevice(context);
    const { device, sector } = opened;
    const base = 64 * sector;
    const region = await knownBytes(opened, base, 32 * sector, 8);
    const order = Array.from({ length: 32 }, (_, index) => (index * 13) % 32);
    const reads = await Promise.all(order.map((index) => readBytes(device, base + index * sector, sector)));
    reads.forEach((target, position) => {
      const index = order[position]!;
      const expected = region.subarray(index * sector, (index + 1) * sector);
      assertSameBytes(target, expected, `concurrent read of sector ${index}`, base + index * sector);
    });
  });

  defineCase(context, false, 'flushes, and reads return the same bytes after a flush', async () => {
    const opened = await openDevice(context);
    const { device, sector } = opened;
    await device.flush();
    const region = await knownBytes(opened, 8 * sector, 16 * sector, 9);
    await device.flush();
    assertSameBytes(await readBytes(device, 8 * sector, region.length), region, 'after flush', 8 * sector);
  });
}

function defineWriteTests(context: SuiteContext): void {
  const [skip, why] = needsWritable(context);
  const [skipUnaligned, whyUnaligned] = needsUnaligned(context);

  defineCase(
    context,
    skip,
    `fails a write crossing the end with ENOSPC and writes nothing${why}`,
    async () => {
      const { device, sector } = await openDevice(context);
      const tailStart = device.size - 4 * sector;
      const model = patternBytes(4 * sector, 20);
      await device.write(model, tailStart);
      await expectFssError(
        () => device.write(patternBytes(4 * sector, 21), device.size - 2 * sector),
        'ENOSPC',
      );
      await expectFssError(() => device.write(patternBytes(sector, 22), device.size), 'ENOSPC');
      await expectFssError(() => device.write(patternBytes(sector, 23), device.size + 8 * sector), 'ENOSPC');
      assertSameBytes(await readBytes(device, tailStart, model.length), model, 'after ENOSPC', tailStart);
      // Ending exactly at the end fits, and so does an empty write there.
      const last = patternBytes(sector, 24);
      await device.write(last, device.size - sector);
      await device.write(new Uint8Array(0), device.size);
      model.set(last, 3 * sector);
      assertSameBytes(await readBytes(device, tailStart, model.length), model, 'last sector', tailStart);
    },
  );

  defineCase(context, skip, `returns the newest bytes after overlapping overwrites${why}`, async () => {
    const { device, sector } = await openDevice(context);
    const model = new Uint8Array(8 * sector);
    for (const [first, count, seed] of [
      [0, 8, 30],
      [2, 3, 31],
      [4, 3, 32],
      [0, 1, 33],
      [7, 1, 34],
    ] as const) {
      const source = patternBytes(count * sector, seed);
      await device.write(source, first * sector);
      model.set(source, first * sector);
    }
    assertSameBytes(await readBytes(device, 0, model.length), model, 'after overwrites', 0);
  });

  defineCase(
    context,
    skip,
    `writes from a view at any memory address, only the view's bytes${why}`,
    async () => {
      const { device, sector } = await openDevice(context);
      const backing = patternBytes(6 * sector + 3, 40);
      const view = backing.subarray(sector + 1, 5 * sector + 1);
      await device.write(view, 16 * sector);
      assertSameBytes(
        await readBytes(device, 16 * sector, view.length),
        view,
        'misaligned source',
        16 * sector,
      );
    },
  );

  defineCase(context, skip, `writes a run larger than any bounce buffer${why}`, async () => {
    const { device, sector } = await openDevice(context);
    const sectors = largeSectors(device, sector);
    const before = patternBytes(sector, 41);
    const after = patternBytes(sector, 42);
    await device.write(before, 15 * sector);
    await device.write(after, (16 + sectors) * sector);
    const run = patternBytes(sectors * sector, 43);
    await device.write(run, 16 * sector);
    assertSameBytes(await readBytes(device, 16 * sector, run.length), run, 'large run', 16 * sector);
    assertSameBytes(await readBytes(device, 15 * sector, sector), before, 'sector before', 15 * sector);
    const afterAt = (16 + sectors) * sector;
    assertSameBytes(await readBytes(device, afterAt, sector), after, 'sector after', afterAt);
  });

  defineCase(
    context,
    skip || skipUnaligned,
    `writes at unaligned offsets and lengths, keeping the bytes around them${why || whyUnaligned}`,
    async () => {
      const { device, sector } = await openDevice(context);
      const base = 128 * sector;
      const model = patternBytes(16 * sector, 50);
      await device.write(model, base);
      for (const [at, length, seed] of [
        [1, 1, 51],
        [sector + 100, 700, 52],
        [4 * sector - 3, 3 * sector + 7, 53],
        [16 * sector - 1, 1, 54],
        [9 * sector + 5, sector - 10, 55],
      ] as const) {
        const source = patternBytes(length, seed);
        await device.write(source, base + at);
        model.set(source, at);
      }
      assertSameBytes(await readBytes(device, base, model.length), model, 'unaligned writes', base);
    },
  );

  defineCase(context, skip, `keeps concurrent writes to disjoint ranges apart${why}`, async () => {
    const { device, sector } = await openDevice(context);
    // 48 ranges of 1..5 sectors, back to back, issued all at once in a scrambled order.
    const ranges: { offset: number; source: Uint8Array }[] = [];
    let next = 1;
    for (let index = 0; index < 48; index++) {
      const sectors = 1 + ((index * 7) % 5);
      ranges.push({ offset: next * sector, source: patternBytes(sectors * sector, 100 + index) });
      next += sectors;
    }
    const scrambled = ranges.map((_, index) => (index * 29) % ranges.length);
    await Promise.all(scrambled.map((index) => device.write(ranges[index]!.source, ranges[index]!.offset)));
    const reads = await Promise.all(
      ranges.map((range) => readBytes(device, range.offset, range.source.length)),
    );
    reads.forEach((target, index) => {
      assertSameBytes(target, ranges[index]!.source, `range ${index}`, ranges[index]!.offset);
    });
  });

  defineCase(
    context,
    skip || skipUnaligned,
    `keeps concurrent unaligned writes that share sectors apart${why || whyUnaligned}`,
    async () => {
      const { device, sector } = await openDevice(context);
      const base = 8 * sector;
      const model = patternBytes(8 * sector, 150);
      await device.write(model, base);
      // 64 writes of 1..97 bytes packed back to back, so neighbours share a sector: a device
      // whose read-modify-write is not locked loses some of them.
      const writes: Promise<void>[] = [];
      let at = 3;
      for (let index = 0; index < 64; index++) {
        const source = patternBytes(1 + ((index * 37) % 97), 160 + index);
        writes.push(device.write(source, base + at));
        model.set(source, at);
        at += source.length;
      }
      await Promise.all(writes);
      assertSameBytes(await readBytes(device, base, model.length), model, 'shared sectors', base);
    },
  );

  defineCase(context, skip, `serves reads while other ranges are being written${why}`, async () => {
    const { device, sector } = await openDevice(context);
    const stable = patternBytes(32 * sector, 200);
    await device.write(stable, 0);
    const writes = Array.from({ length: 16 }, (_, index) =>
      device.write(patternBytes(2 * sector, 210 + index), (64 + 2 * index) * sector),
    );
    const reads = Array.from({ length: 16 }, (_, index) => readBytes(device, 2 * index * sector, 2 * sector));
    const [, targets] = await Promise.all([Promise.all(writes), Promise.all(reads)]);
    targets.forEach((target, index) => {
      const expected = stable.subarray(2 * index * sector, 2 * (index + 1) * sector);
      assertSameBytes(target, expected, `stable pair ${index}`, 2 * index * sector);
    });
  });

  defineCase(context, skip, `flushes while writes are in flight, and every write lands${why}`, async () => {
    const { device, sector } = await openDevice(context);
    const sources = Array.from({ length: 8 }, (_, index) => patternBytes(4 * sector, 250 + index));
    await Promise.all([
      ...sources.map((source, index) => device.write(source, index * 4 * sector)),
      device.flush(),
    ]);
    await device.flush();
    for (const [index, source] of sources.entries()) {
      const at = index * 4 * sector;
      assertSameBytes(await readBytes(device, at, source.length), source, `write ${index}`, at);
    }
  });

  const skipReopen = skip || context.capabilities.reopen !== true;
  const whyReopen = why || (skipReopen ? ' (skipped: the fixture cannot reopen its storage)' : '');
  defineCase(context, skipReopen, `keeps flushed data through close and reopen${whyReopen}`, async () => {
    const { device, fixture, sector } = await openDevice(context);
    const places = [0, 37 * sector, device.size - 3 * sector];
    const sources = places.map((_, index) => patternBytes(3 * sector, 300 + index));
    for (const [index, at] of places.entries()) await device.write(sources[index]!, at);
    await device.flush();
    await device.close();
    expect(fixture.reopen, 'reopen was declared but the fixture has none').toBeTypeOf('function');
    const again = await fixture.reopen!();
    context.adopt(again);
    for (const [index, at] of places.entries()) {
      assertSameBytes(await readBytes(again, at, 3 * sector), sources[index]!, `after reopen ${index}`, at);
    }
  });

  defineCase(context, skip, `completes writes already in flight when close is called${why}`, async () => {
    const { device, fixture, sector } = await openDevice(context);
    // Issue the writes without awaiting them, then close: a device that closes under them
    // fails them, losing data the caller was told is being written.
    const sources = Array.from({ length: 8 }, (_, index) => patternBytes(4 * sector, 310 + index));
    const writes = sources.map((source, index) => device.write(source, index * 4 * sector));
    const closing = device.close();
    const outcomes = await Promise.allSettled(writes);
    await closing;
    expect(outcomes.map((outcome) => outcome.status)).toEqual(Array(8).fill('fulfilled'));
    if (context.capabilities.reopen !== true) return;
    const again = await fixture.reopen!();
    context.adopt(again);
    for (const [index, source] of sources.entries()) {
      const at = index * 4 * sector;
      assertSameBytes(await readBytes(again, at, source.length), source, `write ${index} after reopen`, at);
    }
  });
}

function defineReadOnlyTests(context: SuiteContext): void {
  const skip = context.capabilities.readOnly !== true;
  const why = skip ? ' (skipped: writable device)' : '';

  defineCase(
    context,
    skip,
    `refuses write, writeZeroes and discard with EROFS, changing nothing${why}`,
    async () => {
      const opened = await openDevice(context);
      const { device, sector } = opened;
      const before = await knownBytes(opened, 0, 8 * sector, 0);
      await expectFssError(() => device.write(patternBytes(sector, 400), 0), 'EROFS');
      await expectFssError(() => device.write(patternBytes(4 * sector, 401), 2 * sector), 'EROFS');
      const { writeZeroes, discard } = device;
      if (writeZeroes !== undefined)
        await expectFssError(() => writeZeroes.call(device, 0, 4 * sector), 'EROFS');
      if (discard !== undefined) await expectFssError(() => discard.call(device, 0, 4 * sector), 'EROFS');
      assertSameBytes(await readBytes(device, 0, before.length), before, 'after EROFS', 0);
    },
  );

  defineCase(context, skip, `reads back its contents whole${why}`, async () => {
    const opened = await openDevice(context);
    const { device } = opened;
    const expected = await knownBytes(opened, 0, device.size, 0);
    assertSameBytes(await readBytes(device, 0, device.size), expected, 'whole device', 0);
  });
}

function defineWriteZeroesTests(context: SuiteContext): void {
  const [skipWritable, why] = needsWritable(context);
  const skip = skipWritable || context.capabilities.writeZeroes === false;
  const note = why || (skip ? ' (skipped: declared without writeZeroes)' : ' (when present)');
  const [skipUnaligned, whyUnaligned] = needsUnaligned(context);

  defineCase(
    context,
    skip,
    `writeZeroes reads back zeroes and leaves neighbours intact${note}`,
    async (test) => {
      const { device, sector } = await openDevice(context);
      const writeZeroes = capabilityOf(context, device, 'writeZeroes', test);
      const base = 32 * sector;
      const model = patternBytes(16 * sector, 500);
      await device.write(model, base);
      await writeZeroes(base + 4 * sector, 4 * sector);
      model.fill(0, 4 * sector, 8 * sector);
      await writeZeroes(base + 12 * sector, 0);
      const back = await readBytes(device, base, model.length);
      expect(isAllZero(back.subarray(4 * sector, 8 * sector))).toBe(true);
      assertSameBytes(back, model, 'around the zeroes', base);
    },
  );

  defineCase(context, skip, `writeZeroes over a range larger than any zero buffer${note}`, async (test) => {
    const { device, sector } = await openDevice(context);
    const writeZeroes = capabilityOf(context, device, 'writeZeroes', test);
    const sectors = largeSectors(device, sector);
    const model = patternBytes((sectors + 2) * sector, 510);
    await device.write(model, 15 * sector);
    await writeZeroes(16 * sector, sectors * sector);
    model.fill(0, sector, (sectors + 1) * sector);
    assertSameBytes(await readBytes(device, 15 * sector, model.length), model, 'large zeroes', 15 * sector);
  });

  defineCase(
    context,
    skip || skipUnaligned,
    `writeZeroes at unaligned offsets and lengths${why || whyUnaligned || note}`,
    async (test) => {
      const { device, sector } = await openDevice(context);
      const writeZeroes = capabilityOf(context, device, 'writeZeroes', test);
      const base = 64 * sector;
      const model = patternBytes(16 * sector, 520);
      await device.write(model, base);
      for (const [at, length] of [
        [sector + 77, 1000],
        [5 * sector - 3, 2 * sector + 6],
        [9 * sector + 1, 1],
        [12 * sector + 100, 3 * sector],
      ] as const) {
        await writeZeroes(base + at, length);
        model.fill(0, at, at + length);
      }
      assertSameBytes(await readBytes(device, base, model.length), model, 'unaligned zeroes', base);
    },
  );

  defineCase(
    context,
    skip,
    `writeZeroes crossing the end is ENOSPC and zeroes nothing${note}`,
    async (test) => {
      const { device, sector } = await openDevice(context);
      const writeZeroes = capabilityOf(context, device, 'writeZeroes', test);
      const tailStart = device.size - 4 * sector;
      const model = patternBytes(4 * sector, 530);
      await device.write(model, tailStart);
      await expectFssError(() => writeZeroes(device.size - 2 * sector, 4 * sector), 'ENOSPC');
      await expectFssError(() => writeZeroes(device.size + sector, sector), 'ENOSPC');
      assertSameBytes(await readBytes(device, tailStart, model.length), model, 'after ENOSPC', tailStart);
    },
  );

  defineCase(context, skip, `runs many writeZeroes at once, each on its own range${note}`, async (test) => {
    const { device, sector } = await openDevice(context);
    const writeZeroes = capabilityOf(context, device, 'writeZeroes', test);
    const base = 16 * sector;
    const model = patternBytes(64 * sector, 540);
    await device.write(model, base);
    // 16 at once, unaligned where the device takes it: more than a device's bounce buffers,
    // so a fallback that holds one while waiting for another deadlocks here.
    const shift = context.capabilities.unaligned === true ? 5 : 0;
    const ranges = Array.from(
      { length: 16 },
      (_, index) => [index * 4 * sector + shift, 2 * sector] as const,
    );
    await Promise.all(ranges.map(([at, length]) => writeZeroes(base + at, length)));
    for (const [at, length] of ranges) model.fill(0, at, at + length);
    assertSameBytes(await readBytes(device, base, model.length), model, 'concurrent zeroes', base);
  });
}

function defineDiscardTests(context: SuiteContext): void {
  const [skipWritable, why] = needsWritable(context);
  const skip = skipWritable || context.capabilities.discard === false;
  const note = why || (skip ? ' (skipped: declared without discard)' : ' (when present)');
  const [skipUnaligned, whyUnaligned] = needsUnaligned(context);

  defineCase(
    context,
    skip,
    `discard leaves the device usable: the range reads, neighbours keep their bytes${note}`,
    async (test) => {
      const { device, sector } = await openDevice(context);
      const discard = capabilityOf(context, device, 'discard', test);
      const base = 32 * sector;
      const model = patternBytes(16 * sector, 600);
      await device.write(model, base);
      await discard(base + 4 * sector, 4 * sector);
      await discard(base + 12 * sector, 0);
      // The discarded range reads (its bytes are unspecified); everything else is unchanged.
      const back = await readBytes(device, base, model.length);
      assertSameBytes(back.subarray(0, 4 * sector), model.subarray(0, 4 * sector), 'before the range', base);
      const afterAt = base + 8 * sector;
      assertSameBytes(back.subarray(8 * sector), model.subarray(8 * sector), 'after the range', afterAt);
      // And the range takes new data.
      const fresh = patternBytes(4 * sector, 601);
      await device.write(fresh, base + 4 * sector);
      assertSameBytes(await readBytes(device, base + 4 * sector, fresh.length), fresh, 'rewritten', base);
    },
  );

  defineCase(
    context,
    skip || skipUnaligned,
    `discard of an unaligned range keeps every byte outside it${why || whyUnaligned || note}`,
    async (test) => {
      const { device, sector } = await openDevice(context);
      const discard = capabilityOf(context, device, 'discard', test);
      const base = 64 * sector;
      const model = patternBytes(8 * sector, 610);
      await device.write(model, base);
      const [at, length] = [sector + 100, 3 * sector - 50];
      await discard(base + at, length);
      const back = await readBytes(device, base, model.length);
      assertSameBytes(back.subarray(0, at), model.subarray(0, at), 'before the range', base);
      const end = at + length;
      assertSameBytes(back.subarray(end), model.subarray(end), 'after the range', base + end);
    },
  );

  defineCase(context, skip, `discard crossing the end is ENOSPC and changes nothing${note}`, async (test) => {
    const { device, sector } = await openDevice(context);
    const discard = capabilityOf(context, device, 'discard', test);
    const tailStart = device.size - 4 * sector;
    const model = patternBytes(4 * sector, 620);
    await device.write(model, tailStart);
    await expectFssError(() => discard(device.size - 2 * sector, 4 * sector), 'ENOSPC');
    assertSameBytes(await readBytes(device, tailStart, model.length), model, 'after ENOSPC', tailStart);
  });
}

function defineAllocateBufferTests(context: SuiteContext): void {
  const declared = context.capabilities.allocateBuffer;
  const note = declared === false ? ' (skipped: declared without allocateBuffer)' : ' (when present)';

  defineCase(
    context,
    declared === false,
    `allocateBuffer gives buffers of the length asked, usable for reads and writes${note}`,
    async (test) => {
      const opened = await openDevice(context);
      const { device, sector } = opened;
      const allocateBuffer = capabilityOf(context, device, 'allocateBuffer', test);
      let at = 0;
      for (const [index, length] of [sector, 4 * sector, 64 * sector].entries()) {
        const buffer = allocateBuffer(length);
        expect(buffer).toBeInstanceOf(Uint8Array);
        expect(buffer.length).toBe(length);
        let expected: Uint8Array;
        if (device.readOnly) {
          expected = await knownBytes(opened, at, length, 0);
        } else {
          buffer.set(patternBytes(length, 700 + index));
          expected = buffer.slice();
          await device.write(buffer, at);
        }
        const target = allocateBuffer(length);
        expect(target).not.toBe(buffer);
        expect(await device.read(target, at)).toBe(length);
        assertSameBytes(target, expected, `allocated buffer ${index}`, at);
        at += length;
      }
    },
  );
}

function defineLifecycleTests(context: SuiteContext): void {
  const readCode = context.capabilities.readAfterCloseCode ?? 'EBADF';

  defineCase(
    context,
    false,
    `fails every operation after close (reads ${readCode}, the rest EBADF)`,
    async () => {
      const { device, sector } = await openDevice(context);
      await device.read(new Uint8Array(sector), 0);
      await device.close();
      await expectFssError(() => device.read(new Uint8Array(sector), 0), readCode);
      await expectFssError(() => device.flush(), 'EBADF');
      // A read-only device may refuse a write for being read-only before looking further.
      const writeCodes: ErrnoCode[] = device.readOnly ? ['EBADF', 'EROFS'] : ['EBADF'];
      await expectFssError(() => device.write(new Uint8Array(sector), 0), writeCodes);
      const { writeZeroes, discard } = device;
      if (writeZeroes !== undefined)
        await expectFssError(() => writeZeroes.call(device, 0, sector), writeCodes);
      if (discard !== undefined) await expectFssError(() => discard.call(device, 0, sector), writeCodes);
    },
  );

  defineCase(context, false, 'lets close be called twice', async () => {
    const { device } = await openDevice(context);
    await device.close();
    await expect(device.close()).resolves.toBeUndefined();
  });
}
