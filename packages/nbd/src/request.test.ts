import { MemoryBlockDevice } from '@fss/core';
import { describe, expect, it } from 'vitest';
import { describeExport } from './export';
import { Command, CommandFlag, NbdErrno, REQUEST_MAGIC } from './protocol';
import { judgeRequest, type NbdRequest, parseRequest } from './request';

const writable = describeExport({ name: 'o', device: new MemoryBlockDevice(1 << 20) });
const readOnly = describeExport({ name: 's', device: new MemoryBlockDevice(1 << 20, { readOnly: true }) });
/** A writable device with neither writeZeroes nor discard. */
const memory = new MemoryBlockDevice(1 << 20);
const bare = describeExport({
  name: 'b',
  device: {
    size: memory.size,
    logicalSectorSize: memory.logicalSectorSize,
    readOnly: false,
    read: (target, offset) => memory.read(target, offset),
    write: (source, offset) => memory.write(source, offset),
    flush: () => memory.flush(),
    close: () => memory.close(),
  },
});

function request(type: number, offset: number, length: number, flags = 0): NbdRequest {
  return { type, offset, length, flags, cookie: new Uint8Array(8) };
}

describe('parseRequest', () => {
  it('reads the fields big-endian and marks offsets past 2^53', () => {
    const header = Buffer.alloc(28);
    header.writeUInt32BE(REQUEST_MAGIC, 0);
    header.writeUInt16BE(CommandFlag.FUA, 4);
    header.writeUInt16BE(Command.WRITE, 6);
    header.writeBigUInt64BE(0x0102030405060708n, 8);
    header.writeBigUInt64BE(4096n, 16);
    header.writeUInt32BE(512, 24);
    const parsed = parseRequest(header)!;
    expect(parsed).toMatchObject({ flags: 1, type: 1, offset: 4096, length: 512 });
    expect(Buffer.from(parsed.cookie).toString('hex')).toBe('0102030405060708');
    header.writeBigUInt64BE(2n ** 60n, 16);
    expect(parseRequest(header)!.offset).toBe(-1);
    header.writeBigUInt64BE(2n ** 53n - 1n, 16);
    expect(parseRequest(header)!.offset).toBe(Number.MAX_SAFE_INTEGER);
    header.writeBigUInt64BE(2n ** 53n, 16);
    expect(parseRequest(header)!.offset).toBe(-1);
    header.writeBigUInt64BE(0x0000_1234_8765_4321n, 16);
    expect(parseRequest(header)!.offset).toBe(0x1234_8765_4321);
    header.writeUInt32BE(0x12345678, 0);
    expect(parseRequest(header)).toBeUndefined();
  });
});

describe('judgeRequest', () => {
  const MiB = 1 << 20;
  it.each([
    ['READ in range', writable, request(Command.READ, 0, 4096), 'execute'],
    ['READ across the end', writable, request(Command.READ, MiB - 512, 1024), NbdErrno.EINVAL],
    ['READ at 2^60', writable, request(Command.READ, -1, 512), NbdErrno.EINVAL],
    ['READ over 32 MiB', writable, request(Command.READ, 0, 32 * MiB + 1), 'close'],
    ['WRITE over 32 MiB', writable, request(Command.WRITE, 0, 32 * MiB + 1), 'close'],
    ['WRITE across the end', writable, request(Command.WRITE, MiB - 512, 1024), NbdErrno.ENOSPC],
    ['WRITE_ZEROES across the end', writable, request(Command.WRITE_ZEROES, MiB, 1), NbdErrno.ENOSPC],
    ['TRIM across the end', writable, request(Command.TRIM, MiB, 1), NbdErrno.EINVAL],
    ['WRITE on read-only', readOnly, request(Command.WRITE, 0, 512), NbdErrno.EPERM],
    ['TRIM on read-only', readOnly, request(Command.TRIM, 0, 512), NbdErrno.EPERM],
    ['WRITE_ZEROES on read-only', readOnly, request(Command.WRITE_ZEROES, 0, 512), NbdErrno.EPERM],
    ['FLUSH on read-only', readOnly, request(Command.FLUSH, 0, 0), 'execute'],
    ['NO_HOLE on WRITE', writable, request(Command.WRITE, 0, 512, CommandFlag.NO_HOLE), NbdErrno.EINVAL],
    [
      'NO_HOLE on WRITE_ZEROES',
      writable,
      request(Command.WRITE_ZEROES, 0, 512, CommandFlag.NO_HOLE),
      'execute',
    ],
    [
      'FAST_ZERO (not offered)',
      writable,
      request(Command.WRITE_ZEROES, 0, 512, CommandFlag.FAST_ZERO),
      NbdErrno.EINVAL,
    ],
    ['CACHE (not offered)', writable, request(Command.CACHE, 0, 512), NbdErrno.EINVAL],
    ['BLOCK_STATUS unselected', writable, request(Command.BLOCK_STATUS, 0, 512), NbdErrno.EINVAL],
    ['unknown command', writable, request(77, 0, 512), NbdErrno.EINVAL],
    ['WRITE_ZEROES without writeZeroes', bare, request(Command.WRITE_ZEROES, 0, 512), NbdErrno.EINVAL],
    ['TRIM without discard', bare, request(Command.TRIM, 0, 512), NbdErrno.EINVAL],
    ['WRITE without writeZeroes', bare, request(Command.WRITE, 0, 512), 'execute'],
    ['WRITE_ZEROES with writeZeroes', writable, request(Command.WRITE_ZEROES, 0, 512), 'execute'],
  ] as const)('%s', (_name, target, input, expected) => {
    const verdict = judgeRequest(input, target);
    if (expected === 'execute' || expected === 'close') expect(verdict.kind).toBe(expected);
    else expect(verdict).toEqual({ kind: 'reply', error: expected });
  });

  it('allows BLOCK_STATUS (with REQ_ONE) once base:allocation is selected', () => {
    expect(
      judgeRequest(request(Command.BLOCK_STATUS, 0, 512, CommandFlag.REQ_ONE), writable, true).kind,
    ).toBe('execute');
    expect(judgeRequest(request(Command.BLOCK_STATUS, 0, 0), writable, true)).toEqual({
      kind: 'reply',
      error: NbdErrno.EINVAL,
    });
  });
});
