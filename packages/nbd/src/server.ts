/**
 * NbdServer: listens on a unix socket (or, only when asked, a TCP address), runs one
 * Connection per client, and shuts down gracefully.
 *
 * Lifecycle:  new → listen() → serving → close() → closed
 *   - listen() unlinks a stale unix socket first (a previous server that died leaves the file
 *     behind and listen would fail with EADDRINUSE), but only after checking that the path is
 *     a socket nobody answers on: a live server's socket is EADDRINUSE, any other file EEXIST.
 *     The socket file is chmod'ed to `socketMode` (0600: owner only, SPEC §4).
 *   - TCP binds exactly the host given; there is no default address.
 *   - close() stops accepting, asks every connection to finish what is in flight (requests
 *     arriving meanwhile get ESHUTDOWN), waits for them, and unlinks the socket file. Devices
 *     are the caller's: the server never closes them.
 *
 * Connections are independent: a client that sends garbage loses its own connection only.
 * The number of connections is capped (`connectionMax`); past it new clients are closed at
 * once rather than queued.
 */
import { promises as fs } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { assert, FssError, toFssError } from '@fss/core';
import { Connection } from './connection';
import { describeExport, type NbdExport, type NbdExportOptions } from './export';
import { PayloadPool } from './payload-pool';
import { openSocketReader } from './socket-reader';
import type { NbdTlsCredentials } from './tls-credentials';

/** Idle pooled buffers a server keeps per export for reuse (see PayloadPool). */
const POOL_RETAINED_BYTES_MAX = 64 * 1024 * 1024;

export interface NbdServerOptions {
  /** The exports, the first being the default (empty name). At least one. */
  exports: readonly NbdExportOptions[];
  /** Requests one connection may have executing at once (default 64, nbdcopy's depth). */
  inFlightMax?: number;
  /** READ/WRITE bytes one connection may have executing at once (default 64 MiB). */
  inFlightBytesMax?: number;
  /** Connections served at once (default 256). */
  connectionMax?: number;
  /** Clients must finish the handshake within this many ms (default 30 000). */
  handshakeTimeoutMs?: number;
  /**
   * Called with the new count whenever a client connects or its connection ends (after its
   * in-flight requests were answered), e.g. to unconfigure a unit when its last client goes
   * (FSS_UNCONFIG_ON_CLOSE).
   */
  onConnectionCountChange?: (count: number) => void;
  /**
   * TLS credentials (loadX509Credentials, loadPskCredentials): every client must then
   * STARTTLS before anything else (TLS-required mode). Default: no TLS.
   */
  tls?: NbdTlsCredentials;
  /**
   * Decides, before a byte is read or written, whether an accepted client is served: returns
   * why it is refused (logged, and the socket is closed without a greeting), or undefined to
   * serve it. fssd checks the peer's credentials here (SO_PEERCRED). Default: everyone.
   */
  admit?: (socket: Socket) => string | undefined;
  /** Operational messages (malformed requests, failures). Default: none. */
  log?: (message: string) => void;
  /** Per-option and per-request tracing. Default: none. */
  debug?: (message: string) => void;
}

/** Where to listen: a unix socket path, or a TCP host and port (only when asked). */
export type NbdListenAddress =
  | { readonly path: string; readonly socketMode?: number }
  | { readonly host: string; readonly port: number };

export class NbdServer {
  readonly exports: readonly NbdExport[];
  private readonly inFlightMax: number;
  private readonly inFlightBytesMax: number;
  private readonly connectionMax: number;
  private readonly handshakeTimeoutMs: number;
  private readonly tls: NbdTlsCredentials | undefined;
  private readonly log: (message: string) => void;
  private readonly debug: ((message: string) => void) | undefined;
  private readonly onConnectionCountChange: ((count: number) => void) | undefined;
  private readonly admit: ((socket: Socket) => string | undefined) | undefined;
  private readonly connections = new Set<Connection>();
  private readonly pools = new Map<NbdExport, PayloadPool>();
  private readonly running = new Set<Promise<void>>();
  private server: Server | undefined;
  private socketPath: string | undefined;
  private closing = false;

  constructor(options: NbdServerOptions) {
    assert(options.exports.length > 0, 'a server needs at least one export');
    this.exports = options.exports.map(describeExport);
    for (const each of this.exports) {
      const { device } = each;
      const pool =
        device.allocateBuffer === undefined
          ? PayloadPool.ofBuffers(POOL_RETAINED_BYTES_MAX)
          : new PayloadPool((length) => device.allocateBuffer!(length), POOL_RETAINED_BYTES_MAX);
      this.pools.set(each, pool);
    }
    const names = new Set(this.exports.map((each) => each.name));
    assert(names.size === this.exports.length, 'export names must be unique');
    this.inFlightMax = options.inFlightMax ?? 64;
    this.inFlightBytesMax = options.inFlightBytesMax ?? 64 * 1024 * 1024;
    assert(this.inFlightBytesMax >= 1, 'inFlightBytesMax must be ≥ 1');
    this.connectionMax = options.connectionMax ?? 256;
    this.handshakeTimeoutMs = options.handshakeTimeoutMs ?? 30_000;
    assert(Number.isInteger(this.inFlightMax) && this.inFlightMax >= 1, 'inFlightMax must be ≥ 1');
    assert(Number.isInteger(this.connectionMax) && this.connectionMax >= 1, 'connectionMax must be ≥ 1');
    this.tls = options.tls;
    this.log = options.log ?? (() => {});
    this.debug = options.debug;
    this.onConnectionCountChange = options.onConnectionCountChange;
    this.admit = options.admit;
  }

  /** Clients connected right now. */
  get connectionCount(): number {
    return this.connections.size;
  }

  /** Starts listening; resolves with the address (the TCP port when 0 was asked). */
  async listen(address: NbdListenAddress): Promise<NbdListenAddress> {
    assert(this.server === undefined, 'listen() is called once');
    assert(!this.closing, 'the server is closed');
    // pauseOnConnect: nothing is read before openSocketReader moves the handle into a socket
    // that reads straight into the connection's buffers.
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) =>
      this.serve(socket, true),
    );
    this.server = server;
    if ('path' in address) {
      await removeStaleSocket(address.path);
      await listenOn(server, { path: address.path });
      this.socketPath = address.path;
      await fs.chmod(address.path, address.socketMode ?? 0o600);
      return address;
    }
    assert(address.host !== '', 'a TCP listener needs an explicit host');
    await listenOn(server, { host: address.host, port: address.port });
    const bound = server.address();
    assert(bound !== null && typeof bound === 'object', 'a TCP server has an address');
    return { host: bound.address, port: bound.port };
  }

  /**
   * Serves an already connected socket (socket activation, socketpairs, tests). It may have
   * read already, so it is read through its 'data' chunks (one copy more than the sockets
   * listen() accepts).
   */
  accept(socket: Socket): void {
    this.serve(socket, false);
  }

  /** `neverRead`: the socket comes paused from our own listener (see openSocketReader). */
  private serve(accepted: Socket, neverRead: boolean): void {
    if (this.closing || this.connections.size >= this.connectionMax) {
      this.log(this.closing ? 'refusing a client: shutting down' : 'refusing a client: too many connections');
      accepted.destroy();
      return;
    }
    const refusal = this.admit?.(accepted);
    if (refusal !== undefined) {
      this.log(`refusing a client: ${refusal}`);
      accepted.destroy();
      return;
    }
    const { socket, reader } = openSocketReader(accepted, neverRead);
    assert(reader.receivedBytes === 0 || !neverRead, 'a fresh socket has read nothing');
    const connection = new Connection(socket, reader, {
      exports: this.exports,
      inFlightMax: this.inFlightMax,
      inFlightBytesMax: this.inFlightBytesMax,
      poolOf: (target) => this.pools.get(target)!,
      handshakeTimeoutMs: this.handshakeTimeoutMs,
      isClosing: () => this.closing,
      tls: this.tls,
      log: this.log,
      debug: this.debug,
    });
    this.connections.add(connection);
    const running = connection.run().finally(() => {
      this.connections.delete(connection);
      this.running.delete(running);
      this.onConnectionCountChange?.(this.connections.size);
    });
    this.running.add(running);
    this.onConnectionCountChange?.(this.connections.size);
  }

  /** Stops accepting, lets every connection answer what it has in flight, and unlinks the socket. */
  async close(): Promise<void> {
    if (this.closing) {
      await Promise.all([...this.running]);
      return;
    }
    this.closing = true;
    const server = this.server;
    const stopped =
      server === undefined
        ? Promise.resolve()
        : new Promise<void>((resolve) => server.close(() => resolve()));
    for (const connection of this.connections) connection.shutdown();
    await Promise.all([...this.running]);
    await stopped;
    if (this.socketPath !== undefined) await fs.rm(this.socketPath, { force: true });
  }
}

function listenOn(server: Server, options: { path: string } | { host: string; port: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error): void => reject(toFssError(error, { syscall: 'listen' }));
    server.once('error', onError);
    server.listen(options, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/**
 * Unlinks `path` if it is a unix socket nobody listens on. A live socket is EADDRINUSE; a
 * file of another kind is EEXIST (we never delete what is not ours to delete).
 */
async function removeStaleSocket(path: string): Promise<void> {
  let stats: import('node:fs').Stats;
  try {
    stats = await fs.lstat(path);
  } catch (error) {
    if ((error as { code?: string }).code === 'ENOENT') return;
    throw toFssError(error, { syscall: 'lstat', path });
  }
  if (!stats.isSocket())
    throw new FssError('EEXIST', 'exists and is not a socket', { syscall: 'listen', path });
  if (await isListening(path)) {
    throw new FssError('EADDRINUSE', 'another server is listening on it', { syscall: 'listen', path });
  }
  await fs.rm(path, { force: true });
}

function isListening(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createConnection({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}
