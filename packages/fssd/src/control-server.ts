/**
 * The control socket: one JSON request per line in, one response line out, in order
 * (protocol/messages.ts). Each connection is served one request at a time, so a client may
 * pipeline and still get answers in order; different connections run concurrently (the
 * units and the mutex keep the state consistent).
 *
 * Robustness: nothing a client sends can crash the daemon. Lines that are not JSON, not a
 * known request, or mistyped get EINVAL on that line and the connection stays usable; a line
 * longer than REQUEST_BYTES_MAX gets EINVAL and the connection is closed (we cannot tell
 * where the next request starts). Each connection may queue a bounded number of requests;
 * past that it is closed. Unexpected exceptions become EIO answers and a log line.
 *
 * Who may connect: the socket is 0600 in a 0700 directory, and on top of that every accepted
 * connection's peer credentials (SO_PEERCRED) must be root or the daemon's own user. A peer
 * that is neither gets one EACCES answer (id null) and the connection is closed before any
 * request is read: a loosened mode, or a descriptor handed to another user, lets nobody else
 * configure units or claim origins.
 */
import { chmod } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { peerRefusal } from '@fss/blockdev-linux';
import {
  type ControlRequest,
  type DaemonStatus,
  type IoctlRequest,
  LineSplitter,
  parseUnitName,
  REQUEST_BYTES_MAX,
  type RequestId,
  requestIdOf,
  toWireError,
  validateRequest,
} from '@fss/control';
import type { Mutex } from '@fss/core';
import { AssertionError, FssError, toFssError } from '@fss/core';
import type { Log } from './log';
import type { OriginTable } from './origins';
import type { UnitTable } from './units';

/** Requests one connection may have waiting; a client flooding us is cut off. */
const QUEUED_REQUESTS_MAX = 64;
/** How long a peer cut off with an error answer may take to read it and go. */
const ANSWER_LINGER_MS = 2000;
/** Control connections served at once. */
const CONNECTIONS_MAX = 256;

export interface ControlContext {
  units: UnitTable;
  origins: OriginTable;
  mutex: Mutex;
  log: Log;
  status(): Promise<DaemonStatus>;
  /** The run directory (ping's answer). */
  readonly runDir: string;
  /** Why a connection's peer may not use the daemon, or undefined (default: peerRefusal). */
  refusePeer?: (socket: Socket) => string | undefined;
}

/**
 * Sends a connection-level error (id null) and closes. What the peer still sends is read and
 * dropped: a socket that stopped reading would never see the peer's end and would stay open
 * (a client could pin CONNECTIONS_MAX of them with 64 KiB lines), and a peer still writing
 * its request would get EPIPE before it read the answer. A peer that never ends is destroyed
 * after ANSWER_LINGER_MS.
 */
function answerAndClose(socket: Socket, error: FssError): void {
  socket.resume();
  socket.end(`${JSON.stringify({ id: null, ok: false, error: toWireError(error) })}\n`);
  setTimeout(() => socket.destroy(), ANSWER_LINGER_MS).unref();
}

export class ControlServer {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private nextConnection = 1;

  constructor(private readonly context: ControlContext) {}

  async listen(path: string): Promise<void> {
    // Half-open: a client may send its requests and shut down its side; it still gets answers.
    const server = createServer({ allowHalfOpen: true }, (socket) => this.accept(socket));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ path }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    await chmod(path, 0o600);
  }

  /** Stops accepting and drops every connection. */
  async close(): Promise<void> {
    const server = this.server;
    if (server === undefined) return;
    this.server = undefined;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    await closed;
  }

  private accept(socket: Socket): void {
    if (this.sockets.size >= CONNECTIONS_MAX) {
      socket.destroy();
      return;
    }
    const refusal = (this.context.refusePeer ?? peerRefusal)(socket);
    if (refusal !== undefined) {
      this.refuse(socket, refusal);
      return;
    }
    this.sockets.add(socket);
    const connection = this.nextConnection++;
    const splitter = new LineSplitter(REQUEST_BYTES_MAX);
    const queue: string[] = [];
    let busy = false;
    let ended = false;
    let cutOff = false;
    const respond = (line: string): void => {
      if (!socket.destroyed && !socket.writableEnded) socket.write(`${line}\n`);
    };
    const pump = async (): Promise<void> => {
      if (busy) return;
      busy = true;
      while (queue.length > 0 && !socket.destroyed) {
        respond(await this.handle(queue.shift() as string, connection));
      }
      busy = false;
      if (ended && !socket.destroyed) socket.end();
    };
    socket.on('data', (chunk: Buffer) => {
      if (cutOff) return; // the rest of an oversized line, read and dropped
      const { lines, overflow } = splitter.push(chunk);
      queue.push(...lines);
      if (overflow) {
        queue.length = 0;
        cutOff = true;
        const error = new FssError('EINVAL', `request longer than ${REQUEST_BYTES_MAX} bytes`, {
          syscall: 'request',
        });
        answerAndClose(socket, error);
        return;
      }
      if (queue.length > QUEUED_REQUESTS_MAX) {
        this.context.log(`control: connection ${connection} queued too many requests; closed`);
        socket.destroy();
        return;
      }
      void pump();
    });
    socket.on('end', () => {
      ended = true;
      if (!busy) socket.end();
    });
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      this.sockets.delete(socket);
      this.context.units.connectionClosed(connection).catch((error: unknown) => {
        this.context.log(`control: closing connection ${connection}: ${String(error)}`);
      });
    });
  }

  /** Tells a peer that may not use the daemon why (EACCES), logs it, and closes. */
  private refuse(socket: Socket, refusal: string): void {
    this.context.log(`control: refusing a client: ${refusal}`);
    const error = new FssError('EACCES', `fssd serves root and its own user only: ${refusal}`, {
      syscall: 'connect',
    });
    // Tracked like any other connection, so a shutdown destroys it.
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    socket.on('data', () => undefined); // never parsed
    answerAndClose(socket, error);
  }

  /** Answers one line; never throws. */
  private async handle(line: string, connection: number): Promise<string> {
    let id: RequestId = null;
    try {
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        throw new FssError('EINVAL', 'request is not JSON', { syscall: 'request' });
      }
      id = requestIdOf(parsed);
      const request = validateRequest(parsed);
      const result = await this.dispatch(request, connection);
      return JSON.stringify({ id, ok: true, result });
    } catch (error) {
      if (error instanceof AssertionError || !(error instanceof FssError)) {
        this.context.log(
          `control: unexpected failure: ${error instanceof Error ? error.stack : String(error)}`,
        );
      }
      return JSON.stringify({ id, ok: false, error: toWireError(toFssError(error)) });
    }
  }

  private async dispatch(request: ControlRequest, connection: number): Promise<unknown> {
    const { origins, mutex } = this.context;
    switch (request.op) {
      case 'FSSIOCSET':
      case 'FSSIOCGET':
      case 'FSSIOCCLR':
      case 'FSSIOFSET':
      case 'FSSIOFGET':
        return this.ioctl(request, connection);
      case 'origin-add':
        return mutex.run(async () =>
          origins.info(
            await origins.add(request.path, { name: request.name, explicit: true, attach: request.attach }),
          ),
        );
      case 'origin-rm':
        return mutex.run(async () => {
          const entry = origins.get(request.name);
          if (entry === undefined) {
            throw new FssError('ENOENT', `no origin named ${request.name}`, { syscall: 'origin-rm' });
          }
          if (entry.units.size > 0) {
            const names = [...entry.units].map((unit) => `fss${unit}`).join(', ');
            throw new FssError('EBUSY', `origin ${entry.name} has configured units (${names})`, {
              syscall: 'origin-rm',
            });
          }
          const clients = entry.export.clients();
          if (clients > 0 && request.force !== true) {
            throw new FssError(
              'EBUSY',
              `origin ${entry.name} has ${clients} NBD client${clients === 1 ? '' : 's'} connected to its export; ` +
                `disconnect them, or use fss origin rm --force ${entry.name} to disconnect them`,
              { syscall: 'origin-rm' },
            );
          }
          await origins.release(entry);
          return {};
        });
      case 'origin-ls':
        return origins.entries.map((entry) => origins.info(entry));
      case 'rollback':
        return this.context.units.rollback(unitIndex(request.unit, 'rollback'));
      case 'rollback-status':
        return this.context.units.rollbackStatus(unitIndex(request.unit, 'rollback-status'));
      case 'changed':
        return this.context.units.changed(
          unitIndex(request.unit, 'changed'),
          request.since === undefined ? undefined : unitIndex(request.since, 'changed'),
        );
      case 'tcp-export':
        return this.context.units.tcpExport(unitIndex(request.unit, 'tcp-export'), request);
      case 'tcp-unexport':
        await this.context.units.tcpUnexport(unitIndex(request.unit, 'tcp-unexport'));
        return {};
      case 'status':
        return this.context.status();
      case 'ping':
        return { pid: process.pid, runDir: this.context.runDir };
    }
  }

  private async ioctl(request: IoctlRequest, connection: number): Promise<unknown> {
    const { units } = this.context;
    const index = unitIndex(request.unit, 'open');
    const unit = units.open(index, connection);
    const needsWrite = request.op === 'FSSIOCSET' || request.op === 'FSSIOCCLR';
    if (needsWrite && request.mode !== 'rw') {
      throw new FssError('EPERM', `${request.op} needs the unit open for writing ("mode":"rw")`, {
        syscall: request.op,
      });
    }
    switch (request.op) {
      case 'FSSIOCSET':
        return units.set(unit, request.arg, {
          backupSize: request.backup_size,
          onFull: request.on_full,
          onFullTimeoutMs: request.on_full_timeout_ms,
        });
      case 'FSSIOCGET':
        return units.get(unit);
      case 'FSSIOCCLR':
        await units.clear(unit);
        return {};
      case 'FSSIOFSET':
        units.setFlags(unit, request.arg);
        return {};
      case 'FSSIOFGET':
        return { flags: units.getFlags(unit) };
    }
  }
}

/** The number of the unit `name` names; EINVAL when it is not a unit name. */
function unitIndex(name: string, syscall: string): number {
  const index = parseUnitName(name);
  if (index === undefined) {
    throw new FssError('EINVAL', `not an fss unit name: "${name.slice(0, 64)}"`, { syscall });
  }
  return index;
}
