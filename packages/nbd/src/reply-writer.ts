/**
 * ReplyWriter: replies to transmission requests, each written contiguously, with write
 * back-pressure. Two modes, fixed per connection at the end of the handshake:
 *
 *   simple      16-byte header (+ READ data)                       no STRUCTURED_REPLY
 *   structured  one chunk per reply (DONE), BLOCK_STATUS one per context: after STRUCTURED_REPLY
 *                 READ ok        OFFSET_DATA (u64 offset + data)
 *                 BLOCK_STATUS   one BLOCK_STATUS chunk per context, DONE on the last
 *                 other ok       NONE
 *                 any error      ERROR (u32 error, u16 0: no message)
 *
 * Replies may go out in any order, but each one must reach the socket uninterrupted. Node
 * runs our code on one thread, so any reply handed to the socket in one synchronous step stays
 * contiguous. READ data is read into page-aligned pooled buffers (or the device's own), so the
 * header is a separate small buffer and header and data are written corked, which libuv sends
 * as one writev; a merged run's replies all go out in one corked batch (sendReadRun).
 *
 * Back-pressure: the request loop awaits `drained()` before reading the next request, so a
 * slow reader stops us reading requests, and the socket reader's own high-water mark then
 * stops the client sending them. drained() waits only once more than REPLY_QUEUE_BYTES_MAX is
 * queued in Node (not at Node's 16 KiB mark: a single 256 KiB reply passes that, and waiting
 * for the queue to empty after every reply would leave the socket idle while the next reads
 * start); then it waits for 'drain', which Node emits once the queue is empty.
 */
import type { Socket } from 'node:net';
import { assert } from '@fss/core';
import type { BlockStatusChunk } from './block-status';
import {
  ChunkType,
  type NbdErrnoValue,
  ReplyFlag,
  SIMPLE_REPLY_BYTES,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_READ_HEADER_BYTES,
  STRUCTURED_REPLY_HEADER_BYTES,
  STRUCTURED_REPLY_MAGIC,
} from './protocol';

/** Reply bytes queued in Node beyond which we stop reading requests (see drained()). */
const REPLY_QUEUE_BYTES_MAX = 8 * 1024 * 1024;

export class ReplyWriter {
  /** Bytes of header in front of each READ reply's data. */
  private readonly readHeaderBytes: number;

  constructor(
    private readonly socket: Socket,
    readonly structured: boolean,
  ) {
    this.readHeaderBytes = structured ? STRUCTURED_READ_HEADER_BYTES : SIMPLE_REPLY_BYTES;
  }

  /**
   * Sends successful READ replies for back-to-back requests whose data lies in one buffer
   * (`data` holds the bytes from `offset`, request after request): corked, so they leave in
   * one writev, with the headers in one allocation. `sent` runs once, when the socket no
   * longer needs `data` (writes complete in order, so that is the last one's callback; at
   * once if the socket is gone).
   */
  sendReadRun(requests: readonly ReadPart[], offset: number, data: Uint8Array, sent: () => void): void {
    assert(requests.length > 0, 'a run has requests');
    if (!this.writable()) {
      sent();
      return;
    }
    const headerBytes = this.readHeaderBytes;
    const headers = Buffer.allocUnsafe(headerBytes * requests.length);
    const last = requests.length - 1;
    this.socket.cork();
    try {
      for (let index = 0; index <= last; index++) {
        const request = requests[index]!;
        const at = request.offset - offset;
        assert(at >= 0 && at + request.length <= data.length, 'a part lies in the run');
        const header = headers.subarray(index * headerBytes, (index + 1) * headerBytes);
        this.writeReadHeader(header, request.cookie, request.offset, request.length);
        this.socket.write(header);
        const slice = data.subarray(at, at + request.length);
        if (index === last) this.socket.write(slice, () => sent());
        else this.socket.write(slice);
      }
    } finally {
      this.socket.uncork();
    }
  }

  /** Sends a reply without data: success (0) or an error, for any command. */
  send(cookie: Uint8Array, error: NbdErrnoValue): void {
    if (!this.structured) {
      const header = Buffer.allocUnsafe(SIMPLE_REPLY_BYTES);
      writeSimpleHeader(header, error, cookie);
      this.write(header);
      return;
    }
    if (error === 0) {
      const chunk = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES);
      writeChunkHeader(chunk, ChunkType.NONE, cookie, 0);
      this.write(chunk);
      return;
    }
    // ERROR: u32 error, u16 message length (0: the error value says it all).
    const chunk = Buffer.alloc(STRUCTURED_REPLY_HEADER_BYTES + 6);
    writeChunkHeader(chunk, ChunkType.ERROR, cookie, 6);
    chunk.writeUInt32BE(error, STRUCTURED_REPLY_HEADER_BYTES);
    this.write(chunk);
  }

  /**
   * Sends a BLOCK_STATUS reply: one chunk per context (u32 context id, then u32 length and
   * u32 flags per extent), DONE on the last, all in one write so the reply stays together.
   * Structured mode only.
   */
  sendBlockStatus(cookie: Uint8Array, chunks: readonly BlockStatusChunk[]): void {
    assert(this.structured, 'BLOCK_STATUS needs structured replies');
    assert(chunks.length > 0, 'a BLOCK_STATUS reply has a chunk per context');
    const payloadBytes = (chunk: BlockStatusChunk): number => 4 + 8 * chunk.extents.length;
    const total = chunks.reduce((sum, chunk) => sum + STRUCTURED_REPLY_HEADER_BYTES + payloadBytes(chunk), 0);
    const reply = Buffer.allocUnsafe(total);
    let at = 0;
    chunks.forEach((chunk, index) => {
      assert(chunk.extents.length > 0, 'a BLOCK_STATUS chunk has an extent');
      const flags = index === chunks.length - 1 ? ReplyFlag.DONE : 0;
      writeChunkHeader(reply.subarray(at), ChunkType.BLOCK_STATUS, cookie, payloadBytes(chunk), flags);
      at += STRUCTURED_REPLY_HEADER_BYTES;
      putUint32(reply, at, chunk.contextId);
      at += 4;
      for (const extent of chunk.extents) {
        assert(extent.length > 0 && extent.length <= 0xffffffff, 'an extent length is a non-zero u32');
        putUint32(reply, at, extent.length);
        putUint32(reply, at + 4, extent.flags);
        at += 8;
      }
    });
    assert(at === total, 'the reply was filled exactly');
    this.write(reply);
  }

  /** Resolves once the socket can take more (at once when it can already). */
  drained(): Promise<void> {
    if (this.socket.writableLength <= REPLY_QUEUE_BYTES_MAX || this.socket.destroyed)
      return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        resolve();
      };
      this.socket.on('drain', done);
      this.socket.on('close', done);
    });
  }

  private writeReadHeader(target: Uint8Array, cookie: Uint8Array, offset: number, dataLength: number): void {
    if (!this.structured) {
      writeSimpleHeader(target, 0, cookie);
      return;
    }
    writeChunkHeader(target, ChunkType.OFFSET_DATA, cookie, 8 + dataLength);
    // u64 offset: offsets were checked to be below 2^53, so the high half is exact.
    putUint32(target, STRUCTURED_REPLY_HEADER_BYTES, Math.floor(offset / 0x1_0000_0000));
    putUint32(target, STRUCTURED_REPLY_HEADER_BYTES + 4, offset >>> 0);
  }

  /** A socket the peer already closed, or that we ended, has no one to read the reply. */
  private writable(): boolean {
    return !this.socket.destroyed && !this.socket.writableEnded;
  }

  private write(bytes: Buffer): void {
    if (this.writable()) this.socket.write(bytes);
  }
}

/** A READ reply's range within a run (a validated request). */
export interface ReadPart {
  readonly cookie: Uint8Array;
  readonly offset: number;
  readonly length: number;
}

/** Big-endian stores without a DataView per header (a header per request, thousands a second). */
function putUint32(target: Uint8Array, at: number, value: number): void {
  target[at] = value >>> 24;
  target[at + 1] = (value >>> 16) & 0xff;
  target[at + 2] = (value >>> 8) & 0xff;
  target[at + 3] = value & 0xff;
}

function putUint16(target: Uint8Array, at: number, value: number): void {
  target[at] = (value >>> 8) & 0xff;
  target[at + 1] = value & 0xff;
}

function writeSimpleHeader(target: Uint8Array, error: NbdErrnoValue, cookie: Uint8Array): void {
  assert(cookie.length === 8, 'a cookie is 8 bytes');
  assert(target.length >= SIMPLE_REPLY_BYTES, 'room for a simple reply header');
  putUint32(target, 0, SIMPLE_REPLY_MAGIC);
  putUint32(target, 4, error);
  target.set(cookie, 8);
}

/**
 * A structured chunk header; DONE unless told otherwise: only BLOCK_STATUS replies have more
 * than one chunk (one per context), every other reply is one chunk.
 */
function writeChunkHeader(
  target: Uint8Array,
  type: number,
  cookie: Uint8Array,
  payloadLength: number,
  flags: number = ReplyFlag.DONE,
): void {
  assert(cookie.length === 8, 'a cookie is 8 bytes');
  assert(payloadLength >= 0 && payloadLength <= 0xffffffff, 'a chunk payload length is a u32');
  assert(target.length >= STRUCTURED_REPLY_HEADER_BYTES, 'room for a chunk header');
  putUint32(target, 0, STRUCTURED_REPLY_MAGIC);
  putUint16(target, 4, flags);
  putUint16(target, 6, type);
  target.set(cookie, 8);
  putUint32(target, 16, payloadLength);
}
