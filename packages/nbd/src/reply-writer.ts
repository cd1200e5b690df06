/**
 * ReplyWriter: simple replies, each written contiguously, with write back-pressure.
 *
 * Replies may go out in any order, but each one (16-byte header + READ payload) must reach
 * the socket uninterrupted. Node runs our code on one thread, so any reply handed to the
 * socket in one synchronous step stays contiguous. The fast path is one buffer holding header
 * and payload (the READ handler reads the device straight into `replyBuffer(length)`), so a
 * reply is one `socket.write`. When the device wants its own buffer (O_DIRECT alignment), the
 * header and payload are written corked, which libuv sends as one writev.
 *
 * Back-pressure: `socket.write` returning false means the kernel buffer and Node's queue are
 * full. The request loop awaits `drained()` before reading the next request, so a slow reader
 * stops us reading requests, and the socket reader's own high-water mark then stops the
 * client sending them.
 */
import type { Socket } from 'node:net';
import { assert } from '@fss/core';
import type { BufferPool } from './buffer-pool';
import { type NbdErrnoValue, SIMPLE_REPLY_BYTES, SIMPLE_REPLY_MAGIC } from './protocol';

export class ReplyWriter {
  constructor(private readonly socket: Socket) {}

  /**
   * Sends a READ reply whose first SIMPLE_REPLY_BYTES are header room (a buffer from `pool`),
   * in one write; the buffer goes back to the pool once the socket has handed it to the kernel.
   */
  sendWithPayload(cookie: Uint8Array, reply: Uint8Array, pool: BufferPool): void {
    assert(reply.length >= SIMPLE_REPLY_BYTES, 'reply buffer needs header room');
    writeHeader(reply, 0, cookie);
    if (this.socket.destroyed || this.socket.writableEnded) {
      pool.release(reply);
      return;
    }
    this.socket.write(reply, () => pool.release(reply));
  }

  /**
   * Sends a successful READ reply whose payload is a device buffer from `pool`: header and
   * payload corked, which libuv sends as one writev; the payload returns to the pool after.
   */
  sendSplit(cookie: Uint8Array, payload: Uint8Array, pool: BufferPool): void {
    const header = Buffer.allocUnsafe(SIMPLE_REPLY_BYTES);
    writeHeader(header, 0, cookie);
    if (this.socket.destroyed || this.socket.writableEnded) {
      pool.release(payload);
      return;
    }
    this.socket.cork();
    this.socket.write(header);
    this.socket.write(payload, () => pool.release(payload));
    this.socket.uncork();
  }

  /** Sends a reply without payload (errors, and every command but READ). */
  send(cookie: Uint8Array, error: NbdErrnoValue): void {
    const header = Buffer.allocUnsafe(SIMPLE_REPLY_BYTES);
    writeHeader(header, error, cookie);
    this.write(header);
  }

  /** Resolves once the socket can take more (at once when it can already). */
  drained(): Promise<void> {
    if (!this.socket.writableNeedDrain || this.socket.destroyed) return Promise.resolve();
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

  private write(bytes: Buffer): void {
    // A socket the peer already closed has no one to read the reply: drop it.
    if (this.socket.destroyed || this.socket.writableEnded) return;
    this.socket.write(bytes);
  }
}

function writeHeader(target: Uint8Array, error: NbdErrnoValue, cookie: Uint8Array): void {
  assert(cookie.length === 8, 'a cookie is 8 bytes');
  const view = new DataView(target.buffer, target.byteOffset, SIMPLE_REPLY_BYTES);
  view.setUint32(0, SIMPLE_REPLY_MAGIC);
  view.setUint32(4, error);
  target.set(cookie, 8);
}
