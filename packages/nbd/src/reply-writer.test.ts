import type { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { ChunkType, ReplyFlag, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC } from './protocol';
import { ReplyWriter } from './reply-writer';

/** Just enough of a Socket to record what the writer sends. */
function recordingSocket(): { socket: Socket; writes: Buffer[]; callbacks: (() => void)[] } {
  const writes: Buffer[] = [];
  const callbacks: (() => void)[] = [];
  const socket = {
    destroyed: false,
    writableEnded: false,
    writableLength: 0,
    cork: () => undefined,
    uncork: () => undefined,
    write: (chunk: Uint8Array, callback?: () => void) => {
      writes.push(Buffer.from(chunk));
      if (callback !== undefined) callbacks.push(callback);
      return true;
    },
  };
  return { socket: socket as unknown as Socket, writes, callbacks };
}

const cookie = (value: number): Uint8Array => {
  const bytes = Buffer.alloc(8);
  bytes.writeBigUInt64BE(BigInt(value));
  return bytes;
};

describe('ReplyWriter', () => {
  it('sends a run as header + slice per request, offsets above 4 GiB intact, one callback', () => {
    const { socket, writes, callbacks } = recordingSocket();
    const writer = new ReplyWriter(socket, true);
    const base = 2 ** 40 + 4096 * 3; // high and low halves both non-zero
    const data = Buffer.from(Array.from({ length: 12 }, (_, index) => index));
    let sent = 0;
    writer.sendReadRun(
      [
        { cookie: cookie(7), offset: base, length: 4 },
        { cookie: cookie(8), offset: base + 4, length: 8 },
      ],
      base,
      data,
      () => sent++,
    );
    expect(writes).toHaveLength(4);
    for (const [index, expected] of [
      [0, { cookie: 7n, offset: base, length: 4 }],
      [2, { cookie: 8n, offset: base + 4, length: 8 }],
    ] as const) {
      const header = writes[index]!;
      expect(header.length).toBe(28);
      expect(header.readUInt32BE(0)).toBe(STRUCTURED_REPLY_MAGIC);
      expect(header.readUInt16BE(4)).toBe(ReplyFlag.DONE);
      expect(header.readUInt16BE(6)).toBe(ChunkType.OFFSET_DATA);
      expect(header.readBigUInt64BE(8)).toBe(expected.cookie);
      expect(header.readUInt32BE(16)).toBe(8 + expected.length);
      expect(header.readBigUInt64BE(20)).toBe(BigInt(expected.offset));
    }
    expect([...writes[1]!]).toEqual([0, 1, 2, 3]);
    expect([...writes[3]!]).toEqual([4, 5, 6, 7, 8, 9, 10, 11]);
    expect(callbacks).toHaveLength(1);
    callbacks[0]!();
    expect(sent).toBe(1);
  });

  it('sends a simple-mode run as a 16-byte header and the data per request', () => {
    const { socket, writes } = recordingSocket();
    const writer = new ReplyWriter(socket, false);
    const data = Buffer.alloc(4, 0xee);
    writer.sendReadRun(
      [{ cookie: cookie(0x0102_0304), offset: 2 ** 45, length: 4 }],
      2 ** 45,
      data,
      () => undefined,
    );
    expect(writes).toHaveLength(2);
    const [header, body] = writes;
    expect(header!.length).toBe(16);
    expect(header!.readUInt32BE(0)).toBe(SIMPLE_REPLY_MAGIC);
    expect(header!.readUInt32BE(4)).toBe(0);
    expect(header!.readBigUInt64BE(8)).toBe(0x0102_0304n);
    expect(body!.every((byte) => byte === 0xee)).toBe(true);
  });
});
