/**
 * A production NBD client for reading an export over a unix socket: what `fss dump` and
 * `fss backup` read a snapshot with. Pipelined: any number of READs may be in flight on the one
 * connection; replies are matched by cookie, in whatever order the server sends them.
 *
 * Handshake: fixed newstyle with NO_ZEROES, then NBD_OPT_GO for the export (asking for
 * INFO_BLOCK_SIZE, so the client learns the largest payload the server accepts). Without
 * NBD_OPT_STRUCTURED_REPLY every reply is simple: a 16-byte header, then for a successful READ
 * exactly the requested bytes. That is all a reader needs, and it keeps the receive path to one
 * header parse and one copy per request.
 *
 * Receive path: the socket's chunks are consumed in place. A reply header that spans chunks is
 * gathered in a 16-byte buffer; read data is copied straight into the request's own buffer
 * (allocated once, when the request is sent), never concatenated with what follows it.
 *
 * Failures are FssErrors: the server's NBD error value becomes its errno name (an invalid
 * snapshot reads as EIO), a connection that ends with requests pending rejects them with
 * ECONNRESET (and every later request too), a malformed reply is EPROTO and closes the
 * connection. Nothing hangs.
 */
import { connect, type Socket } from 'node:net';
import { assert, errnoCodeOf, FssError, toFssError } from '@fss/core';
import {
  ClientFlag,
  Command,
  HandshakeFlag,
  IHAVEOPT,
  Info,
  Limits,
  NBD_MAGIC,
  OPTION_REPLY_MAGIC,
  Option,
  REQUEST_BYTES,
  REQUEST_MAGIC,
  Reply,
  replyName,
  SIMPLE_REPLY_BYTES,
  SIMPLE_REPLY_MAGIC,
  TransmissionFlag,
} from '../protocol';
import { HandshakeStream } from './handshake-stream';

/** What the server told us about the export during the handshake. */
export interface NbdExportInfo {
  /** The export's size in bytes. */
  readonly size: number;
  readonly transmissionFlags: number;
  readonly readOnly: boolean;
  /** INFO_BLOCK_SIZE, or the protocol's defaults when the server sent none. */
  readonly minimumBlockBytes: number;
  readonly preferredBlockBytes: number;
  readonly maximumPayloadBytes: number;
}

export interface NbdClientOptions {
  /** The export to open (default: the server's default export, the empty name). */
  readonly exportName?: string;
}

/** The spec's defaults when the server sends no INFO_BLOCK_SIZE. */
const DEFAULT_MINIMUM_BLOCK_BYTES = 1;
const DEFAULT_PREFERRED_BLOCK_BYTES = 4096;
const DEFAULT_MAXIMUM_PAYLOAD_BYTES = 32 * 1024 * 1024;

interface PendingRead {
  readonly data: Buffer;
  readonly resolve: (data: Buffer) => void;
  readonly reject: (error: FssError) => void;
}

export class NbdClient {
  readonly info: NbdExportInfo;
  private readonly pending = new Map<bigint, PendingRead>();
  private nextCookie = 1n;
  /** The reply header being gathered, and how much of it has arrived. */
  private readonly header = Buffer.alloc(SIMPLE_REPLY_BYTES);
  private headerBytes = 0;
  /** The READ whose data is arriving, and how much of it has. */
  private receiving: PendingRead | undefined;
  private receivedBytes = 0;
  private ended: FssError | undefined;

  private constructor(
    private readonly socket: Socket,
    private readonly path: string,
    info: NbdExportInfo,
    rest: Buffer,
  ) {
    this.info = info;
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('error', (error) => this.end(this.connectionError(`NBD connection failed: ${error.message}`)));
    socket.on('close', () => this.end(this.connectionError('the NBD server closed the connection')));
    if (rest.length > 0) this.receive(rest);
  }

  /** Connects to the NBD server listening on the unix socket `path` and opens the export. */
  static async connect(path: string, options: NbdClientOptions = {}): Promise<NbdClient> {
    const socket = await openSocket(path);
    const stream = new HandshakeStream(socket, path);
    try {
      const info = await negotiate(stream, options.exportName ?? '', path);
      return new NbdClient(socket, path, info, stream.release());
    } catch (error) {
      socket.destroy();
      throw error;
    }
  }

  get size(): number {
    return this.info.size;
  }

  /** True once the connection has ended; every request then fails. */
  get closed(): boolean {
    return this.ended !== undefined;
  }

  /** Requests sent and not yet answered. */
  get inFlight(): number {
    return this.pending.size;
  }

  /**
   * Reads `length` bytes at `offset`. Preconditions: the range lies inside the export and
   * `length` is at most the server's maximum payload (split larger reads: see readRanges).
   */
  read(offset: number, length: number): Promise<Buffer> {
    assert(Number.isSafeInteger(offset) && offset >= 0, 'read offset must be a non-negative integer');
    assert(length > 0 && length <= this.info.maximumPayloadBytes, 'read length must fit one payload');
    if (offset + length > this.info.size) {
      return Promise.reject(
        new FssError('EINVAL', `read past the end of the export (${this.info.size} bytes)`),
      );
    }
    if (this.ended !== undefined) return Promise.reject(this.ended);
    const cookie = this.nextCookie++;
    const data = Buffer.allocUnsafe(length);
    return new Promise((resolve, reject) => {
      this.pending.set(cookie, { data, resolve, reject });
      this.socket.write(requestHeader(Command.READ, cookie, offset, length));
    });
  }

  /** NBD_CMD_DISC after the requests in flight, then the socket ends. Idempotent. */
  close(): void {
    if (this.ended === undefined) {
      this.socket.write(requestHeader(Command.DISC, this.nextCookie++, 0, 0));
      this.socket.end();
    }
    this.end(new FssError('ECANCELED', 'the NBD client was closed', { path: this.path }));
  }

  /** Drops the connection at once; pending reads reject with ECANCELED. */
  destroy(): void {
    this.end(new FssError('ECANCELED', 'the NBD client was closed', { path: this.path }));
    this.socket.destroy();
  }

  /** Consumes one socket chunk: header bytes, then (for a successful READ) its data. */
  private receive(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length && this.ended === undefined) {
      if (this.receiving !== undefined) {
        at += this.receiveData(chunk, at);
        continue;
      }
      const take = Math.min(SIMPLE_REPLY_BYTES - this.headerBytes, chunk.length - at);
      chunk.copy(this.header, this.headerBytes, at, at + take);
      this.headerBytes += take;
      at += take;
      if (this.headerBytes === SIMPLE_REPLY_BYTES) {
        this.headerBytes = 0;
        this.onHeader();
      }
    }
  }

  private receiveData(chunk: Buffer, at: number): number {
    const target = this.receiving as PendingRead;
    const take = Math.min(target.data.length - this.receivedBytes, chunk.length - at);
    chunk.copy(target.data, this.receivedBytes, at, at + take);
    this.receivedBytes += take;
    if (this.receivedBytes === target.data.length) {
      this.receiving = undefined;
      this.receivedBytes = 0;
      target.resolve(target.data);
    }
    return take;
  }

  private onHeader(): void {
    if (this.header.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC) {
      this.protocolFailure('a reply without the simple reply magic');
      return;
    }
    const error = this.header.readUInt32BE(4);
    const cookie = this.header.readBigUInt64BE(8);
    const pending = this.pending.get(cookie);
    if (pending === undefined) {
      this.protocolFailure(`a reply for cookie ${cookie}, which has no request in flight`);
      return;
    }
    this.pending.delete(cookie);
    if (error !== 0) {
      // The wire carries errno numbers (EPERM, EIO, ..., ENOTSUP as 95, core's EOPNOTSUPP).
      const code = errnoCodeOf(error) ?? 'EIO';
      pending.reject(
        new FssError(code, `the NBD server answered ${code}`, { syscall: 'read', path: this.path }),
      );
      return;
    }
    this.receiving = pending;
    this.receivedBytes = 0;
  }

  private protocolFailure(what: string): void {
    this.end(new FssError('EPROTO', `the NBD server sent ${what}`, { path: this.path }));
    this.socket.destroy();
  }

  private connectionError(message: string): FssError {
    return new FssError('ECONNRESET', message, { path: this.path });
  }

  /** Latches the first reason the connection ended and rejects everything pending with it. */
  private end(error: FssError): void {
    if (this.ended !== undefined) return;
    this.ended = error;
    if (this.receiving !== undefined) this.receiving.reject(error);
    this.receiving = undefined;
    for (const pending of this.pending.values()) pending.reject(error);
    this.pending.clear();
  }
}

/** Greeting, client flags, then NBD_OPT_GO; resolves with what the server said. */
async function negotiate(stream: HandshakeStream, exportName: string, path: string): Promise<NbdExportInfo> {
  const greeting = await stream.take(18);
  if (greeting.readBigUInt64BE(0) !== NBD_MAGIC || greeting.readBigUInt64BE(8) !== IHAVEOPT) {
    throw new FssError('EPROTO', 'not an NBD newstyle server', { path });
  }
  if ((greeting.readUInt16BE(16) & HandshakeFlag.FIXED_NEWSTYLE) === 0) {
    throw new FssError('EPROTO', 'the NBD server does not speak fixed newstyle', { path });
  }
  const noZeroes = (greeting.readUInt16BE(16) & HandshakeFlag.NO_ZEROES) !== 0;
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(ClientFlag.FIXED_NEWSTYLE | (noZeroes ? ClientFlag.NO_ZEROES : 0), 0);
  stream.write(Buffer.concat([flags, goOption(exportName)]));
  let size: number | undefined;
  let transmissionFlags = 0;
  const blocks = [DEFAULT_MINIMUM_BLOCK_BYTES, DEFAULT_PREFERRED_BLOCK_BYTES, DEFAULT_MAXIMUM_PAYLOAD_BYTES];
  for (;;) {
    const head = await stream.take(20);
    if (head.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC || head.readUInt32BE(8) !== Option.GO) {
      throw new FssError('EPROTO', 'a malformed NBD option reply', { path });
    }
    const type = head.readUInt32BE(12);
    const length = head.readUInt32BE(16);
    if (length > Limits.OPTION_DATA_BYTES_MAX)
      throw new FssError('EPROTO', 'an oversized NBD option reply', { path });
    const body = await stream.take(length);
    if (type === Reply.ACK) break;
    if ((type & 0x80000000) !== 0) {
      const detail = body.length > 0 ? `: ${body.toString('utf8')}` : '';
      const code = type === Reply.ERR_UNKNOWN ? 'ENOENT' : 'EPROTO';
      throw new FssError(
        code,
        `the NBD server refused export "${exportName}" (${replyName(type)})${detail}`,
        { path },
      );
    }
    if (type !== Reply.INFO || body.length < 2) continue;
    const info = body.readUInt16BE(0);
    if (info === Info.EXPORT && body.length >= 12) {
      size = Number(body.readBigUInt64BE(2));
      transmissionFlags = body.readUInt16BE(10);
    } else if (info === Info.BLOCK_SIZE && body.length >= 14) {
      blocks[0] = body.readUInt32BE(2);
      blocks[1] = body.readUInt32BE(6);
      blocks[2] = body.readUInt32BE(10);
    }
  }
  if (size === undefined || !Number.isSafeInteger(size)) {
    throw new FssError('EPROTO', 'the NBD server sent no usable export size', { path });
  }
  return {
    size,
    transmissionFlags,
    readOnly: (transmissionFlags & TransmissionFlag.READ_ONLY) !== 0,
    minimumBlockBytes: blocks[0] as number,
    preferredBlockBytes: blocks[1] as number,
    maximumPayloadBytes: Math.min(blocks[2] as number, DEFAULT_MAXIMUM_PAYLOAD_BYTES),
  };
}

/** NBD_OPT_GO for `exportName`, asking for INFO_BLOCK_SIZE. */
function goOption(exportName: string): Buffer {
  const name = Buffer.from(exportName, 'utf8');
  const data = Buffer.alloc(4 + name.length + 2 + 2);
  data.writeUInt32BE(name.length, 0);
  name.copy(data, 4);
  data.writeUInt16BE(1, 4 + name.length);
  data.writeUInt16BE(Info.BLOCK_SIZE, 6 + name.length);
  const head = Buffer.alloc(16);
  head.writeBigUInt64BE(IHAVEOPT, 0);
  head.writeUInt32BE(Option.GO, 8);
  head.writeUInt32BE(data.length, 12);
  return Buffer.concat([head, data]);
}

function requestHeader(command: number, cookie: bigint, offset: number, length: number): Buffer {
  const head = Buffer.alloc(REQUEST_BYTES);
  head.writeUInt32BE(REQUEST_MAGIC, 0);
  head.writeUInt16BE(0, 4);
  head.writeUInt16BE(command, 6);
  head.writeBigUInt64BE(cookie, 8);
  head.writeBigUInt64BE(BigInt(offset), 16);
  head.writeUInt32BE(length, 24);
  return head;
}

function openSocket(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ path });
    socket.once('connect', () => {
      socket.off('error', onError);
      resolve(socket);
    });
    const onError = (error: NodeJS.ErrnoException): void => {
      const { code } = toFssError(error);
      reject(
        new FssError(code, 'cannot connect to the NBD server', { syscall: 'connect', path, cause: error }),
      );
    };
    socket.once('error', onError);
  });
}
