/**
 * The complete-transfer loops against a file that moves only a few bytes per call (as the
 * kernel may), that ends, that makes no progress, and that fails.
 */
import { describe, expect, it } from 'vitest';
import { FssError } from './errors';
import {
  dropWritten,
  IOV_MAX,
  readFully,
  type WriteAt,
  type WritevAt,
  writeFully,
  writevFully,
} from './positioned-io';
import { SeededRandom } from './random';
import { DribblingFile } from './testing/dribbling-file';

function noise(length: number, seed: number): Uint8Array {
  const random = new SeededRandom(seed);
  return Uint8Array.from({ length }, () => random.integer(0, 255));
}

describe('readFully and writeFully', () => {
  it('move every byte when each call moves 1..7 of them', async () => {
    const file = new DribblingFile(4096, 7, 1);
    const source = noise(1000, 2);
    await writeFully(file.writeAt, source, 100);
    expect(file.calls).toBeGreaterThan(1000 / 7);
    expect(Buffer.compare(file.bytes.subarray(100, 1100), source)).toBe(0);
    const target = new Uint8Array(1000);
    expect(await readFully(file.readAt, target, 100)).toBe(1000);
    expect(Buffer.compare(target, source)).toBe(0);
  });

  it('readFully stops at the end of the file, returns the count and leaves the rest alone', async () => {
    const file = new DribblingFile(100, 9, 3);
    file.bytes.fill(0x11);
    const target = new Uint8Array(64).fill(0xee);
    expect(await readFully(file.readAt, target, 80)).toBe(20);
    expect(target.subarray(0, 20).every((byte) => byte === 0x11)).toBe(true);
    expect(target.subarray(20).every((byte) => byte === 0xee)).toBe(true);
    expect(await readFully(file.readAt, target, 100)).toBe(0);
  });

  it('make no call for an empty request', async () => {
    const file = new DribblingFile(16, 4, 4);
    expect(await readFully(file.readAt, new Uint8Array(0), 0)).toBe(0);
    await writeFully(file.writeAt, new Uint8Array(0), 0);
    await writevFully(file.writevAt, [], 0);
    await writevFully(file.writevAt, [new Uint8Array(0), new Uint8Array(0)], 0);
    expect(file.calls).toBe(0);
  });

  it('fail with EIO naming syscall and path when a write makes no progress', async () => {
    const stuck: WriteAt = async () => 0;
    const error = await writeFully(stuck, new Uint8Array(8), 512, '/x/store').catch((reason) => reason);
    expect(error).toBeInstanceOf(FssError);
    expect(error).toMatchObject({ code: 'EIO', syscall: 'pwrite', path: '/x/store' });
    expect(error.message).toContain('at 512');
    await expect(writevFully(async () => 0, [new Uint8Array(8)], 0, '/x/store')).rejects.toMatchObject({
      code: 'EIO',
      syscall: 'pwritev',
      path: '/x/store',
    });
  });

  it('pass the primitive’s own rejection through unchanged', async () => {
    const failure = new FssError('ENOSPC', undefined, { syscall: 'pwrite', path: '/x' });
    await expect(writeFully(() => Promise.reject(failure), new Uint8Array(4), 0)).rejects.toBe(failure);
    await expect(readFully(() => Promise.reject(failure), new Uint8Array(4), 0)).rejects.toBe(failure);
    await expect(writevFully(() => Promise.reject(failure), [new Uint8Array(4)], 0)).rejects.toBe(failure);
  });

  it('assert on a primitive that claims more bytes than it was asked for', async () => {
    await expect(readFully(async (_b, _o, length) => length + 1, new Uint8Array(4), 0)).rejects.toThrow(
      /pread returned 5 of 4/,
    );
    await expect(writeFully(async (_b, _o, length) => length + 1, new Uint8Array(4), 0)).rejects.toThrow(
      /pwrite returned 5 of 4/,
    );
  });
});

describe('writevFully', () => {
  it('resumes inside a buffer and skips empty ones', async () => {
    const file = new DribblingFile(4096, 13, 5);
    const sources = [noise(50, 6), new Uint8Array(0), noise(1, 7), noise(300, 8), new Uint8Array(0)];
    await writevFully(file.writevAt, sources, 10);
    expect(Buffer.compare(file.bytes.subarray(10, 361), Buffer.concat(sources))).toBe(0);
    expect(file.bytes.subarray(361).every((byte) => byte === 0)).toBe(true);
  });

  it('hands at most IOV_MAX buffers to one call', async () => {
    const bytes = new Uint8Array(8 * 1024);
    const buffersPerCall: number[] = [];
    const writeAll: WritevAt = async (buffers, position) => {
      buffersPerCall.push(buffers.length);
      const joined = Buffer.concat(buffers);
      bytes.set(joined, position);
      return joined.length;
    };
    const sources = Array.from({ length: IOV_MAX * 2 + 5 }, (_, index) => noise(3, 100 + index));
    await writevFully(writeAll, sources, 0);
    expect(buffersPerCall).toEqual([IOV_MAX, IOV_MAX, 5]);
    expect(Buffer.compare(bytes.subarray(0, sources.length * 3), Buffer.concat(sources))).toBe(0);
  });
});

describe('dropWritten', () => {
  const a = Uint8Array.of(1, 2, 3);
  const b = Uint8Array.of(4, 5);
  const c = Uint8Array.of(6, 7, 8, 9);

  it('drops whole buffers and cuts the partly written one to its tail', () => {
    expect(dropWritten([a, b, c], 0).map((x) => [...x])).toEqual([
      [1, 2, 3],
      [4, 5],
      [6, 7, 8, 9],
    ]);
    expect(dropWritten([a, b, c], 3).map((x) => [...x])).toEqual([
      [4, 5],
      [6, 7, 8, 9],
    ]);
    expect(dropWritten([a, b, c], 4).map((x) => [...x])).toEqual([[5], [6, 7, 8, 9]]);
    expect(dropWritten([a, b, c], 8).map((x) => [...x])).toEqual([[9]]);
    expect(dropWritten([a, b, c], 9)).toEqual([]);
  });

  it('returns views, not copies', () => {
    const [tail] = dropWritten([c], 1);
    expect(tail!.buffer).toBe(c.buffer);
    expect(tail!.byteOffset).toBe(c.byteOffset + 1);
  });

  it('asserts on more bytes written than asked', () => {
    expect(() => dropWritten([a], 4)).toThrow(/4 bytes written of 3/);
  });
});
