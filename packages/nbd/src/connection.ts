/**
 * One client connection: handshake, then the transmission loop, then an orderly close.
 *
 * States (asserted on every transition):
 *
 *   HANDSHAKE ──GO/EXPORT_NAME──→ TRANSMISSION ──DISC / EOF / shutdown──→ DRAINING ──→ CLOSED
 *       │                              │ malformed request                     (in-flight
 *       └──abort / refused / EOF───────┴───────────────────────────────────→ CLOSED  replies sent)
 *
 * The transmission loop takes one request at a time from the SocketReader (which frames them
 * as they arrive, WRITE payloads received straight into pooled device buffers) and starts it
 * without waiting for it, so up to `inFlightMax` requests run concurrently (replies may go out
 * of order, as NBD allows). Before taking the next request the loop waits for a free slot and,
 * once more than 8 MiB of replies is queued, for the socket to drain; while it waits the
 * reader's read-ahead fills, then its staging buffer, then it pauses the socket, and the
 * client is held back by the kernel's flow control. A second limit counts the READ/WRITE bytes
 * in flight, so memory per connection stays below inFlightBytesMax plus one maximal request
 * plus the reader's read-ahead and staging (socket-reader.ts), whatever sizes the client asks
 * for.
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
import { type HandshakeResult, negotiate } from './handshake';
import type { SelectedContext } from './meta-context';
import type { PayloadPool } from './payload-pool';
import { Command, commandName, NbdErrno } from './protocol';
import { ReadMerger } from './read-merger';
import { ReplyWriter } from './reply-writer';
import { judgeRequest, type NbdRequest } from './request';
import { EndOfStream, type SocketReader } from './socket-reader';
import type { NbdTlsCredentials } from './tls-credentials';

/** How long an ending connection waits for the client to close before it is destroyed. */
const SHUTDOWN_GRACE_MS = 5000;

/** Buffer bytes a request holds while it runs: its READ reply or WRITE payload. */
function dataBytes(request: NbdRequest): number {
  return request.type === Command.READ || request.type === Command.WRITE ? request.length : 0;
}

export type ConnectionState = 'handshake' | 'transmission' | 'draining' | 'closed';

export interface ConnectionOptions {
  readonly exports: readonly NbdExport[];
  /** Requests of one connection executing at once. */
  readonly inFlightMax: number;
  /** READ/WRITE bytes of one connection executing at once (one request may exceed it alone). */
  readonly inFlightBytesMax: number;
  /** The buffer pool of an export, shared by the server's connections to it. */
  readonly poolOf: (target: NbdExport) => PayloadPool;
  /** A client that has not finished the handshake by then is disconnected. */
  readonly handshakeTimeoutMs: number;
  readonly isClosing: () => boolean;
  /** TLS credentials: STARTTLS is required before anything else (starttls.ts). */
  readonly tls?: NbdTlsCredentials;
  readonly log: (message: string) => void;
  readonly debug?: (message: string) => void;
}

/** What the transmission phase works with, fixed when the handshake ends. */
interface Transmission {
  /** The export chosen in the handshake. */
  readonly target: NbdExport;
  /** The metadata contexts selected for it: BLOCK_STATUS is allowed when there are any. */
  readonly metaContexts: readonly SelectedContext[];
  /** Its mode depends on STRUCTURED_REPLY. */
  readonly writer: ReplyWriter;
  readonly merger: ReadMerger;
  /** The export's buffer pool (shared by the server's connections to it). */
  readonly pool: PayloadPool;
}

export class Connection {
  state: ConnectionState = 'handshake';
  /** Set when the handshake ends. */
  private transmission: Transmission | undefined;
  private inFlight = 0;
  private inFlightBytes = 0;
  private slotFreed: (() => void) | undefined;
  private idle: (() => void) | undefined;

  /** `reader` reads `socket` (openSocketReader made the pair); both change on STARTTLS. */
  constructor(
    private socket: Socket,
    private reader: SocketReader,
    private readonly options: ConnectionOptions,
  ) {
    assert(options.inFlightMax >= 1, 'at least one request in flight');
    assert(options.exports.length > 0, 'a connection serves at least one export');
    socket.setNoDelay?.(true);
  }

  /** Serves the connection until it closes; never rejects. */
  async run(): Promise<void> {
    try {
      const result = await this.negotiateInTime();
      if (result.kind === 'close') {
        if (result.notable === true) this.options.log(`handshake ended: ${result.reason}`);
        else this.options.debug?.(`handshake ended: ${result.reason}`);
        await this.endGracefully();
        return;
      }
      const target = result.export;
      const writer = new ReplyWriter(this.socket, result.structured);
      const pool = this.options.poolOf(target);
      const merger = new ReadMerger(target, writer, pool, (request) => this.finish(request));
      this.transmission = { target, metaContexts: result.metaContexts, writer, merger, pool };
      this.transition('handshake', 'transmission');
      await this.transmit(this.transmission);
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

  /** The handshake, cut off after handshakeTimeoutMs (a silent client holds no slot forever). */
  private async negotiateInTime(): Promise<HandshakeResult> {
    const timer = setTimeout(() => {
      this.options.log(`closing connection: no handshake within ${this.options.handshakeTimeoutMs} ms`);
      this.socket.destroy();
    }, this.options.handshakeTimeoutMs);
    try {
      return await negotiate({
        socket: this.socket,
        reader: this.reader,
        exports: this.options.exports,
        isClosing: this.options.isClosing,
        tls: this.options.tls,
        onSecured: (socket, reader) => {
          this.socket = socket;
          this.reader = reader;
          socket.setNoDelay?.(true);
        },
        debug: this.options.debug,
      });
    } finally {
      clearTimeout(timer);
    }
  }

  /** Begins a graceful close: in-flight requests finish, then the socket ends. */
  shutdown(): void {
    if (this.state === 'handshake') {
      // Nothing to answer: say goodbye, and do not wait long for the client to agree.
      this.socket.end();
      setTimeout(() => this.socket.destroy(), SHUTDOWN_GRACE_MS).unref();
      return;
    }
    if (this.state === 'transmission') void this.drainAndEnd();
  }

  private async transmit(session: Transmission): Promise<void> {
    const { target, writer, pool } = session;
    // WRITE payloads go straight into pooled buffers of the export's device (aligned for
    // O_DIRECT when it has allocateBuffer), returned by releasePayload once answered.
    this.reader.startFraming((length) => pool.acquire(length));
    for (;;) {
      await this.waitForSlot();
      await writer.drained();
      const { request, payload } = await this.reader.nextFrame();
      if (request === undefined) return this.abort('request without the request magic');
      const verdict = judgeRequest(request, target, session.metaContexts.length > 0);
      if (verdict.kind === 'close') return this.abort(verdict.reason);
      this.options.debug?.(`${commandName(request.type)} ${request.offset}+${request.length}`);

      if (request.type === Command.DISC) return this.drainAndEnd();
      if (this.state !== 'transmission' || this.options.isClosing()) {
        writer.send(request.cookie, NbdErrno.ESHUTDOWN);
        releasePayload(payload, session.pool);
      } else if (verdict.kind === 'reply') {
        writer.send(request.cookie, verdict.error);
        releasePayload(payload, session.pool);
      } else {
        await this.waitForBytes(dataBytes(request));
        this.start(request, payload, session);
      }
    }
  }

  /** Starts a request; READs go through the merger, everything else runs on its own. */
  private start(request: NbdRequest, payload: Uint8Array | undefined, session: Transmission): void {
    this.inFlight++;
    this.inFlightBytes += dataBytes(request);
    assert(this.inFlight <= this.options.inFlightMax, 'in-flight limit holds');
    if (request.type === Command.READ && request.length > 0) {
      session.merger.add(request);
      return;
    }
    void execute(request, payload, session.target, session.writer, session.metaContexts).finally(() => {
      releasePayload(payload, session.pool);
      this.finish(request);
    });
  }

  /** A request was answered: frees its slot and wakes whoever waits for one, or for idle. */
  private finish(request: NbdRequest): void {
    this.inFlight--;
    this.inFlightBytes -= dataBytes(request);
    assert(this.inFlight >= 0, 'in-flight count stays non-negative');
    assert(this.inFlightBytes >= 0, 'in-flight bytes stay non-negative');
    const freed = this.slotFreed;
    this.slotFreed = undefined;
    freed?.();
    if (this.inFlight === 0) {
      const idle = this.idle;
      this.idle = undefined;
      idle?.();
    }
  }

  private waitForSlot(): Promise<void> {
    if (this.inFlight < this.options.inFlightMax) return Promise.resolve();
    return new Promise((resolve) => {
      this.slotFreed = resolve;
    });
  }

  /** Waits until `bytes` more fit the byte limit, or nothing is in flight. */
  private async waitForBytes(bytes: number): Promise<void> {
    while (this.inFlight > 0 && this.inFlightBytes + bytes > this.options.inFlightBytesMax) {
      await new Promise<void>((resolve) => {
        this.slotFreed = resolve;
      });
    }
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
    // Reads waiting for buffers to come back start now: a client that stopped reading its
    // replies must not hold up the close (the socket is destroyed after the grace period).
    this.transmission?.merger.unlimit();
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
      }, SHUTDOWN_GRACE_MS);
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

/** Returns a WRITE payload to its pool (the pool ignores buffers that are not its own). */
function releasePayload(payload: Uint8Array | undefined, pool: PayloadPool): void {
  if (payload !== undefined) pool.release(payload);
}
