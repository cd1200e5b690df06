/**
 * SocketReader: exact-length reads from a socket, with flow control.
 *
 * A socket delivers bytes in chunks of any size; the protocol wants "the next 28 bytes", "the
 * next N payload bytes". The reader queues chunks and hands out exact lengths. It holds at
 * most `highWaterBytes` before pausing the socket, so a client that pipelines faster than we
 * answer is held back by TCP/unix-socket flow control, not by our memory: the connection
 * simply stops calling read() while its in-flight limit is reached, the queue fills, and the
 * socket is paused until the reader drains below the mark.
 *
 * State: `chunks` (queued bytes, oldest first, `head` bytes of the first already consumed),
 * one pending `waiter` at most (reads are issued one at a time by one loop), and `ended` once
 * the socket ended or failed; after that every read that cannot be satisfied rejects with
 * EndOfStream.
 */
import type { Socket } from 'node:net';
import { assert } from '@fss/core';

/** The peer closed (or the socket failed) before the bytes we needed arrived. */
export class EndOfStream extends Error {
  override readonly name = 'EndOfStream';
}

interface Waiter {
  readonly target: Uint8Array;
  readonly resolve: (bytes: Uint8Array) => void;
  readonly reject: (error: Error) => void;
}

export class SocketReader {
  private readonly chunks: Buffer[] = [];
  private head = 0;
  private queuedBytes = 0;
  private waiter: Waiter | undefined;
  private ended = false;
  private paused = false;

  constructor(
    private readonly socket: Socket,
    private readonly highWaterBytes: number,
  ) {
    assert(highWaterBytes > 0, 'high-water mark must be positive');
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => this.onEnd());
    socket.on('close', () => this.onEnd());
    socket.on('error', () => this.onEnd());
  }

  /**
   * Resolves with exactly `length` bytes (a fresh buffer, or a view of a received chunk when
   * the bytes lie in one). One read at a time.
   */
  read(length: number): Promise<Uint8Array> {
    assert(Number.isSafeInteger(length) && length >= 0, 'read length must be a byte count');
    if (length === 0) return Promise.resolve(new Uint8Array(0));
    if (length <= this.firstChunkRemaining()) {
      return Promise.resolve(this.takeView(length));
    }
    return this.readInto(new Uint8Array(length));
  }

  /** Fills all of `target` (e.g. a device's aligned buffer), resolving with it. */
  readInto(target: Uint8Array): Promise<Uint8Array> {
    assert(this.waiter === undefined, 'one read at a time');
    if (this.queuedBytes >= target.length) {
      this.copyOut(target);
      return Promise.resolve(target);
    }
    if (this.ended) return Promise.reject(new EndOfStream('connection closed'));
    return new Promise((resolve, reject) => {
      this.waiter = { target, resolve, reject };
      this.updateFlow();
    });
  }

  private onData(chunk: Buffer): void {
    if (this.ended) return;
    this.chunks.push(chunk);
    this.queuedBytes += chunk.length;
    const waiter = this.waiter;
    if (waiter !== undefined && this.queuedBytes >= waiter.target.length) {
      this.waiter = undefined;
      this.copyOut(waiter.target);
      waiter.resolve(waiter.target);
    }
    this.updateFlow();
  }

  private onEnd(): void {
    if (this.ended) return;
    this.ended = true;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(new EndOfStream('connection closed'));
  }

  /** Pauses the socket above the mark unless a read waits for more; resumes below it. */
  private updateFlow(): void {
    const full = this.queuedBytes >= this.highWaterBytes && this.waiter === undefined;
    if (full && !this.paused) {
      this.paused = true;
      this.socket.pause();
    } else if (!full && this.paused) {
      this.paused = false;
      this.socket.resume();
    }
  }

  private firstChunkRemaining(): number {
    const first = this.chunks[0];
    return first === undefined ? 0 : first.length - this.head;
  }

  /** Precondition: `length` ≤ the bytes left in the first chunk. */
  private takeView(length: number): Uint8Array {
    const first = this.chunks[0]!;
    const view = first.subarray(this.head, this.head + length);
    this.consume(length);
    return view;
  }

  /** Precondition: `queuedBytes` ≥ target.length. */
  private copyOut(target: Uint8Array): void {
    assert(this.queuedBytes >= target.length, 'copyOut needs the bytes queued');
    let at = 0;
    while (at < target.length) {
      const first = this.chunks[0]!;
      const length = Math.min(first.length - this.head, target.length - at);
      target.set(first.subarray(this.head, this.head + length), at);
      this.consume(length);
      at += length;
    }
    assert(at === target.length, 'copyOut filled the target');
  }

  private consume(length: number): void {
    this.head += length;
    this.queuedBytes -= length;
    if (this.head === this.chunks[0]!.length) {
      this.chunks.shift();
      this.head = 0;
    }
    this.updateFlow();
  }
}
