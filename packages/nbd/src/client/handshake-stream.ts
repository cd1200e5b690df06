/**
 * Exact-length reads during the NBD handshake, before the client's reply parser takes over
 * the socket. Whatever arrived beyond the last message is handed over by release().
 */
import type { Socket } from 'node:net';
import { FssError } from '@fss/core';

export class HandshakeStream {
  private buffered: Buffer = Buffer.alloc(0);
  private waiter: (() => void) | undefined;
  private ended = false;
  private readonly onData = (chunk: Buffer): void => {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    this.waiter?.();
  };
  private readonly onEnd = (): void => {
    this.ended = true;
    this.waiter?.();
  };

  constructor(
    private readonly socket: Socket,
    private readonly path: string,
  ) {
    socket.on('data', this.onData);
    socket.on('close', this.onEnd);
    socket.on('error', this.onEnd);
  }

  write(data: Buffer): void {
    this.socket.write(data);
  }

  /** Resolves with exactly `length` bytes; ECONNRESET if the server goes away first. */
  async take(length: number): Promise<Buffer> {
    while (this.buffered.length < length) {
      if (this.ended) {
        throw new FssError('ECONNRESET', 'the NBD server closed the connection during the handshake', {
          path: this.path,
        });
      }
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
      });
      this.waiter = undefined;
    }
    const out = this.buffered.subarray(0, length);
    this.buffered = this.buffered.subarray(length);
    return out;
  }

  /** Stops listening and returns the bytes read past the handshake. */
  release(): Buffer {
    this.socket.off('data', this.onData);
    this.socket.off('close', this.onEnd);
    this.socket.off('error', this.onEnd);
    return this.buffered;
  }
}
