/**
 * The production NBD client (src/client) against fss's own server on a unix socket: bytes
 * read back equal the device, with many requests in flight; readRanges delivers pieces in
 * order whatever order the replies come in; the server's errors arrive as errno codes; a server
 * that goes away fails every pending read instead of hanging.
 */
import { FaultyBlockDevice, FssError, MemoryBlockDevice } from '@fss/core';
import { pattern, tempDir } from '@fss/test-utils';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NbdClient, readRanges, splitRanges } from '../src/client/index';
import { InstrumentedDevice, type RunningServer, startServer } from './helpers';

const SIZE = 4 * 1024 * 1024 + 12_345; // not a multiple of any request size
const RUNS = Number(process.env['FSS_PROPERTY_RUNS'] ?? 30);

let dir: { path: string; remove: () => void };
let running: RunningServer | undefined;

beforeEach(() => {
  dir = tempDir('fss-nbd-client-');
});
afterEach(async () => {
  await running?.close();
  running = undefined;
  dir.remove();
});

describe('NbdClient', () => {
  it('opens the export with NBD_OPT_GO and learns its size, flags and block sizes', async () => {
    running = await startServer(dir.path, [
      { name: 'fss0', device: new MemoryBlockDevice(SIZE, { readOnly: true }) },
    ]);
    const client = await NbdClient.connect(running.socketPath, { exportName: 'fss0' });
    expect(client.size).toBe(SIZE);
    expect(client.info.readOnly).toBe(true);
    expect(client.info.minimumBlockBytes).toBe(512);
    expect(client.info.maximumPayloadBytes).toBe(32 * 1024 * 1024);
    client.close();
  });

  it('reads equal the device, with every request of a random batch in flight at once', async () => {
    const bytes = pattern(SIZE, 7);
    const device = new InstrumentedDevice(new MemoryBlockDevice(bytes));
    device.delayMs = 2;
    running = await startServer(dir.path, [{ name: '', device }]);
    const client = await NbdClient.connect(running.socketPath);
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.integer({ min: 0, max: SIZE - 1 }).chain((offset) =>
            fc.record({
              offset: fc.constant(offset),
              length: fc.integer({ min: 1, max: Math.min(SIZE - offset, 300_000) }),
            }),
          ),
          { minLength: 1, maxLength: 40 },
        ),
        async (requests) => {
          const reads = requests.map(({ offset, length }) => client.read(offset, length));
          const results = await Promise.all(reads);
          results.forEach((data, index) => {
            const { offset, length } = requests[index] as { offset: number; length: number };
            expect(Buffer.compare(data, Buffer.from(bytes.subarray(offset, offset + length)))).toBe(0);
          });
        },
      ),
      { numRuns: RUNS },
    );
    expect(device.runningMax).toBeGreaterThan(1);
    client.close();
  });

  it('an unknown export is ENOENT, a missing socket is ENOENT, a read past the end EINVAL', async () => {
    running = await startServer(dir.path, [{ name: 'fss0', device: new MemoryBlockDevice(SIZE) }]);
    await expect(NbdClient.connect(running.socketPath, { exportName: 'fss9' })).rejects.toMatchObject({
      code: 'ENOENT',
    });
    await expect(NbdClient.connect(`${dir.path}/none.sock`)).rejects.toMatchObject({ code: 'ENOENT' });
    const client = await NbdClient.connect(running.socketPath, { exportName: 'fss0' });
    await expect(client.read(SIZE - 10, 11)).rejects.toMatchObject({ code: 'EINVAL' });
    client.close();
  });

  it("the server's read errors arrive as errno codes (an invalid snapshot's ENXIO as EIO), later reads work", async () => {
    const bytes = pattern(SIZE, 3);
    const faulty = new FaultyBlockDevice(new MemoryBlockDevice(bytes));
    running = await startServer(dir.path, [{ name: '', device: faulty }]);
    const client = await NbdClient.connect(running.socketPath);
    faulty.faults.failNext('read', 'ENXIO');
    const failure = await client.read(0, 4096).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(FssError);
    expect(failure).toMatchObject({ code: 'EIO' });
    expect(Buffer.compare(await client.read(8192, 4096), Buffer.from(bytes.subarray(8192, 12288)))).toBe(0);
    client.close();
  });

  it('a server that goes away: reads it did not answer reject (ECONNRESET), and so does every later read', async () => {
    const device = new InstrumentedDevice(new MemoryBlockDevice(SIZE));
    device.delayMs = 200;
    running = await startServer(dir.path, [{ name: '', device }]);
    const client = await NbdClient.connect(running.socketPath);
    const pending = Array.from({ length: 4 }, (_, index) => client.read(index * 65536, 65536));
    for (const read of pending) read.catch(() => undefined);
    // close() answers what the server already read, then ends the connection.
    await running.close();
    running = undefined;
    const settled = await Promise.allSettled(pending);
    for (const outcome of settled) {
      if (outcome.status === 'rejected')
        expect(outcome.reason).toMatchObject({ code: expect.stringMatching(/ECONNRESET|ESHUTDOWN/) });
    }
    await expect(client.read(0, 512)).rejects.toMatchObject({ code: 'ECONNRESET' });
    client.destroy();
  });
});

describe('readRanges', () => {
  it('splits ranges at multiples of the request size', () => {
    expect(
      splitRanges(
        [
          { offset: 100, length: 2000 },
          { offset: 4096, length: 1024 },
        ],
        1024,
        8192,
      ),
    ).toEqual([
      { offset: 100, length: 924 },
      { offset: 1024, length: 1024 },
      { offset: 2048, length: 52 },
      { offset: 4096, length: 1024 },
    ]);
  });

  it('hands the sink every byte of random ranges in order, with requests in flight meanwhile', async () => {
    const bytes = pattern(SIZE, 5);
    const device = new InstrumentedDevice(new MemoryBlockDevice(bytes));
    device.delayMs = 1;
    running = await startServer(dir.path, [{ name: '', device }]);
    const client = await NbdClient.connect(running.socketPath);
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(fc.integer({ min: 0, max: 63 }), { minLength: 1, maxLength: 20 }),
        fc.integer({ min: 1, max: 12 }),
        fc.constantFrom(4096, 65536, 1 << 20),
        async (slots, inFlight, requestBytes) => {
          const slotBytes = Math.floor(SIZE / 64);
          const ranges = [...slots]
            .sort((a, b) => a - b)
            .map((slot) => ({ offset: slot * slotBytes, length: slotBytes - (slot % 7) }));
          const seen: { offset: number; data: Buffer }[] = [];
          let inFlightSeen = 0;
          await readRanges(
            client,
            ranges,
            async (offset, data) => {
              inFlightSeen = Math.max(inFlightSeen, client.inFlight);
              seen.push({ offset, data });
              await new Promise((resolve) => setImmediate(resolve));
            },
            { inFlight, requestBytes },
          );
          const expected = splitRanges(ranges, requestBytes, SIZE);
          expect(seen.map((piece) => piece.offset)).toEqual(expected.map((piece) => piece.offset));
          for (const piece of seen) {
            expect(
              Buffer.compare(
                piece.data,
                Buffer.from(bytes.subarray(piece.offset, piece.offset + piece.data.length)),
              ),
            ).toBe(0);
          }
          expect(inFlightSeen).toBeLessThanOrEqual(inFlight);
          if (inFlight > 1 && expected.length > inFlight) expect(inFlightSeen).toBeGreaterThan(0);
        },
      ),
      { numRuns: RUNS },
    );
    client.close();
  });

  it('stops at the first failed read, waits for the rest, and rejects with it', async () => {
    const faulty = new FaultyBlockDevice(new MemoryBlockDevice(SIZE), { seed: 2, readErrorRatio: 0.2 });
    running = await startServer(dir.path, [{ name: '', device: faulty }]);
    const client = await NbdClient.connect(running.socketPath);
    const offsets: number[] = [];
    await expect(
      readRanges(
        client,
        [{ offset: 0, length: SIZE }],
        (offset) => {
          offsets.push(offset);
        },
        { requestBytes: 4096, inFlight: 4 },
      ),
    ).rejects.toMatchObject({ code: 'EIO' });
    expect(offsets.length).toBeLessThan(Math.ceil(SIZE / 4096));
    expect(client.inFlight).toBe(0);
    client.close();
  });

  it('an aborted signal stops it with ECANCELED', async () => {
    running = await startServer(dir.path, [{ name: '', device: new MemoryBlockDevice(SIZE) }]);
    const client = await NbdClient.connect(running.socketPath);
    const controller = new AbortController();
    let pieces = 0;
    await expect(
      readRanges(
        client,
        [{ offset: 0, length: SIZE }],
        () => {
          pieces += 1;
          if (pieces === 3) controller.abort(new Error('SIGINT'));
        },
        { requestBytes: 65536, signal: controller.signal },
      ),
    ).rejects.toMatchObject({ code: 'ECANCELED' });
    expect(pieces).toBe(3);
    client.close();
  });
});
