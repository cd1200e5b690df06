import { EventEmitter } from 'node:events';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Command, REQUEST_BYTES, REQUEST_MAGIC } from './protocol';
import { EndOfStream, type Frame, SocketReader, STAGING_BYTES } from './socket-reader';

/** One request to send: a header and, for WRITE, `length` payload bytes. */
interface Sent {
  type: number;
  offset: number;
  length: number;
  cookie: number;
}

function encodeHeader(sent: Sent, magic = REQUEST_MAGIC): Buffer {
  const header = Buffer.alloc(REQUEST_BYTES);
  header.writeUInt32BE(magic, 0);
  header.writeUInt16BE(0, 4);
  header.writeUInt16BE(sent.type, 6);
  header.writeUInt32BE(0, 8);
  header.writeUInt32BE(sent.cookie, 12);
  header.writeUInt32BE(Math.floor(sent.offset / 2 ** 32), 16);
  header.writeUInt32BE(sent.offset >>> 0, 20);
  header.writeUInt32BE(sent.length, 24);
  return header;
}

/** Payload bytes that differ per request and per position (a misplaced byte shows). */
function payloadOf(sent: Sent): Buffer {
  const bytes = Buffer.alloc(sent.length);
  for (let index = 0; index < bytes.length; index++) bytes[index] = (index * 7 + sent.cookie * 13) & 0xff;
  return bytes;
}

function streamOf(prefix: Buffer, requests: readonly Sent[]): Buffer {
  const parts = [prefix];
  for (const sent of requests) {
    parts.push(encodeHeader(sent));
    if (sent.type === Command.WRITE) parts.push(payloadOf(sent));
  }
  return Buffer.concat(parts);
}

/** A fake socket: the reader's resume/pause hooks, and 'end' when the stream is over. */
class FakeSocket extends EventEmitter {
  paused = false;
  resumed = 0;
  pause(): this {
    this.paused = true;
    return this;
  }
  resume(): this {
    this.paused = false;
    this.resumed++;
    this.emit('resumed');
    return this;
  }
  waitForResume(): Promise<void> {
    return this.paused ? new Promise((resolve) => this.once('resumed', () => resolve())) : Promise.resolve();
  }
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Feeds `stream` the way a socket with `onread` does: into whatever region() lends, at most
 * `readSizes[i]` bytes per read, honouring pauses (filled() returning false) until resumed.
 */
async function driveDirect(reader: SocketReader, socket: FakeSocket, stream: Buffer, readSizes: number[]) {
  let at = 0;
  let read = 0;
  while (at < stream.length) {
    await socket.waitForResume();
    const region = reader.region();
    expect(region.length).toBeGreaterThan(0);
    const length = Math.min(region.length, readSizes[read++ % readSizes.length]!, stream.length - at);
    region.set(stream.subarray(at, at + length));
    at += length;
    if (!reader.filled(length)) socket.pause();
    if (read % 3 === 0) await tick();
  }
  socket.emit('end');
}

/** Feeds `stream` as Node's 'data' chunks of the given sizes. */
async function driveChunks(socket: FakeSocket, stream: Buffer, chunkSizes: number[]) {
  let at = 0;
  let chunk = 0;
  while (at < stream.length) {
    await socket.waitForResume();
    const length = Math.min(chunkSizes[chunk++ % chunkSizes.length]!, stream.length - at);
    // A fresh Buffer per chunk, as Node's default reading gives.
    socket.emit('data', Buffer.from(stream.subarray(at, at + length)));
    at += length;
    if (chunk % 3 === 0) await tick();
  }
  socket.emit('end');
}

/**
 * Reads the raw prefix, then every frame (pausing now and then unless `fast`); checks each
 * against `requests`.
 */
async function consume(
  reader: SocketReader,
  prefixReads: number[],
  prefix: Buffer,
  requests: readonly Sent[],
  fast = false,
) {
  let at = 0;
  for (const length of prefixReads) {
    const bytes = await reader.read(length);
    expect(Buffer.from(bytes).equals(prefix.subarray(at, at + length))).toBe(true);
    at += length;
  }
  const acquired = new Set<Uint8Array>();
  reader.startFraming((length) => {
    const buffer = new Uint8Array(length);
    acquired.add(buffer);
    return buffer;
  });
  const frames: Frame[] = [];
  for (let index = 0; index < requests.length; index++) {
    if (!fast && index % 5 === 4) for (let wait = 0; wait < 3; wait++) await tick(); // a slow consumer
    frames.push(await reader.nextFrame());
  }
  await expect(reader.nextFrame()).rejects.toBeInstanceOf(EndOfStream);
  requests.forEach((sent, index) => {
    const { request, payload } = frames[index]!;
    expect(request).toMatchObject({ type: sent.type, offset: sent.offset, length: sent.length });
    expect(Buffer.from(request!.cookie).readUInt32BE(4)).toBe(sent.cookie);
    if (sent.type !== Command.WRITE) expect(payload).toBeUndefined();
    else {
      expect(Buffer.from(payload!).equals(payloadOf(sent))).toBe(true);
      if (sent.length > 0) expect(acquired.has(payload!)).toBe(true);
    }
  });
}

const sentArbitrary = fc.record({
  type: fc.constantFrom(Command.READ, Command.WRITE, Command.WRITE, Command.FLUSH, Command.TRIM),
  offset: fc.nat({ max: 2 ** 40 }),
  length: fc.oneof(fc.nat({ max: 600 }), fc.integer({ min: 4096, max: 300_000 })),
  cookie: fc.nat({ max: 0xffff_ffff }),
});
const sizesArbitrary = fc.array(
  fc.oneof(fc.integer({ min: 1, max: 64 }), fc.integer({ min: 1, max: 200_000 })),
  {
    minLength: 1,
    maxLength: 8,
  },
);
const prefixArbitrary = fc.array(fc.integer({ min: 1, max: 300 }), { maxLength: 4 });

describe('SocketReader', () => {
  it('frames every request byte-exactly, whatever the read sizes (onread path)', async () => {
    await fc.assert(
      fc.asyncProperty(
        prefixArbitrary,
        fc.array(sentArbitrary, { maxLength: 24 }),
        sizesArbitrary,
        async (prefixReads, requests, readSizes) => {
          const prefix = Buffer.alloc(
            prefixReads.reduce((sum, length) => sum + length, 0),
            0x5a,
          );
          const stream = streamOf(prefix, requests);
          const reader = new SocketReader();
          const socket = new FakeSocket();
          reader.attachDirect(socket);
          await Promise.all([
            driveDirect(reader, socket, stream, readSizes),
            consume(reader, prefixReads, prefix, requests),
          ]);
          expect(reader.receivedBytes).toBe(stream.length);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('frames every request byte-exactly, whatever the chunk boundaries (data path)', async () => {
    await fc.assert(
      fc.asyncProperty(
        prefixArbitrary,
        fc.array(sentArbitrary, { maxLength: 24 }),
        sizesArbitrary,
        async (prefixReads, requests, chunkSizes) => {
          const prefix = Buffer.alloc(
            prefixReads.reduce((sum, length) => sum + length, 0),
            0xa5,
          );
          const stream = streamOf(prefix, requests);
          const reader = new SocketReader();
          const socket = new FakeSocket();
          reader.feedFrom(socket);
          await Promise.all([
            driveChunks(socket, stream, chunkSizes),
            consume(reader, prefixReads, prefix, requests),
          ]);
          expect(reader.receivedBytes).toBe(stream.length);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('reads large WRITE payloads in place: only bytes that shared the first read are copied', async () => {
    const requests: Sent[] = Array.from({ length: 8 }, (_, index) => ({
      type: Command.WRITE,
      offset: index * 2 ** 20,
      length: 2 ** 20,
      cookie: index,
    }));
    const stream = streamOf(Buffer.alloc(0), requests);
    const reader = new SocketReader();
    const socket = new FakeSocket();
    reader.attachDirect(socket);
    // Reads as large as the region lent: what a socket with data waiting does.
    const whole = [2 ** 30];
    await Promise.all([
      driveDirect(reader, socket, stream, whole),
      consume(reader, [], Buffer.alloc(0), requests, true),
    ]);
    // The first read lands in staging (the reader cannot know a WRITE comes); after that every
    // header is read alone and every payload straight into its buffer.
    expect(reader.copiedPayloadBytes).toBe(STAGING_BYTES - REQUEST_BYTES);

    // A consumer that falls behind pauses the socket; only the small parking read is copied.
    const slow = new SocketReader();
    const slowSocket = new FakeSocket();
    slow.attachDirect(slowSocket);
    await Promise.all([
      driveDirect(slow, slowSocket, stream, whole),
      consume(slow, [], Buffer.alloc(0), requests),
    ]);
    expect(slowSocket.resumed).toBeGreaterThan(0);
    expect(slow.copiedPayloadBytes).toBeLessThanOrEqual(STAGING_BYTES + slowSocket.resumed * 4096);
  });

  it('pauses a client that sends more than it may have ahead, and resumes when it is read', async () => {
    const requests: Sent[] = Array.from({ length: 200 }, (_, index) => ({
      type: Command.WRITE,
      offset: 0,
      length: 65536,
      cookie: index,
    }));
    const stream = streamOf(Buffer.alloc(0), requests);
    const reader = new SocketReader();
    const socket = new FakeSocket();
    reader.attachDirect(socket);
    reader.startFraming((length) => new Uint8Array(length));
    const driving = driveDirect(reader, socket, stream, [2 ** 30]);
    for (let wait = 0; wait < 50 && !socket.paused; wait++) await tick();
    expect(socket.paused).toBe(true);
    // Held back: the read-ahead (2 MiB of payloads) and one staging buffer, not all 13 MiB.
    expect(reader.receivedBytes).toBeLessThan(2 * 2 ** 20 + 2 * STAGING_BYTES + 65536);
    for (let index = 0; index < requests.length; index++) {
      expect((await reader.nextFrame()).request?.cookie[7]).toBe(index & 0xff);
    }
    await driving;
    expect(socket.resumed).toBeGreaterThan(0);
  });

  it('stops framing after a header without the magic, and after an oversized WRITE', async () => {
    for (const bad of [
      encodeHeader({ type: Command.READ, offset: 0, length: 512, cookie: 1 }, 0x12345678),
      encodeHeader({ type: Command.WRITE, offset: 0, length: 2 ** 26, cookie: 2 }),
    ]) {
      const good = encodeHeader({ type: Command.FLUSH, offset: 0, length: 0, cookie: 3 });
      const reader = new SocketReader();
      const socket = new FakeSocket();
      reader.feedFrom(socket);
      reader.startFraming((length) => new Uint8Array(length));
      socket.emit('data', Buffer.concat([good, bad, good, Buffer.alloc(4096)]));
      expect((await reader.nextFrame()).request?.type).toBe(Command.FLUSH);
      const stopped = await reader.nextFrame();
      expect(stopped.payload).toBeUndefined();
      expect(stopped.request === undefined || stopped.request.length === 2 ** 26).toBe(true);
      socket.emit('end');
      await expect(reader.nextFrame()).rejects.toBeInstanceOf(EndOfStream);
    }
  });

  it('rejects a read cut short by the end of the stream', async () => {
    const reader = new SocketReader();
    const socket = new FakeSocket();
    reader.feedFrom(socket);
    socket.emit('data', Buffer.alloc(3));
    const pending = reader.read(4);
    socket.emit('end');
    await expect(pending).rejects.toBeInstanceOf(EndOfStream);
    await expect(reader.read(1)).resolves.toHaveLength(1); // what did arrive is still there
  });
});
