/**
 * One client connection: handshake, then the transmission loop, then an orderly close.
 *
 * States (asserted on every transition):
 *
 *   HANDSHAKE ──GO/EXPORT_NAME──→ TRANSMISSION ──DISC / EOF / shutdown──→ DRAINING ──→ CLOSED
 *       │                              │ malformed request                     (in-flight
 *       └──abort / refused / EOF───────┴───────────────────────────────────→ CLOSED  replies sent)
 *
 * The transmission loop reads one request at a time and starts it without waiting for it, so
 * up to `inFlightMax` requests run concurrently (replies may go out of order, as NBD allows).
 * Before reading the next request the loop waits for a free slot and for the socket to drain;
 * while it waits it reads nothing, the SocketReader's queue fills and pauses the socket, and
 * the client is held back by the kernel's flow control. Memory per connection is therefore
 * bounded by inFlightMax × (maximum payload) plus the reader's high-water mark.
 *
 * Shutdown (server.close()): requests already read run to completion and are answered;
 * requests that arrive afterwards are answered ESHUTDOWN; once nothing is in flight the
 * socket is ended, which flushes every queued reply before the FIN. DISC is the same, but
 * initiated by the client. A malformed request destroys the socket at once: nothing after it
 * can be framed, and it affects only this connection.
 */
import type { Socket } from 'node:net';
import { assert } from '@fss/core';
import { execute } from './commands';
import type { NbdExport } from './export';
import { negotiate } from './handshake';
import { Command, commandName, Limits, NbdErrno, REQUEST_BYTES } from './protocol';
import { ReplyWriter } from './reply-writer';
import { hasPayload, judgeRequest, type NbdRequest, parseRequest } from './request';
import { EndOfStream, SocketReader } from './socket-reader';

export type ConnectionState = 'handshake' | 'transmission' | 'draining' | 'closed';

export interface ConnectionOptions {
  readonly exports: readonly NbdExport[];
  /** Requests of one connection executing at once. */
  readonly inFlightMax: number;
  readonly isClosing: () => boolean;
  readonly log: (message: string) => void;
  readonly debug?: (message: string) => void;
}

export class Connection {
  state: ConnectionState = 'handshake';
  /** The export chosen in the handshake. */
  export: NbdExport | undefined;
  private readonly reader: SocketReader;
  private readonly writer: ReplyWriter;
  private inFlight = 0;
  private slotFreed: (() => void) | undefined;
  private idle: (() => void) | undefined;

  constructor(
    readonly socket: Socket,
    private readonly options: ConnectionOptions,
  ) {
    assert(options.inFlightMax >= 1, 'at least one request in flight');
    // Enough for one maximal WRITE plus its header to arrive while we wait for a slot.
    this.reader = new SocketReader(socket, Limits.PAYLOAD_BYTES_MAX + REQUEST_BYTES);
    this.writer = new ReplyWriter(socket);
    socket.setNoDelay?.(true);
  }

  /** Serves the connection until it closes; never rejects. */
  async run(): Promise<void> {
    try {
      const result = await negotiate({
        socket: this.socket,
        reader: this.reader,
        exports: this.options.exports,
        isClosing: this.options.isClosing,
        debug: this.options.debug,
      });
      if (result.kind === 'close') {
        this.options.debug?.(`handshake ended: ${result.reason}`);
        await this.endGracefully();
        return;
      }
      this.export = result.export;
      this.transition('handshake', 'transmission');
      await this.transmit(result.export);
    } catch (error) {
      if (error instanceof EndOfStream && this.state !== 'handshake') {
        // The client stopped sending (half-close or a plain close): it may still be waiting
        // for replies to what it sent, so answer those before ending.
        await this.drainAndEnd();
        await this.waitForIdle();
      } else {
        if (!(error instanceof EndOfStream)) this.options.log(`connection failed: ${String(error)}`);
        this.socket.destroy();
      }
    } finally {
      this.state = 'closed';
    }
  }

  /** Begins a graceful close: in-flight requests finish, then the socket ends. */
  shutdown(): void {
    if (this.state === 'handshake') {
      this.socket.end();
      return;
    }
    if (this.state === 'transmission') void this.drainAndEnd();
  }

  private async transmit(target: NbdExport): Promise<void> {
    for (;;) {
      await this.waitForSlot();
      await this.writer.drained();
      const header = await this.reader.read(REQUEST_BYTES);
      const request = parseRequest(header);
      if (request === undefined) return this.abort('request without the request magic');
      const verdict = judgeRequest(request, target);
      if (verdict.kind === 'close') return this.abort(verdict.reason);
      const payload = hasPayload(request) ? await this.readPayload(request, target) : undefined;
      this.options.debug?.(`${commandName(request.type)} ${request.offset}+${request.length}`);

      if (request.type === Command.DISC) return this.drainAndEnd();
      if (this.state !== 'transmission' || this.options.isClosing()) {
        this.writer.send(request.cookie, NbdErrno.ESHUTDOWN);
      } else if (verdict.kind === 'reply') {
        this.writer.send(request.cookie, verdict.error);
      } else {
        this.start(request, payload, target);
      }
    }
  }

  /** Reads a WRITE payload, into the device's own buffer when it has one. */
  private readPayload(request: NbdRequest, target: NbdExport): Promise<Uint8Array> {
    const { length } = request;
    if (target.device.allocateBuffer !== undefined && length > 0) {
      return this.reader.readInto(target.device.allocateBuffer(length).subarray(0, length));
    }
    return this.reader.read(length);
  }

  private start(request: NbdRequest, payload: Uint8Array | undefined, target: NbdExport): void {
    this.inFlight++;
    assert(this.inFlight <= this.options.inFlightMax, 'in-flight limit holds');
    void execute(request, payload, target, this.writer).finally(() => {
      this.inFlight--;
      assert(this.inFlight >= 0, 'in-flight count stays non-negative');
      const freed = this.slotFreed;
      this.slotFreed = undefined;
      freed?.();
      if (this.inFlight === 0) {
        const idle = this.idle;
        this.idle = undefined;
        idle?.();
      }
    });
  }

  private waitForSlot(): Promise<void> {
    if (this.inFlight < this.options.inFlightMax) return Promise.resolve();
    return new Promise((resolve) => {
      this.slotFreed = resolve;
    });
  }

  private waitForIdle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const previous = this.idle;
      this.idle = () => {
        previous?.();
        resolve();
      };
    });
  }

  /** DRAINING: answer what is in flight, then end the socket (queued replies go first). */
  private async drainAndEnd(): Promise<void> {
    if (this.state !== 'transmission') return;
    this.transition('transmission', 'draining');
    await this.waitForIdle();
    await this.endGracefully();
  }

  /** Ends the socket after queued writes, destroying it if the peer never finishes. */
  private async endGracefully(): Promise<void> {
    if (this.socket.destroyed) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.socket.destroy();
        resolve();
      }, 5000);
      timer.unref();
      this.socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      this.socket.end();
    });
  }

  /** A malformed request: nothing after it can be framed, so only this connection goes. */
  private abort(reason: string): void {
    this.options.log(`closing connection: ${reason}`);
    this.socket.destroy();
  }

  private transition(from: ConnectionState, to: ConnectionState): void {
    assert(this.state === from, `connection must be ${from} to become ${to}, is ${this.state}`);
    this.state = to;
  }
}
