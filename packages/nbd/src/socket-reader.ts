/**
 * SocketReader: the bytes one NBD connection receives, with as few copies as the kernel allows.
 *
 * Notes on the design
 *
 * Where bytes land. Node's default socket reading allocates a fresh 64 KiB Buffer for every
 * read(2) and hands it to 'data' listeners, so a WRITE payload has to be copied out of those
 * chunks into the O_DIRECT-aligned buffer the device wants: one more copy per written byte,
 * and a 64 KiB allocation per read for the garbage collector. Instead the reader decides,
 * before each read(2), where its bytes go (`region()`): straight into the unfilled part of the
 * WRITE payload being received, or into the connection's one staging buffer (request headers,
 * handshake options, small payloads that share a read with their header). A socket created
 * with Node's `onread: { buffer, callback }` option asks `region()` for its next buffer and
 * reports `filled(n)` after every read; the sockets our listener accepts are re-created that
 * way (`openSocketReader`). A socket that cannot be (one handed to NbdServer.accept, which may
 * have read already) is fed its 'data' chunks instead, copied through the same state machine
 * (`deliver`), so both paths frame requests identically.
 *
 * Framing happens inside the read callback, synchronously: a WRITE's header is parsed as soon
 * as its 28 bytes are in, a payload buffer is acquired for it, and the very next read(2)
 * targets that buffer. (With a promise per header the parse would run as a microtask, after
 * Node had already asked for the next read's buffer.) After a WRITE of at least
 * LARGE_PAYLOAD_BYTES_MIN the next region is exactly one header long, so the payload that
 * follows a header is never read into staging: one read(2) more per large request instead of
 * a copy of up to 64 KiB. Small payloads are read with their neighbours and copied.
 *
 * Modes:
 *   raw       the handshake: `read(length)` resolves with a copy of the next `length` bytes;
 *   framing   after `startFraming`: bytes become frames (request + payload) for `nextFrame()`;
 *   stopped   a header that cannot be framed (no magic, an oversized WRITE) was queued last;
 *             nothing after it is parsed (the connection closes).
 *
 * Flow control. Frames are parsed ahead of the consumer while fewer than AHEAD_FRAMES_MAX are
 * queued holding fewer than AHEAD_BYTES_MAX payload bytes; past that, bytes stay in staging,
 * and once staging is nearly full (or holds the header of a large WRITE, whose payload is
 * better read later, in place) the socket is paused (the callback returns false, or
 * socket.pause() for a chunk-fed socket), so a client that pipelines faster than we answer is
 * held back by the kernel's flow control. Memory per connection: the staging buffer, plus at
 * most AHEAD_BYTES_MAX and one maximal payload in queued frames.
 *
 * Lent memory. The region handed to the socket is the socket's until the next `filled`:
 * nothing writes or moves staging bytes at or after `end` meanwhile (compaction happens only
 * in region(), which Node calls right after filled). A paused socket is lent the small
 * parking buffer (where its first read after resuming lands); bytes that land anywhere but
 * where the stream continues by then (parking, or staging after a payload started) are
 * delivered by copy.
 */
import { Socket as NetSocket, type Socket } from 'node:net';
import { assert } from '@fss/core';
import { Command, Limits, REQUEST_BYTES } from './protocol';
import { type NbdRequest, parseRequest } from './request';

/** The peer closed (or the socket failed) before the bytes we needed arrived. */
export class EndOfStream extends Error {
  override readonly name = 'EndOfStream';
}

/** One transmission request as received: its header and, for a WRITE, its whole payload. */
export interface Frame {
  /** The parsed header; undefined when it lacked the request magic. */
  readonly request: NbdRequest | undefined;
  /** A WRITE's `request.length` bytes; undefined for other commands and oversized WRITEs. */
  readonly payload: Uint8Array | undefined;
}

/** Where a WRITE payload of `length` (> 0) bytes is received: exactly `length` bytes. */
export type AcquirePayload = (length: number) => Uint8Array;

/** The staging buffer: headers, options, and payload bytes that share a read with a header. */
export const STAGING_BYTES = 64 * 1024;
/** Lent to a paused socket whose staging is full; also the least staging worth reading into. */
const PARKING_BYTES = 4096;
/** Frames parsed ahead of the consumer, at most (count, and payload bytes). */
const AHEAD_FRAMES_MAX = 64;
const AHEAD_BYTES_MAX = 2 * 1024 * 1024;
/**
 * Payloads at least this large are read in place, and after one the next region is one
 * header long (see "Framing"). Smaller ones are read into staging with whatever follows them
 * and copied: for a 4 KiB WRITE a read(2) of its own would cost more than the copy, and
 * requests that small arrive many to a read.
 */
const LARGE_PAYLOAD_BYTES_MIN = STAGING_BYTES / 2;

function isLarge(payloadBytes: number): boolean {
  return payloadBytes >= LARGE_PAYLOAD_BYTES_MIN;
}

const EMPTY_PAYLOAD = new Uint8Array(0);

/** What a reader needs of an adopted socket (a net.Socket; tests pass fakes). */
export interface DirectSource {
  on(event: 'end' | 'close' | 'error', listener: () => void): unknown;
  resume(): unknown;
}

/** What a reader needs of a chunk-fed socket. */
export interface ChunkSource extends DirectSource {
  on(event: 'data', listener: (chunk: Buffer) => void): unknown;
  on(event: 'end' | 'close' | 'error', listener: () => void): unknown;
  pause(): unknown;
}

type Mode = 'raw' | 'framing' | 'stopped';
type Lent = 'staging' | 'payload' | 'parking';

interface Waiter<T> {
  readonly resolve: (value: T) => void;
  readonly reject: (error: Error) => void;
}

interface PartialPayload {
  readonly request: NbdRequest;
  readonly payload: Uint8Array;
  filled: number;
}

export class SocketReader {
  private readonly staging = Buffer.allocUnsafeSlow(STAGING_BYTES);
  /** Unconsumed staging bytes are [start, end). */
  private start = 0;
  private end = 0;
  private parking: Uint8Array | undefined;
  /** What region() last handed out, and where (staging offset). */
  private lent: Lent = 'staging';
  private lentAt = 0;
  private mode: Mode = 'raw';
  private rawWaiter: (Waiter<Uint8Array> & { readonly length: number }) | undefined;
  private acquire: AcquirePayload | undefined;
  /** The WRITE whose payload is being received. While set, staging is empty. */
  private partial: PartialPayload | undefined;
  private readonly frames: Frame[] = [];
  private queuedPayloadBytes = 0;
  private frameWaiter: Waiter<Frame> | undefined;
  private lastPayloadBytes = 0;
  /** Bytes that arrived while there was no room for them, oldest first (chunk-fed sockets). */
  private overflow: Uint8Array[] = [];
  private ended = false;
  private paused = false;
  private resumeSocket: (() => void) | undefined;
  private pauseSocket: (() => void) | undefined;

  /** Bytes received and not yet consumed (STARTTLS checks that the client sent none early). */
  get bufferedBytes(): number {
    return this.end - this.start + this.overflow.reduce((sum, chunk) => sum + chunk.length, 0);
  }

  /** Bytes received from the socket so far (tests and debugging). */
  receivedBytes = 0;
  /** WRITE payload bytes that were copied in rather than read in place (tests and debugging). */
  copiedPayloadBytes = 0;

  /**
   * Reads a chunk-fed socket (Node's 'data' events, each chunk copied in). Use
   * openSocketReader for sockets that can read straight into our memory.
   */
  feedFrom(socket: ChunkSource): void {
    this.watchEnd(socket);
    this.resumeSocket = () => socket.resume();
    this.pauseSocket = () => socket.pause();
    socket.on('data', (chunk: Buffer) => {
      if (this.ended) return;
      this.receivedBytes += chunk.length;
      this.deliver(chunk, false);
      this.afterBytes();
    });
    socket.resume();
  }

  /** The socket of an adopted handle (see openSocketReader): resume and end events. */
  attachDirect(socket: DirectSource): void {
    this.watchEnd(socket);
    this.resumeSocket = () => socket.resume();
  }

  // --- The onread interface: region() before every read(2), filled(n) after it ---

  /** Where the next bytes from the socket go; never empty. Lent until the next filled(). */
  region(): Uint8Array {
    const partial = this.partial;
    if (partial !== undefined && !this.paused && isLarge(partial.payload.length)) {
      assert(this.start === this.end, 'staging is empty while a payload is received');
      assert(partial.filled < partial.payload.length, 'a partial payload has room');
      this.lent = 'payload';
      return partial.payload.subarray(partial.filled);
    }
    this.compact();
    const free = STAGING_BYTES - this.end;
    if (free === 0 || this.paused) {
      // What lands here while paused (the one read a resumed socket makes first) is copied
      // to where the stream continues by then: at most PARKING_BYTES, not a staging buffer.
      this.lent = 'parking';
      this.parking ??= new Uint8Array(PARKING_BYTES);
      return this.parking;
    }
    let length = free;
    const headerRest = REQUEST_BYTES - (this.end - this.start);
    if (this.mode === 'framing' && isLarge(this.lastPayloadBytes) && headerRest > 0) {
      length = Math.min(free, headerRest);
    }
    this.lent = 'staging';
    this.lentAt = this.end;
    return this.staging.subarray(this.end, this.end + length);
  }

  /** `byteCount` bytes landed at the start of the last region(); false: pause the socket. */
  filled(byteCount: number): boolean {
    assert(Number.isInteger(byteCount) && byteCount > 0, 'a read delivers bytes');
    if (this.ended) return true;
    this.receivedBytes += byteCount;
    switch (this.lent) {
      case 'payload': {
        const partial = this.partial;
        assert(partial !== undefined, 'a payload region belongs to a partial payload');
        assert(byteCount <= partial.payload.length - partial.filled, 'a read fits its region');
        partial.filled += byteCount;
        if (partial.filled === partial.payload.length) this.completePartial();
        this.parse();
        break;
      }
      case 'staging':
        assert(this.lentAt === this.end, 'nothing moved the staging region while it was lent');
        assert(this.end + byteCount <= STAGING_BYTES, 'a read fits the staging buffer');
        this.end += byteCount;
        this.parse();
        break;
      case 'parking':
        this.deliver(this.parking!.subarray(0, byteCount), true);
        break;
    }
    return !this.updatePause();
  }

  // --- Consumers: the handshake reads raw bytes, transmission reads frames ---

  /** Resolves with a copy of exactly the next `length` bytes (raw mode, one read at a time). */
  read(length: number): Promise<Uint8Array> {
    assert(this.mode === 'raw', 'read() is for the handshake, before startFraming');
    assert(
      Number.isSafeInteger(length) && length >= 0 && length <= STAGING_BYTES,
      'read length fits staging',
    );
    assert(this.rawWaiter === undefined, 'one read at a time');
    if (length === 0) return Promise.resolve(new Uint8Array(0));
    if (this.end - this.start >= length) {
      const bytes = this.takeRaw(length);
      this.maybeResume();
      return Promise.resolve(bytes);
    }
    if (this.ended) return Promise.reject(new EndOfStream('connection closed'));
    return new Promise((resolve, reject) => {
      this.rawWaiter = { length, resolve, reject };
      this.maybeResume();
    });
  }

  /**
   * Switches to framing: from now on the bytes are requests, WRITE payloads received into
   * buffers from `acquire`. Bytes already received are framed at once.
   */
  startFraming(acquire: AcquirePayload): void {
    assert(this.mode === 'raw', 'framing starts once');
    assert(this.rawWaiter === undefined, 'no handshake read is pending');
    this.mode = 'framing';
    this.acquire = acquire;
    this.parse();
    this.maybeResume();
  }

  /** The next request; rejects with EndOfStream once the peer is gone. One call at a time. */
  nextFrame(): Promise<Frame> {
    assert(this.mode !== 'raw', 'nextFrame() needs startFraming first');
    assert(this.frameWaiter === undefined, 'one nextFrame at a time');
    const frame = this.frames.shift();
    if (frame !== undefined) {
      this.queuedPayloadBytes -= frame.payload?.length ?? 0;
      assert(this.queuedPayloadBytes >= 0, 'queued payload bytes stay non-negative');
      this.parse();
      this.maybeResume();
      return Promise.resolve(frame);
    }
    if (this.ended) return Promise.reject(new EndOfStream('connection closed'));
    return new Promise((resolve, reject) => {
      this.frameWaiter = { resolve, reject };
      this.maybeResume();
    });
  }

  /** The peer is gone: pending and later reads that cannot be satisfied reject. */
  endOfStream(): void {
    if (this.ended) return;
    this.ended = true;
    const raw = this.rawWaiter;
    this.rawWaiter = undefined;
    raw?.reject(new EndOfStream('connection closed'));
    const frame = this.frameWaiter;
    this.frameWaiter = undefined;
    frame?.reject(new EndOfStream('connection closed'));
  }

  // --- Internal helpers ---

  private watchEnd(socket: DirectSource): void {
    socket.on('end', () => this.endOfStream());
    socket.on('close', () => this.endOfStream());
    socket.on('error', () => this.endOfStream());
  }

  /** Copies `bytes` in where the stream continues; what has no room waits in `overflow`. */
  private deliver(bytes: Uint8Array, reused: boolean): void {
    let at = 0;
    while (at < bytes.length) {
      const partial = this.partial;
      if (partial !== undefined) {
        const length = Math.min(bytes.length - at, partial.payload.length - partial.filled);
        partial.payload.set(bytes.subarray(at, at + length), partial.filled);
        partial.filled += length;
        this.copiedPayloadBytes += length;
        at += length;
        if (partial.filled === partial.payload.length) this.completePartial();
        this.parse();
        continue;
      }
      this.compact();
      const room = STAGING_BYTES - this.end;
      if (room === 0) {
        // Only when parsing is blocked: keep the rest (a copy if its memory is reused).
        const rest = bytes.subarray(at);
        this.overflow.push(reused ? rest.slice() : rest);
        return;
      }
      const length = Math.min(room, bytes.length - at);
      this.staging.set(bytes.subarray(at, at + length), this.end);
      this.end += length;
      at += length;
      this.parse();
    }
  }

  /** After bytes arrived on a chunk-fed socket: pause it when there is no room. */
  private afterBytes(): void {
    const wasPaused = this.paused;
    if (this.updatePause() && !wasPaused) this.pauseSocket?.();
  }

  /** Moves unconsumed staging bytes to the front when the tail is too short to read into. */
  private compact(): void {
    if (this.start === this.end) {
      this.start = 0;
      this.end = 0;
      return;
    }
    if (this.start === 0 || STAGING_BYTES - this.end >= PARKING_BYTES) return;
    this.staging.copyWithin(0, this.start, this.end);
    this.end -= this.start;
    this.start = 0;
  }

  /** Serves the raw waiter, or frames staging bytes (as far as the ahead limits allow). */
  private parse(): void {
    if (this.mode === 'raw') {
      const waiter = this.rawWaiter;
      if (waiter !== undefined && this.end - this.start >= waiter.length) {
        this.rawWaiter = undefined;
        waiter.resolve(this.takeRaw(waiter.length));
      }
      return;
    }
    for (;;) {
      const partial = this.partial;
      if (partial !== undefined) {
        // Payload bytes that reached staging (a read lent before the header was parsed).
        const length = Math.min(this.end - this.start, partial.payload.length - partial.filled);
        if (length === 0) return;
        partial.payload.set(this.staging.subarray(this.start, this.start + length), partial.filled);
        partial.filled += length;
        this.copiedPayloadBytes += length;
        this.start += length;
        if (partial.filled < partial.payload.length) return;
        this.completePartial();
        continue;
      }
      if (this.mode !== 'framing' || this.aheadFull() || this.end - this.start < REQUEST_BYTES) return;
      this.parseHeader();
    }
  }

  /** Frames the request header at `start` (its 28 bytes are in staging). */
  private parseHeader(): void {
    // A copy: the request's cookie is a view of it and outlives the staging bytes.
    const header = Buffer.allocUnsafe(REQUEST_BYTES);
    header.set(this.staging.subarray(this.start, this.start + REQUEST_BYTES));
    this.start += REQUEST_BYTES;
    const request = parseRequest(header);
    if (
      request === undefined ||
      (request.type === Command.WRITE && request.length > Limits.PAYLOAD_BYTES_MAX)
    ) {
      this.mode = 'stopped'; // nothing after this header can be framed
      this.queue({ request, payload: undefined });
      return;
    }
    if (request.type !== Command.WRITE) {
      this.lastPayloadBytes = 0;
      this.queue({ request, payload: undefined });
      return;
    }
    const { length } = request;
    this.lastPayloadBytes = length;
    const payload = length === 0 ? EMPTY_PAYLOAD : this.acquire!(length);
    assert(payload.length === length, 'a payload buffer is exactly the payload long');
    this.partial = { request, payload, filled: 0 };
    if (length === 0) this.completePartial();
  }

  private completePartial(): void {
    const partial = this.partial;
    assert(partial !== undefined && partial.filled === partial.payload.length, 'a complete payload');
    this.partial = undefined;
    this.queue({ request: partial.request, payload: partial.payload });
  }

  private queue(frame: Frame): void {
    const waiter = this.frameWaiter;
    if (waiter !== undefined) {
      assert(this.frames.length === 0, 'a waiting consumer means an empty queue');
      this.frameWaiter = undefined;
      waiter.resolve(frame);
      return;
    }
    this.frames.push(frame);
    this.queuedPayloadBytes += frame.payload?.length ?? 0;
  }

  private aheadFull(): boolean {
    return this.frames.length >= AHEAD_FRAMES_MAX || this.queuedPayloadBytes >= AHEAD_BYTES_MAX;
  }

  /** True when no consumer can take more bytes now (they stay in staging). */
  private blocked(): boolean {
    if (this.mode === 'raw') return this.rawWaiter === undefined;
    if (this.mode === 'stopped') return true;
    return this.partial === undefined && this.aheadFull();
  }

  /**
   * Recomputes `paused`: bytes wait in overflow, or no consumer takes bytes now and either
   * staging has (almost) no room or a whole request header waits in it (what would follow it
   * is most likely its payload, better read later straight into a payload buffer).
   */
  private updatePause(): boolean {
    const unconsumed = this.end - this.start;
    const blocked = this.blocked();
    this.paused =
      this.overflow.length > 0 ||
      (blocked && STAGING_BYTES - unconsumed < PARKING_BYTES) ||
      (blocked && this.mode === 'framing' && this.largeWriteWaits());
    assert(!this.paused || blocked || this.overflow.length > 0, 'only a blocked reader pauses');
    return this.paused;
  }

  /** After a consumer took bytes: deliver what waited, and resume the socket if there is room. */
  private maybeResume(): void {
    if (!this.paused) return;
    const waiting = this.overflow;
    this.overflow = [];
    for (const bytes of waiting) {
      if (this.overflow.length > 0) this.overflow.push(bytes);
      else this.deliver(bytes, false);
    }
    if (this.updatePause()) return;
    this.resumeSocket?.();
  }

  /** True when the request header waiting in staging is a WRITE with a large payload. */
  private largeWriteWaits(): boolean {
    if (this.end - this.start < REQUEST_BYTES) return false;
    const type = this.staging.readUInt16BE(this.start + 6);
    return type === Command.WRITE && isLarge(this.staging.readUInt32BE(this.start + 24));
  }

  private takeRaw(length: number): Uint8Array {
    assert(this.end - this.start >= length, 'takeRaw needs the bytes in staging');
    const bytes = Buffer.allocUnsafe(length);
    bytes.set(this.staging.subarray(this.start, this.start + length));
    this.start += length;
    return bytes;
  }
}

/** The shape of the socket options Node takes for an adopted handle (not in @types/node). */
interface AdoptOptions {
  handle: unknown;
  allowHalfOpen: boolean;
  readable: boolean;
  writable: boolean;
  onread: { buffer: () => Uint8Array; callback: (byteCount: number) => boolean };
}

/**
 * The socket to serve a connection on, and its reader. `neverRead`: the socket comes from a
 * listener with `pauseOnConnect` and no byte has been read from it yet; then its handle is
 * moved into a new Socket created with `onread`, whose reads land straight in the reader's
 * memory (the old Socket object is destroyed without its handle). Node offers `onread` only
 * to sockets it creates for a connect(), and `handle` is the same (undocumented, long-standing)
 * option Node's own child_process and cluster use to wrap a received handle. Otherwise, or
 * when the handle cannot take a user buffer, the socket is fed by its 'data' chunks.
 */
export function openSocketReader(
  accepted: Socket,
  neverRead: boolean,
): { socket: Socket; reader: SocketReader } {
  const reader = new SocketReader();
  const holder = accepted as unknown as { _handle: { useUserBuffer?: unknown } | null };
  const handle = holder._handle;
  if (!neverRead || handle === null || typeof handle.useUserBuffer !== 'function') {
    reader.feedFrom(accepted);
    return { socket: accepted, reader };
  }
  holder._handle = null;
  const options: AdoptOptions = {
    handle,
    allowHalfOpen: true,
    readable: true,
    writable: true,
    onread: { buffer: () => reader.region(), callback: (byteCount) => reader.filled(byteCount) },
  };
  const socket = new NetSocket(options as unknown as ConstructorParameters<typeof NetSocket>[0]);
  accepted.destroy(); // without a handle: only the old wrapper goes
  reader.attachDirect(socket);
  assert(!socket.destroyed, 'the adopted socket is open');
  return { socket, reader };
}
