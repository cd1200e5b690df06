/**
 * A small pipelined NBD client for end-to-end tests of fssd's exports: the writers, readers
 * and misbehaving peers of the reliability tests (crash, removal, soak, fuzz). Real clients
 * (qemu-io, nbdcopy, fio) cover interoperability; this one exists so a test knows exactly which
 * request was acknowledged, with which error, and can send what no real client sends.
 *
 * Protocol: fixed newstyle, NBD_OPT_EXPORT_NAME with NO_ZEROES, simple replies only (no
 * structured replies are asked for, so every reply is the 16-byte simple header, followed by
 * the data for a successful READ). Requests may be pipelined: replies are matched by handle.
 * When the server goes away, every pending request rejects with ECONNRESET and so does every
 * later one: a test sees a clean error, never a hang.
 */
import { connect, type Socket } from 'node:net';

const NBD_MAGIC = 0x4e42444d41474943n;
const IHAVEOPT = 0x49484156454f5054n;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;
const OPT_EXPORT_NAME = 1;
const CLIENT_FLAGS = 0b11; // FIXED_NEWSTYLE | NO_ZEROES

export const NbdCommand = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, WRITE_ZEROES: 6 } as const;
export const NbdTransmissionFlag = { HAS_FLAGS: 1, READ_ONLY: 2, SEND_FLUSH: 4 } as const;

/** A request the server answered with an error, or one that never got an answer. */
export class NbdRequestError extends Error {
  constructor(
    /** The NBD error value (an errno number), or 0 when the connection ended first. */
    readonly nbdError: number,
    /** 'ECONNRESET' when the connection ended before the reply; else the errno's name. */
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const ERRNO_NAMES: Readonly<Record<number, string>> = {
  1: 'EPERM',
  5: 'EIO',
  12: 'ENOMEM',
  22: 'EINVAL',
  28: 'ENOSPC',
  75: 'EOVERFLOW',
  95: 'ENOTSUP',
  108: 'ESHUTDOWN',
};

interface Pending {
  readonly command: number;
  readonly length: number;
  resolve(data: Buffer): void;
  reject(error: NbdRequestError): void;
}

export class NbdClient {
  /** The export's size in bytes. */
  readonly size: number;
  readonly transmissionFlags: number;
  private readonly pending = new Map<bigint, Pending>();
  private nextHandle = 1n;
  private buffered: Buffer = Buffer.alloc(0);
  private ended: NbdRequestError | undefined;

  private constructor(
    private readonly socket: Socket,
    size: number,
    transmissionFlags: number,
    rest: Buffer,
  ) {
    this.size = size;
    this.transmissionFlags = transmissionFlags;
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    const end = (): void => this.end(new NbdRequestError(0, 'ECONNRESET', 'NBD connection closed'));
    socket.on('close', end);
    socket.on('error', end);
    if (rest.length > 0) this.receive(rest);
  }

  get readOnly(): boolean {
    return (this.transmissionFlags & NbdTransmissionFlag.READ_ONLY) !== 0;
  }

  /** True once the connection ended (the server closed it, or we did). */
  get closed(): boolean {
    return this.ended !== undefined;
  }

  /** Connects to a unix socket and finishes the handshake for `exportName` (default export). */
  static async connect(path: string, exportName = ''): Promise<NbdClient> {
    const socket = await openSocket(path);
    const reader = new HandshakeReader(socket);
    try {
      const greeting = await reader.take(18);
      if (greeting.readBigUInt64BE(0) !== NBD_MAGIC || greeting.readBigUInt64BE(8) !== IHAVEOPT) {
        throw new Error('not an NBD newstyle server');
      }
      const flags = Buffer.alloc(4);
      flags.writeUInt32BE(CLIENT_FLAGS, 0);
      const name = Buffer.from(exportName, 'utf8');
      const option = Buffer.alloc(16);
      option.writeBigUInt64BE(IHAVEOPT, 0);
      option.writeUInt32BE(OPT_EXPORT_NAME, 8);
      option.writeUInt32BE(name.length, 12);
      socket.write(Buffer.concat([flags, option, name]));
      const info = await reader.take(10);
      const size = Number(info.readBigUInt64BE(0));
      return new NbdClient(socket, size, info.readUInt16BE(8), reader.release());
    } catch (error) {
      socket.destroy();
      throw error;
    }
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.send(NbdCommand.READ, offset, length);
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    await this.send(NbdCommand.WRITE, offset, data.length, data);
  }

  async flush(): Promise<void> {
    await this.send(NbdCommand.FLUSH, 0, 0);
  }

  /** Any request, including ones the export does not allow (TRIM on a snapshot, odd flags). */
  request(command: number, offset: number, length: number, payload?: Uint8Array, flags = 0): Promise<Buffer> {
    return this.send(command, offset, length, payload, flags);
  }

  /** NBD_CMD_DISC, then the socket ends. */
  disconnect(): void {
    if (this.ended !== undefined) return;
    this.socket.write(header(0, NbdCommand.DISC, this.nextHandle++, 0, 0));
    this.socket.end();
  }

  /** Drops the connection at once (a client that dies). */
  destroy(): void {
    this.socket.destroy();
  }

  /** Resolves once the connection has ended. */
  whenClosed(): Promise<void> {
    if (this.ended !== undefined) return Promise.resolve();
    return new Promise((resolve) => this.socket.once('close', () => resolve()));
  }

  private send(
    command: number,
    offset: number,
    length: number,
    payload?: Uint8Array,
    flags = 0,
  ): Promise<Buffer> {
    if (this.ended !== undefined) return Promise.reject(this.ended);
    const handle = this.nextHandle++;
    return new Promise((resolve, reject) => {
      this.pending.set(handle, { command, length, resolve, reject });
      const head = header(flags, command, handle, offset, length);
      this.socket.write(payload === undefined ? head : Buffer.concat([head, payload]));
    });
  }

  private receive(chunk: Buffer): void {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    while (this.buffered.length >= 16) {
      if (this.buffered.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC) {
        this.end(new NbdRequestError(0, 'EPROTO', 'reply without the simple reply magic'));
        this.socket.destroy();
        return;
      }
      const error = this.buffered.readUInt32BE(4);
      const handle = this.buffered.readBigUInt64BE(8);
      const pending = this.pending.get(handle);
      const dataBytes = pending?.command === NbdCommand.READ && error === 0 ? pending.length : 0;
      if (this.buffered.length < 16 + dataBytes) return;
      const data = Buffer.from(this.buffered.subarray(16, 16 + dataBytes));
      this.buffered = this.buffered.subarray(16 + dataBytes);
      if (pending === undefined) continue;
      this.pending.delete(handle);
      if (error === 0) pending.resolve(data);
      else {
        const code = ERRNO_NAMES[error] ?? `errno ${error}`;
        pending.reject(new NbdRequestError(error, code, `NBD error ${code}`));
      }
    }
  }

  private end(error: NbdRequestError): void {
    if (this.ended !== undefined) return;
    this.ended = error;
    for (const pending of this.pending.values()) pending.reject(error);
    this.pending.clear();
  }
}

function header(flags: number, command: number, handle: bigint, offset: number, length: number): Buffer {
  const head = Buffer.alloc(28);
  head.writeUInt32BE(REQUEST_MAGIC, 0);
  head.writeUInt16BE(flags, 4);
  head.writeUInt16BE(command, 6);
  head.writeBigUInt64BE(handle, 8);
  head.writeBigUInt64BE(BigInt(offset), 16);
  head.writeUInt32BE(length, 24);
  return head;
}

function openSocket(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ path });
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

/** Exact reads during the handshake; hands what it read beyond to the client. */
class HandshakeReader {
  private buffered: Buffer = Buffer.alloc(0);
  private waiter: (() => void) | undefined;
  private done = false;
  private readonly onData = (chunk: Buffer): void => {
    this.buffered = Buffer.concat([this.buffered, chunk]);
    this.waiter?.();
  };
  private readonly onEnd = (): void => {
    this.done = true;
    this.waiter?.();
  };

  constructor(private readonly socket: Socket) {
    socket.on('data', this.onData);
    socket.on('close', this.onEnd);
    socket.on('error', this.onEnd);
  }

  async take(length: number): Promise<Buffer> {
    while (this.buffered.length < length) {
      if (this.done) throw new Error('the server closed the connection during the handshake');
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
      });
      this.waiter = undefined;
    }
    const out = this.buffered.subarray(0, length);
    this.buffered = this.buffered.subarray(length);
    return out;
  }

  release(): Buffer {
    this.socket.off('data', this.onData);
    this.socket.off('close', this.onEnd);
    this.socket.off('error', this.onEnd);
    return this.buffered;
  }
}
