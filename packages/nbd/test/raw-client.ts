/**
 * A deliberately small NBD client for protocol tests: it speaks exactly the bytes the tests
 * choose (including wrong ones), and reads replies by their fixed layouts. Real-client
 * coverage comes from nbdinfo/nbdcopy/qemu in clients.test.ts; this one exists to assert the
 * byte-level answers (error values, option replies) that real clients hide.
 */
import { connect, type Socket } from 'node:net';
import {
  IHAVEOPT,
  NBD_MAGIC,
  OPTION_REPLY_MAGIC,
  Option,
  REQUEST_MAGIC,
  Reply,
  SIMPLE_REPLY_MAGIC,
} from '../src/protocol';

/** Buffered exact reads from a socket, resolving `undefined` at EOF. */
export class RawSocket {
  private buffered = Buffer.alloc(0);
  private ended = false;
  private wake: (() => void) | undefined;

  constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, chunk]);
      this.wake?.();
    });
    const end = (): void => {
      this.ended = true;
      this.wake?.();
    };
    socket.on('end', end);
    socket.on('close', end);
    socket.on('error', end);
  }

  /** Connects to a unix socket path or a TCP address. */
  static open(target: string | { host: string; port: number }): Promise<RawSocket> {
    return new Promise((resolve, reject) => {
      const socket = typeof target === 'string' ? connect({ path: target }) : connect(target);
      socket.once('connect', () => resolve(new RawSocket(socket)));
      socket.once('error', reject);
    });
  }

  async read(length: number): Promise<Buffer | undefined> {
    while (this.buffered.length < length) {
      if (this.ended) return undefined;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
      this.wake = undefined;
    }
    const out = this.buffered.subarray(0, length);
    this.buffered = this.buffered.subarray(length);
    return out;
  }

  /** Resolves true once the server has closed the connection. */
  async closed(): Promise<boolean> {
    while (!this.ended) {
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
      this.wake = undefined;
    }
    return true;
  }

  write(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  close(): void {
    this.socket.destroy();
  }
}

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

export class RawClient {
  constructor(readonly raw: RawSocket) {}

  /** Connects and reads the greeting; sends `clientFlags` (default FIXED_NEWSTYLE|NO_ZEROES). */
  static async handshake(
    target: string | { host: string; port: number },
    clientFlags = 3,
  ): Promise<{ client: RawClient; greetingFlags: number }> {
    const raw = await RawSocket.open(target);
    const greeting = await raw.read(18);
    if (greeting === undefined) throw new Error('no greeting');
    if (greeting.readBigUInt64BE(0) !== NBD_MAGIC) throw new Error('bad NBDMAGIC');
    if (greeting.readBigUInt64BE(8) !== IHAVEOPT) throw new Error('bad IHAVEOPT');
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(clientFlags, 0);
    raw.write(flags);
    return { client: new RawClient(raw), greetingFlags: greeting.readUInt16BE(16) };
  }

  /** Connects and negotiates GO for `name`, ready for requests. */
  static async go(path: string, name = ''): Promise<{ client: RawClient; size: number; flags: number }> {
    const { client } = await RawClient.handshake(path);
    client.sendOption(Option.GO, goData(name, []));
    const replies = await client.readOptionReplies();
    const last = replies.at(-1);
    if (last?.type !== Reply.ACK) throw new Error(`GO failed: 0x${last?.type.toString(16)}`);
    const info = replies.find((reply) => reply.type === Reply.INFO && reply.data.readUInt16BE(0) === 0)!;
    return {
      client,
      size: Number(info.data.readBigUInt64BE(2)),
      flags: info.data.readUInt16BE(10),
    };
  }

  sendOption(option: number, data: Uint8Array = Buffer.alloc(0)): void {
    const header = Buffer.alloc(16);
    header.writeBigUInt64BE(IHAVEOPT, 0);
    header.writeUInt32BE(option, 8);
    header.writeUInt32BE(data.length, 12);
    this.raw.write(Buffer.concat([header, data]));
  }

  async readOptionReply(): Promise<OptionReply | undefined> {
    const header = await this.raw.read(20);
    if (header === undefined) return undefined;
    if (header.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) throw new Error('bad option reply magic');
    const data = await this.raw.read(header.readUInt32BE(16));
    if (data === undefined) return undefined;
    return { option: header.readUInt32BE(8), type: header.readUInt32BE(12), data };
  }

  /** Reads replies up to and including the final one (ACK or an error). */
  async readOptionReplies(): Promise<OptionReply[]> {
    const replies: OptionReply[] = [];
    for (;;) {
      const reply = await this.readOptionReply();
      if (reply === undefined) throw new Error('connection closed during option replies');
      replies.push(reply);
      if (reply.type === Reply.ACK || reply.type >= 0x80000000) return replies;
    }
  }

  sendRequest(
    type: number,
    offset: number,
    length: number,
    options: { flags?: number; cookie?: bigint; payload?: Uint8Array } = {},
  ): void {
    const header = Buffer.alloc(28);
    header.writeUInt32BE(REQUEST_MAGIC, 0);
    header.writeUInt16BE(options.flags ?? 0, 4);
    header.writeUInt16BE(type, 6);
    header.writeBigUInt64BE(options.cookie ?? 1n, 8);
    header.writeBigUInt64BE(BigInt(offset), 16);
    header.writeUInt32BE(length, 24);
    this.raw.write(options.payload === undefined ? header : Buffer.concat([header, options.payload]));
  }

  /** Reads one simple reply; `payloadLength` bytes follow when the error is 0. */
  async readReply(
    payloadLength = 0,
  ): Promise<{ error: number; cookie: bigint; payload: Buffer } | undefined> {
    const header = await this.raw.read(16);
    if (header === undefined) return undefined;
    if (header.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC) throw new Error('bad simple reply magic');
    const error = header.readUInt32BE(4);
    const payload = error === 0 && payloadLength > 0 ? await this.raw.read(payloadLength) : Buffer.alloc(0);
    if (payload === undefined) return undefined;
    return { error, cookie: header.readBigUInt64BE(8), payload };
  }

  close(): void {
    this.raw.close();
  }
}

/** INFO/GO option data: u32 name length, name, u16 count, the info types. */
export function goData(name: string, infos: number[]): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  const data = Buffer.alloc(4 + nameBytes.length + 2 + 2 * infos.length);
  data.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(data, 4);
  data.writeUInt16BE(infos.length, 4 + nameBytes.length);
  infos.forEach((info, index) => {
    data.writeUInt16BE(info, 4 + nameBytes.length + 2 + 2 * index);
  });
  return data;
}
