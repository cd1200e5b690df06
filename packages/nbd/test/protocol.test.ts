/**
 * Byte-level protocol tests with a raw client against MemoryBlockDevices: what the handshake
 * answers, what each command replies, which error value each failure gets, and which
 * failures close the connection (only that one).
 */
import { spawn } from 'node:child_process';
import { lstatSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { FaultyBlockDevice, FssError, MemoryBlockDevice } from '@fss/core';
import { pattern, tempDir } from '@fss/test-utils';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { nbdErrnoOf } from '../src/errors';
import {
  BASE_ALLOCATION,
  Command,
  CommandFlag,
  HandshakeFlag,
  Info,
  NbdErrno,
  Option,
  Reply,
  TransmissionFlag,
} from '../src/protocol';
import { NbdServer } from '../src/server';
import { bareDevice, InstrumentedDevice, type RunningServer, startServer } from './helpers';
import { goData, RawClient, RawSocket } from './raw-client';

const MiB = 1024 * 1024;

let dir: ReturnType<typeof tempDir>;
let origin: MemoryBlockDevice;
let snapshot: MemoryBlockDevice;
let running: RunningServer;

beforeEach(async () => {
  dir = tempDir('fss-nbd-');
  origin = new MemoryBlockDevice(pattern(4 * MiB, 1));
  snapshot = new MemoryBlockDevice(pattern(4 * MiB, 2), { readOnly: true });
  running = await startServer(dir.path, [
    { name: 'origin', device: origin, description: 'the origin' },
    { name: 'fss0', device: snapshot, preferredBlockSize: 65536 },
  ]);
});

afterEach(async () => {
  await running.close();
  dir.remove();
});

describe('handshake', () => {
  it('greets with FIXED_NEWSTYLE|NO_ZEROES', async () => {
    const { client, greetingFlags } = await RawClient.handshake(running.socketPath);
    expect(greetingFlags).toBe(HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES);
    client.close();
  });

  it('closes on unknown client flags', async () => {
    const { client } = await RawClient.handshake(running.socketPath, 0x80);
    expect(await client.raw.closed()).toBe(true);
  });

  it('lists every export with its description, then ACKs', async () => {
    const { client } = await RawClient.handshake(running.socketPath);
    client.sendOption(Option.LIST);
    const replies = await client.readOptionReplies();
    expect(replies.map((reply) => reply.type)).toEqual([Reply.SERVER, Reply.SERVER, Reply.ACK]);
    const first = replies[0]!.data;
    expect(first.subarray(4, 4 + first.readUInt32BE(0)).toString()).toBe('origin');
    expect(first.subarray(4 + 6).toString()).toBe('the origin');
    client.sendOption(Option.LIST, Buffer.from('x'));
    expect((await client.readOptionReplies()).at(-1)!.type).toBe(Reply.ERR_INVALID);
    client.close();
  });

  it('INFO answers size, flags, block sizes, name and description, and stays in the handshake', async () => {
    const { client } = await RawClient.handshake(running.socketPath);
    client.sendOption(Option.INFO, goData('', [Info.NAME, Info.DESCRIPTION, Info.BLOCK_SIZE]));
    const replies = await client.readOptionReplies();
    const byInfo = new Map(
      replies.filter((r) => r.type === Reply.INFO).map((r) => [r.data.readUInt16BE(0), r.data]),
    );
    const exportInfo = byInfo.get(Info.EXPORT)!;
    expect(Number(exportInfo.readBigUInt64BE(2))).toBe(4 * MiB);
    const flags = exportInfo.readUInt16BE(10);
    expect(flags & TransmissionFlag.READ_ONLY).toBe(0);
    for (const flag of [
      'HAS_FLAGS',
      'SEND_FLUSH',
      'SEND_FUA',
      'SEND_TRIM',
      'SEND_WRITE_ZEROES',
      'CAN_MULTI_CONN',
    ] as const) {
      expect(flags & TransmissionFlag[flag], flag).not.toBe(0);
    }
    const blockSize = byInfo.get(Info.BLOCK_SIZE)!;
    expect([blockSize.readUInt32BE(2), blockSize.readUInt32BE(6), blockSize.readUInt32BE(10)]).toEqual([
      512,
      4096,
      32 * MiB,
    ]);
    expect(byInfo.get(Info.NAME)!.subarray(2).toString()).toBe('origin');
    expect(byInfo.get(Info.DESCRIPTION)!.subarray(2).toString()).toBe('the origin');
    expect(replies.at(-1)!.type).toBe(Reply.ACK);
    // Still negotiating: the named read-only export answers too.
    client.sendOption(Option.INFO, goData('fss0', []));
    const second = await client.readOptionReplies();
    const info = second.find((r) => r.type === Reply.INFO && r.data.readUInt16BE(0) === Info.EXPORT)!;
    expect(info.data.readUInt16BE(10) & TransmissionFlag.READ_ONLY).not.toBe(0);
    expect(info.data.readUInt16BE(10) & TransmissionFlag.SEND_TRIM).toBe(0);
    const snapshotBlock = second.find(
      (r) => r.type === Reply.INFO && r.data.readUInt16BE(0) === Info.BLOCK_SIZE,
    )!;
    expect(snapshotBlock.data.readUInt32BE(6)).toBe(65536);
    client.close();
  });

  it('refuses unknown names (ERR_UNKNOWN), malformed data (ERR_INVALID), and unsupported options', async () => {
    const { client } = await RawClient.handshake(running.socketPath);
    client.sendOption(Option.GO, goData('nope', []));
    expect((await client.readOptionReplies()).at(-1)!.type).toBe(Reply.ERR_UNKNOWN);
    client.sendOption(Option.GO, Buffer.from([0, 0, 0, 9, 1]));
    expect((await client.readOptionReplies()).at(-1)!.type).toBe(Reply.ERR_INVALID);
    for (const option of [Option.STARTTLS, Option.EXTENDED_HEADERS, 4242]) {
      client.sendOption(option);
      const reply = (await client.readOptionReplies()).at(-1)!;
      expect(reply.type).toBe(Reply.ERR_UNSUP);
      expect(reply.option).toBe(option);
    }
    // The handshake goes on after every refusal.
    client.sendOption(Option.GO, goData('origin', []));
    expect((await client.readOptionReplies()).at(-1)!.type).toBe(Reply.ACK);
    client.close();
  });

  it('ABORT is acknowledged, then the server closes', async () => {
    const { client } = await RawClient.handshake(running.socketPath);
    client.sendOption(Option.ABORT);
    expect((await client.readOptionReply())!.type).toBe(Reply.ACK);
    expect(await client.raw.closed()).toBe(true);
  });

  it('EXPORT_NAME answers size and flags, with the 124 zero bytes unless NO_ZEROES', async () => {
    for (const [clientFlags, length] of [
      [3, 10],
      [1, 134],
    ] as const) {
      const { client } = await RawClient.handshake(running.socketPath, clientFlags);
      client.sendOption(Option.EXPORT_NAME, Buffer.from('fss0'));
      const reply = (await client.raw.read(length))!;
      expect(Number(reply.readBigUInt64BE(0))).toBe(4 * MiB);
      expect(reply.readUInt16BE(8) & TransmissionFlag.READ_ONLY).not.toBe(0);
      client.sendRequest(Command.READ, 0, 512);
      const read = (await client.readReply(512))!;
      expect(read.error).toBe(0);
      expect(Buffer.compare(read.payload, snapshot.bytes.subarray(0, 512))).toBe(0);
      client.close();
    }
  });

  it('disconnects a client that does not finish the handshake in time', async () => {
    const local = await startServer(dir.path, [{ name: 'x', device: origin }], {
      socketName: 't.sock',
      handshakeTimeoutMs: 100,
    });
    const { client } = await RawClient.handshake(local.socketPath);
    expect(await client.raw.closed()).toBe(true);
    for (let wait = 0; wait < 50 && local.server.connectionCount > 0; wait++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(local.server.connectionCount).toBe(0);
    await local.close();
  });

  it('EXPORT_NAME of an unknown export closes (the option has no error reply)', async () => {
    const { client } = await RawClient.handshake(running.socketPath);
    client.sendOption(Option.EXPORT_NAME, Buffer.from('nope'));
    expect(await client.raw.closed()).toBe(true);
  });

  it('closes on an option without IHAVEOPT or with oversized data', async () => {
    const { client } = await RawClient.handshake(running.socketPath);
    client.raw.write(Buffer.alloc(16, 0x41));
    expect(await client.raw.closed()).toBe(true);
    const second = (await RawClient.handshake(running.socketPath)).client;
    second.sendOption(Option.GO, Buffer.alloc(0));
    await second.readOptionReplies();
    const header = Buffer.alloc(16);
    header.writeBigUInt64BE(0x49484156454f5054n, 0);
    header.writeUInt32BE(Option.GO, 8);
    header.writeUInt32BE(1_000_000, 12);
    second.raw.write(header);
    expect(await second.raw.closed()).toBe(true);
  });
});

describe('structured replies and base:allocation', () => {
  /** Meta-context option data: export name, then the queries. */
  function metaData(name: string, queries: string[]): Buffer {
    const parts = [Buffer.alloc(4), Buffer.from(name), Buffer.alloc(4)];
    parts[0]!.writeUInt32BE(Buffer.byteLength(name), 0);
    parts[2]!.writeUInt32BE(queries.length, 0);
    for (const query of queries) {
      const length = Buffer.alloc(4);
      length.writeUInt32BE(Buffer.byteLength(query), 0);
      parts.push(length, Buffer.from(query));
    }
    return Buffer.concat(parts);
  }

  /** Reads one structured chunk. */
  async function readChunk(client: RawClient) {
    const header = (await client.raw.read(20))!;
    expect(header.readUInt32BE(0)).toBe(0x668e33ef);
    const payload = (await client.raw.read(header.readUInt32BE(16)))!;
    return {
      flags: header.readUInt16BE(4),
      type: header.readUInt16BE(6),
      cookie: header.readBigUInt64BE(8),
      payload,
    };
  }

  it('negotiates them, then answers READ, errors, writes and BLOCK_STATUS in chunks', async () => {
    const { client } = await RawClient.handshake(running.socketPath);
    client.sendOption(Option.SET_META_CONTEXT, metaData('', [BASE_ALLOCATION]));
    expect((await client.readOptionReplies()).at(-1)!.type).toBe(Reply.ERR_INVALID); // not yet structured
    client.sendOption(Option.STRUCTURED_REPLY);
    expect((await client.readOptionReplies()).map((r) => r.type)).toEqual([Reply.ACK]);
    client.sendOption(Option.LIST_META_CONTEXT, metaData('origin', []));
    const listed = await client.readOptionReplies();
    expect(listed.map((r) => r.type)).toEqual([Reply.META_CONTEXT, Reply.ACK]);
    expect(listed[0]!.data.subarray(4).toString()).toBe(BASE_ALLOCATION);
    client.sendOption(Option.SET_META_CONTEXT, metaData('nope', [BASE_ALLOCATION]));
    expect((await client.readOptionReplies()).at(-1)!.type).toBe(Reply.ERR_UNKNOWN);
    client.sendOption(Option.SET_META_CONTEXT, metaData('', ['qemu:dirty-bitmap:x', BASE_ALLOCATION]));
    const set = await client.readOptionReplies();
    expect(set.map((r) => r.type)).toEqual([Reply.META_CONTEXT, Reply.ACK]);
    const contextId = set[0]!.data.readUInt32BE(0);
    expect(contextId).not.toBe(0);
    client.sendOption(Option.GO, goData('', []));
    expect((await client.readOptionReplies()).at(-1)!.type).toBe(Reply.ACK);

    client.sendRequest(Command.READ, 8192, 4096, { cookie: 5n });
    const read = await readChunk(client);
    expect(read).toMatchObject({ flags: 1, type: 1, cookie: 5n });
    expect(Number(read.payload.readBigUInt64BE(0))).toBe(8192);
    expect(Buffer.compare(read.payload.subarray(8), origin.bytes.subarray(8192, 8192 + 4096))).toBe(0);

    client.sendRequest(Command.READ, 4 * MiB, 512, { cookie: 6n });
    const error = await readChunk(client);
    expect(error).toMatchObject({ flags: 1, type: 0x8001, cookie: 6n });
    expect(error.payload.readUInt32BE(0)).toBe(NbdErrno.EINVAL);

    client.sendRequest(Command.WRITE, 0, 512, { cookie: 7n, payload: new Uint8Array(512).fill(3) });
    expect(await readChunk(client)).toMatchObject({ flags: 1, type: 0, cookie: 7n });
    expect(origin.bytes[0]).toBe(3);

    client.sendRequest(Command.BLOCK_STATUS, 4096, 65536, { cookie: 8n, flags: CommandFlag.REQ_ONE });
    const status = await readChunk(client);
    expect(status).toMatchObject({ flags: 1, type: 5, cookie: 8n });
    expect([
      status.payload.readUInt32BE(0),
      status.payload.readUInt32BE(4),
      status.payload.readUInt32BE(8),
    ]).toEqual([contextId, 65536, 0]);
    client.sendRequest(Command.BLOCK_STATUS, 4 * MiB - 512, 1024, { cookie: 9n });
    expect((await readChunk(client)).payload.readUInt32BE(0)).toBe(NbdErrno.EINVAL);
    client.close();
  });

  it('refuses BLOCK_STATUS when base:allocation was not selected', async () => {
    const { client } = await RawClient.handshake(running.socketPath);
    client.sendOption(Option.STRUCTURED_REPLY);
    await client.readOptionReplies();
    client.sendOption(Option.GO, goData('', []));
    await client.readOptionReplies();
    client.sendRequest(Command.BLOCK_STATUS, 0, 4096);
    const chunk = await readChunk(client);
    expect(chunk.type).toBe(0x8001);
    expect(chunk.payload.readUInt32BE(0)).toBe(NbdErrno.EINVAL);
    client.close();
  });
});

describe('transmission', () => {
  it('reads and writes, with FUA flushing before the reply', async () => {
    const instrumented = new InstrumentedDevice(origin);
    const local = await startServer(dir.path, [{ name: 'x', device: instrumented }], {
      socketName: 'i.sock',
    });
    const { client } = await RawClient.go(local.socketPath);
    const data = pattern(65536, 9);
    client.sendRequest(Command.WRITE, 4096, data.length, {
      payload: data,
      cookie: 7n,
      flags: CommandFlag.FUA,
    });
    const written = (await client.readReply())!;
    expect(written).toMatchObject({ error: 0, cookie: 7n });
    expect(instrumented.calls['flush']).toBe(1);
    expect(Buffer.compare(origin.bytes.subarray(4096, 4096 + 65536), data)).toBe(0);
    client.sendRequest(Command.READ, 4096, 65536, { cookie: 8n });
    const read = (await client.readReply(65536))!;
    expect(read.cookie).toBe(8n);
    expect(Buffer.compare(read.payload, data)).toBe(0);
    client.sendRequest(Command.FLUSH, 0, 0);
    expect((await client.readReply())!.error).toBe(0);
    client.sendRequest(Command.WRITE_ZEROES, 4096, 8192, { flags: CommandFlag.NO_HOLE });
    expect((await client.readReply())!.error).toBe(0);
    expect(origin.bytes.subarray(4096, 4096 + 8192).every((byte) => byte === 0)).toBe(true);
    client.sendRequest(Command.TRIM, 0, 4096);
    expect((await client.readReply())!.error).toBe(0);
    expect(instrumented.calls['discard']).toBe(1);
    client.close();
    await local.close();
  });

  it('pipelined WRITEs of every size arrive byte-exact, on a listened and an accept()ed socket', async () => {
    const device = new MemoryBlockDevice(8 * MiB);
    const local = await startServer(dir.path, [{ name: 'x', device }], { socketName: 'w.sock' });
    // accept(): a socket some other listener took, read through its 'data' chunks.
    const relay = createServer({ allowHalfOpen: true }, (socket) => local.server.accept(socket));
    const relayPath = join(dir.path, 'relay.sock');
    await new Promise<void>((resolve) => relay.listen(relayPath, resolve));
    const sizes = [0, 1, 512, 4096, 32767, 32768, 65536, 65537, 300_000, MiB];
    for (const path of [local.socketPath, relayPath]) {
      const { client } = await RawClient.go(path);
      let offset = 0;
      const written: { offset: number; data: Uint8Array }[] = [];
      for (const [index, length] of sizes.entries()) {
        const data = pattern(length, 100 + index);
        written.push({ offset, data });
        client.sendRequest(Command.WRITE, offset, length, { payload: data, cookie: BigInt(index) });
        offset += length + 7; // odd offsets: every payload lands unaligned somewhere
      }
      for (let index = 0; index < sizes.length; index++) expect((await client.readReply())!.error).toBe(0);
      for (const { offset: at, data } of written) {
        expect(Buffer.compare(device.bytes.subarray(at, at + data.length), data)).toBe(0);
      }
      device.bytes.fill(0);
      client.close();
    }
    relay.close();
    await local.close();
  });

  it('advertises neither WRITE_ZEROES nor TRIM for a device without them, and refuses both with EINVAL', async () => {
    const device = new MemoryBlockDevice(pattern(MiB, 12));
    const local = await startServer(dir.path, [{ name: 'bare', device: bareDevice(device) }], {
      socketName: 'bare.sock',
    });
    const { client, flags } = await RawClient.go(local.socketPath);
    expect(flags & TransmissionFlag.SEND_WRITE_ZEROES).toBe(0);
    expect(flags & TransmissionFlag.SEND_TRIM).toBe(0);
    expect(flags & TransmissionFlag.SEND_FUA).not.toBe(0);
    const before = device.bytes.slice();
    client.sendRequest(Command.WRITE_ZEROES, 0, 4096);
    expect((await client.readReply())!.error).toBe(NbdErrno.EINVAL);
    client.sendRequest(Command.TRIM, 0, 4096);
    expect((await client.readReply())!.error).toBe(NbdErrno.EINVAL);
    expect(Buffer.compare(device.bytes, before)).toBe(0);
    client.sendRequest(Command.WRITE, 0, 512, { payload: new Uint8Array(512) });
    expect((await client.readReply())!.error).toBe(0);
    expect(device.bytes.subarray(0, 512).every((byte) => byte === 0)).toBe(true);
    client.close();
    await local.close();
  });

  it('maps failures to NBD errors and keeps the connection usable', async () => {
    const { client } = await RawClient.go(running.socketPath, 'fss0');
    const cases: [number, number, number, number, number][] = [
      // [command, flags, offset, length, expected error]
      [Command.WRITE, 0, 0, 512, NbdErrno.EPERM],
      [Command.TRIM, 0, 0, 512, NbdErrno.EPERM],
      [Command.WRITE_ZEROES, 0, 0, 512, NbdErrno.EPERM],
      [Command.READ, 0, 4 * MiB - 512, 1024, NbdErrno.EINVAL],
      [Command.READ, CommandFlag.DF, 0, 512, NbdErrno.EINVAL],
      [Command.BLOCK_STATUS, 0, 0, 512, NbdErrno.EINVAL],
      [99, 0, 0, 512, NbdErrno.EINVAL],
    ];
    for (const [type, flags, offset, length, expected] of cases) {
      const payload = type === Command.WRITE ? new Uint8Array(length) : undefined;
      client.sendRequest(type, offset, length, { flags, payload });
      expect((await client.readReply())!.error, `command ${type}`).toBe(expected);
    }
    client.sendRequest(Command.READ, 0, 512);
    expect((await client.readReply(512))!.error).toBe(0);
    client.close();

    const writer = (await RawClient.go(running.socketPath, 'origin')).client;
    writer.sendRequest(Command.WRITE, 4 * MiB - 512, 1024, { payload: new Uint8Array(1024) });
    expect((await writer.readReply())!.error).toBe(NbdErrno.ENOSPC);
    writer.sendRequest(Command.WRITE_ZEROES, 4 * MiB, 1);
    expect((await writer.readReply())!.error).toBe(NbdErrno.ENOSPC);
    writer.sendRequest(Command.TRIM, 4 * MiB, 512);
    expect((await writer.readReply())!.error).toBe(NbdErrno.EINVAL);
    writer.sendRequest(Command.WRITE, 2 ** 60, 512, { payload: new Uint8Array(512) });
    expect((await writer.readReply())!.error).toBe(NbdErrno.EINVAL);
    writer.sendRequest(Command.WRITE, 0, 512, { payload: new Uint8Array(512).fill(5) });
    expect((await writer.readReply())!.error).toBe(0);
    expect(origin.bytes[0]).toBe(5);
    writer.close();
  });

  it('replies EIO when the device fails, ENOSPC when it is full, and stays up', async () => {
    const failing = new FaultyBlockDevice(new MemoryBlockDevice(MiB));
    failing.faults.failNext('read', 'ENXIO'); // an invalid snapshot reads ENXIO
    failing.faults.failNext('write', 'ENOSPC');
    const local = await startServer(dir.path, [{ name: 'x', device: failing }], { socketName: 'f.sock' });
    const { client } = await RawClient.go(local.socketPath);
    client.sendRequest(Command.READ, 0, 512);
    expect((await client.readReply())!.error).toBe(NbdErrno.EIO);
    client.sendRequest(Command.WRITE, 0, 512, { payload: new Uint8Array(512) });
    expect((await client.readReply())!.error).toBe(NbdErrno.ENOSPC);
    client.sendRequest(Command.FLUSH, 0, 0);
    expect((await client.readReply())!.error).toBe(0);
    client.close();
    await local.close();
  });

  it('closes only the connection that sends a malformed or oversized request', async () => {
    const bystander = (await RawClient.go(running.socketPath)).client;
    const bad = (await RawClient.go(running.socketPath)).client;
    bad.raw.write(Buffer.alloc(28, 0xee));
    expect(await bad.raw.closed()).toBe(true);
    const oversized = (await RawClient.go(running.socketPath)).client;
    oversized.sendRequest(Command.WRITE, 0, 33 * MiB);
    expect(await oversized.raw.closed()).toBe(true);
    const oversizedRead = (await RawClient.go(running.socketPath)).client;
    oversizedRead.sendRequest(Command.READ, 0, 0xffffffff);
    expect(await oversizedRead.raw.closed()).toBe(true);
    bystander.sendRequest(Command.READ, 0, 4096);
    const reply = (await bystander.readReply(4096))!;
    expect(reply.error).toBe(0);
    expect(Buffer.compare(reply.payload, origin.bytes.subarray(0, 4096))).toBe(0);
    bystander.close();
  });

  it('bounds requests in flight per connection, and answers every pipelined request', async () => {
    const slow = new InstrumentedDevice(origin);
    slow.delayMs = 5;
    const local = await startServer(dir.path, [{ name: 'x', device: slow }], {
      socketName: 's.sock',
      inFlightMax: 4,
    });
    const { client } = await RawClient.go(local.socketPath);
    const count = 64;
    // Gaps between the ranges, so the reads are not merged (see the merging test).
    for (let index = 0; index < count; index++) {
      client.sendRequest(Command.READ, index * 8192, 4096, { cookie: BigInt(index) });
    }
    const cookies = new Set<bigint>();
    for (let index = 0; index < count; index++) {
      const reply = (await client.readReply(4096))!;
      expect(reply.error).toBe(0);
      const at = Number(reply.cookie) * 8192;
      expect(Buffer.compare(reply.payload, origin.bytes.subarray(at, at + 4096))).toBe(0);
      cookies.add(reply.cookie);
    }
    expect(cookies.size).toBe(count);
    expect(slow.runningMax).toBeGreaterThan(1);
    expect(slow.runningMax).toBeLessThanOrEqual(4);
    client.close();
    await local.close();
  });

  it('merges READs of back-to-back ranges into one device read, and isolates errors', async () => {
    const counting = new InstrumentedDevice(origin);
    const local = await startServer(dir.path, [{ name: 'x', device: counting }], { socketName: 'm.sock' });
    const { client } = await RawClient.go(local.socketPath);
    // 16 consecutive 64 KiB reads (1 MiB), sent in one burst.
    const burst = Buffer.concat(
      Array.from({ length: 16 }, (_, index) => {
        const header = Buffer.alloc(28);
        header.writeUInt32BE(0x25609513, 0);
        header.writeUInt16BE(Command.READ, 6);
        header.writeBigUInt64BE(BigInt(index), 8);
        header.writeBigUInt64BE(BigInt(index * 65536), 16);
        header.writeUInt32BE(65536, 24);
        return header;
      }),
    );
    client.raw.write(burst);
    for (let index = 0; index < 16; index++) {
      const reply = (await client.readReply(65536))!;
      const at = Number(reply.cookie) * 65536;
      expect(Buffer.compare(reply.payload, origin.bytes.subarray(at, at + 65536))).toBe(0);
    }
    expect(counting.calls['read']).toBeLessThan(16);

    // A merged read that fails: each request is retried alone and gets its own answer.
    const failing = new MemoryBlockDevice(pattern(MiB, 4));
    const read = failing.read.bind(failing);
    failing.read = async (target, offset) => {
      if (offset <= 3 * 4096 && offset + target.length > 3 * 4096) throw new FssError('EIO');
      return read(target, offset);
    };
    const second = await startServer(dir.path, [{ name: 'y', device: failing }], { socketName: 'm2.sock' });
    const other = (await RawClient.go(second.socketPath)).client;
    other.raw.write(
      Buffer.concat(
        Array.from({ length: 6 }, (_, index) => {
          const header = Buffer.alloc(28);
          header.writeUInt32BE(0x25609513, 0);
          header.writeUInt16BE(Command.READ, 6);
          header.writeBigUInt64BE(BigInt(index), 8);
          header.writeBigUInt64BE(BigInt(index * 4096), 16);
          header.writeUInt32BE(4096, 24);
          return header;
        }),
      ),
    );
    const errors = new Map<bigint, number>();
    for (let index = 0; index < 6; index++) {
      const reply = (await other.readReply())!;
      if (reply.error === 0) {
        const payload = (await other.raw.read(4096))!;
        const at = Number(reply.cookie) * 4096;
        expect(Buffer.compare(payload, failing.bytes.subarray(at, at + 4096))).toBe(0);
      }
      errors.set(reply.cookie, reply.error);
    }
    expect([...errors].sort((a, b) => Number(a[0] - b[0])).map(([, error]) => error)).toEqual([
      0, 0, 0, 5, 0, 0,
    ]);
    client.close();
    other.close();
    await local.close();
    await second.close();
  });

  it('bounds the bytes in flight per connection too', async () => {
    const slow = new InstrumentedDevice(origin);
    slow.delayMs = 5;
    const local = await startServer(dir.path, [{ name: 'x', device: slow }], {
      socketName: 'bytes.sock',
      inFlightBytesMax: 8192,
    });
    const { client } = await RawClient.go(local.socketPath);
    for (let index = 0; index < 32; index++) client.sendRequest(Command.READ, index * 8192, 4096);
    for (let index = 0; index < 32; index++) expect((await client.readReply(4096))!.error).toBe(0);
    expect(slow.runningMax).toBe(2);
    // A request larger than the limit still runs, alone.
    client.sendRequest(Command.READ, 0, 65536);
    expect((await client.readReply(65536))!.error).toBe(0);
    client.close();
    await local.close();
  });

  it('stops reading requests while the client does not read replies (back-pressure)', async () => {
    const counting = new InstrumentedDevice(new MemoryBlockDevice(64 * MiB));
    const local = await startServer(dir.path, [{ name: 'x', device: counting }], { socketName: 'b.sock' });
    const { client } = await RawClient.go(local.socketPath);
    client.raw.socket.pause();
    const requests = 256; // 256 × 1 MiB of replies: far more than the socket buffers hold
    for (let index = 0; index < requests; index++)
      client.sendRequest(Command.READ, (index % 32) * 2 * MiB, MiB);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const readsWhilePaused = counting.calls['read'] ?? 0;
    expect(readsWhilePaused).toBeLessThan(requests);
    client.raw.socket.resume();
    for (let index = 0; index < requests; index++) expect((await client.readReply(MiB))!.error).toBe(0);
    expect(counting.calls['read']).toBe(requests);
    client.close();
    await local.close();
  });

  it('holds few read buffers while the client does not read replies, and close() still ends it', async () => {
    const counting = new InstrumentedDevice(new MemoryBlockDevice(64 * MiB));
    const local = await startServer(dir.path, [{ name: 'x', device: counting }], { socketName: 'h.sock' });
    const { client } = await RawClient.go(local.socketPath);
    client.raw.socket.pause();
    // 48 consecutive 1 MiB READs: without the held-bytes limit all 48 would be read at once.
    for (let index = 0; index < 48; index++) client.sendRequest(Command.READ, index * MiB, MiB);
    await new Promise((resolve) => setTimeout(resolve, 300));
    // 2 MiB held (two 1 MiB reads); without the limit, ~10 (the 8 MiB reply queue stops it).
    expect(counting.calls['read'] ?? 0).toBeLessThanOrEqual(4);
    // The reads waiting for buffers start when the connection drains, so close() does not wait
    // for a client that never reads: the connection is destroyed after the grace period.
    await local.close();
    expect(counting.calls['read']).toBe(48);
    expect(local.server.connectionCount).toBe(0);
    client.close();
  });

  it('DISC answers what is in flight, then closes', async () => {
    const slow = new InstrumentedDevice(origin);
    slow.delayMs = 50;
    const local = await startServer(dir.path, [{ name: 'x', device: slow }], { socketName: 'd.sock' });
    const { client } = await RawClient.go(local.socketPath);
    client.sendRequest(Command.READ, 0, 512, { cookie: 1n });
    client.sendRequest(Command.WRITE, 512, 512, { cookie: 2n, payload: new Uint8Array(512).fill(9) });
    client.sendRequest(Command.DISC, 0, 0);
    const first = (await client.readReply())!;
    const cookies = [first.cookie];
    if (first.cookie === 1n) await client.raw.read(512);
    const second = (await client.readReply(first.cookie === 1n ? 0 : 512))!;
    cookies.push(second.cookie);
    expect(cookies.sort()).toEqual([1n, 2n]);
    expect(await client.raw.closed()).toBe(true);
    expect(origin.bytes[512]).toBe(9);
    await local.close();
  });

  it('close() answers requests in flight, then ends every connection and unlinks the socket', async () => {
    const slow = new InstrumentedDevice(origin);
    slow.delayMs = 100;
    const local = await startServer(dir.path, [{ name: 'x', device: slow }], { socketName: 'c.sock' });
    const { client } = await RawClient.go(local.socketPath);
    const idle = (await RawClient.handshake(local.socketPath)).client;
    for (let index = 0; index < 4; index++)
      client.sendRequest(Command.READ, 0, 512, { cookie: BigInt(index) });
    await new Promise((resolve) => setTimeout(resolve, 20));
    const closing = local.close();
    for (let index = 0; index < 4; index++) expect((await client.readReply(512))!.error).toBe(0);
    expect(await client.raw.closed()).toBe(true);
    expect(await idle.raw.closed()).toBe(true);
    await closing;
    expect(local.server.connectionCount).toBe(0);
    await expect(RawClient.handshake(local.socketPath)).rejects.toThrow(/ENOENT/);
  });

  it('reports every change of the connection count', async () => {
    const counts: number[] = [];
    const local = await startServer(dir.path, [{ name: 'x', device: origin }], {
      socketName: 'n.sock',
      onConnectionCountChange: (count) => counts.push(count),
    });
    const first = (await RawClient.go(local.socketPath)).client;
    const second = (await RawClient.go(local.socketPath)).client;
    first.sendRequest(Command.DISC, 0, 0);
    expect(await first.raw.closed()).toBe(true);
    second.close();
    for (let wait = 0; wait < 50 && counts.at(-1) !== 0; wait++) await new Promise((r) => setTimeout(r, 10));
    expect(counts).toEqual([1, 2, 1, 0]);
    await local.close();
  });

  it('serves many connections at once', async () => {
    const clients = await Promise.all(Array.from({ length: 32 }, () => RawClient.go(running.socketPath)));
    await Promise.all(
      clients.map(async ({ client }, index) => {
        client.sendRequest(Command.READ, index * 4096, 4096);
        const reply = (await client.readReply(4096))!;
        expect(Buffer.compare(reply.payload, origin.bytes.subarray(index * 4096, index * 4096 + 4096))).toBe(
          0,
        );
        client.close();
      }),
    );
  });
});

describe('listening', () => {
  it('unlinks a stale socket, refuses a live one (EADDRINUSE) and a non-socket (EEXIST)', async () => {
    const stalePath = join(dir.path, 'stale.sock');
    writeFileSync(join(dir.path, 'placeholder'), '');
    // A server killed with SIGKILL leaves its socket file behind, with nobody listening.
    const child = spawn(process.execPath, [
      '-e',
      "require('net').createServer().listen(process.argv[1], () => console.log('up'))",
      stalePath,
    ]);
    await new Promise((resolve) => child.stdout.once('data', resolve));
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    expect(lstatSync(stalePath).isSocket()).toBe(true);
    const server = new NbdServer({ exports: [{ name: 'x', device: origin }] });
    await server.listen({ path: stalePath });
    const { client } = await RawClient.go(stalePath);
    client.close();

    const second = new NbdServer({ exports: [{ name: 'x', device: origin }] });
    await expect(second.listen({ path: stalePath })).rejects.toMatchObject({ code: 'EADDRINUSE' });
    const third = new NbdServer({ exports: [{ name: 'x', device: origin }] });
    await expect(third.listen({ path: join(dir.path, 'placeholder') })).rejects.toMatchObject({
      code: 'EEXIST',
    });
    await server.close();
  });

  it('admit() refuses a client before the greeting, logs why, and serves the next one', async () => {
    const logged: string[] = [];
    let turn = 0;
    const server = new NbdServer({
      exports: [{ name: 'x', device: origin }],
      admit: () => (turn++ === 0 ? 'uid 65534 is not allowed' : undefined),
      log: (message) => logged.push(message),
    });
    const path = join(dir.path, 'admit.sock');
    await server.listen({ path });
    const refused = await RawSocket.open(path);
    expect(await refused.read(1)).toBeUndefined(); // closed without a byte of greeting
    refused.close();
    expect(logged).toEqual(['refusing a client: uid 65534 is not allowed']);
    const { client } = await RawClient.go(path);
    client.close();
    expect(server.connectionCount).toBeLessThanOrEqual(1);
    await server.close();
  });

  it('listens on TCP only when asked, bound to the address given', async () => {
    const server = new NbdServer({ exports: [{ name: 'x', device: origin }] });
    const address = await server.listen({ host: '127.0.0.1', port: 0 });
    expect(address).toMatchObject({ host: '127.0.0.1' });
    expect('port' in address && address.port).toBeGreaterThan(0);
    await server.close();
  });
});

describe('the error table', () => {
  it.each([
    ['EROFS', NbdErrno.EPERM],
    ['EPERM', NbdErrno.EPERM],
    ['EINVAL', NbdErrno.EINVAL],
    ['ENOSPC', NbdErrno.ENOSPC],
    ['EDQUOT', NbdErrno.ENOSPC],
    ['EFBIG', NbdErrno.ENOSPC],
    ['ENOMEM', NbdErrno.ENOMEM],
    ['EOVERFLOW', NbdErrno.EOVERFLOW],
    ['EOPNOTSUPP', NbdErrno.ENOTSUP],
    ['ESHUTDOWN', NbdErrno.ESHUTDOWN],
    ['ENXIO', NbdErrno.EIO],
    ['EIO', NbdErrno.EIO],
    ['EBADF', NbdErrno.EIO],
  ] as const)('%s → %i', (code, expected) => {
    expect(nbdErrnoOf(new FssError(code))).toBe(expected);
  });

  it('maps Node system errors by code and anything else to EIO', () => {
    expect(nbdErrnoOf(Object.assign(new Error('x'), { code: 'ENOSPC' }))).toBe(NbdErrno.ENOSPC);
    expect(nbdErrnoOf(Object.assign(new Error('x'), { code: 'ENOTSUP' }))).toBe(NbdErrno.ENOTSUP);
    expect(nbdErrnoOf(new Error('boom'))).toBe(NbdErrno.EIO);
    expect(nbdErrnoOf('string')).toBe(NbdErrno.EIO);
  });
});
