/**
 * writeZeroesByWriting: the one write-zeroes fallback. Zeroes arrive through `write` in
 * bounded pieces of one reused buffer, the range is checked before anything is written, and
 * the buffer comes from the device's allocateBuffer when it has one.
 */
import { describe, expect, it } from 'vitest';
import { writeAll, writeZeroesByWriting, ZERO_CHUNK_BYTES, type ZeroWritable } from './device';
import { FssError } from './errors';
import { MemoryBackingStore, MemoryBlockDevice } from './memory';

/** A device that only has size and write (and counts what it is sent). */
function writeOnly(size: number, allocate?: (length: number) => Uint8Array) {
  const memory = new MemoryBlockDevice(size);
  memory.bytes.fill(0xee);
  const sent: Uint8Array[] = [];
  const device: ZeroWritable = {
    size,
    path: '/dev/test',
    write: async (source, offset) => {
      sent.push(source);
      await memory.write(source, offset);
    },
    ...(allocate === undefined ? {} : { allocateBuffer: allocate }),
  };
  return { device, memory, sent };
}

describe('writeZeroesByWriting', () => {
  it('zeroes exactly the range, in pieces of at most ZERO_CHUNK_BYTES from one buffer', async () => {
    const { device, memory, sent } = writeOnly(4 * ZERO_CHUNK_BYTES);
    const offset = 1000;
    const length = 2 * ZERO_CHUNK_BYTES + 12_345;
    await writeZeroesByWriting(device, offset, length);
    expect(sent.map((piece) => piece.length)).toEqual([ZERO_CHUNK_BYTES, ZERO_CHUNK_BYTES, 12_345]);
    expect(new Set(sent.map((piece) => piece.buffer)).size).toBe(1);
    expect(memory.bytes.subarray(offset, offset + length).every((byte) => byte === 0)).toBe(true);
    expect(memory.bytes[offset - 1]).toBe(0xee);
    expect(memory.bytes[offset + length]).toBe(0xee);
  });

  it('reuses one zero buffer for every device without allocateBuffer', async () => {
    const first = writeOnly(ZERO_CHUNK_BYTES);
    const second = writeOnly(ZERO_CHUNK_BYTES);
    await writeZeroesByWriting(first.device, 0, 512);
    await writeZeroesByWriting(second.device, 0, 512);
    await writeZeroesByWriting(second.device, 512, 512);
    const buffers = [...first.sent, ...second.sent].map((piece) => piece.buffer);
    expect(buffers).toHaveLength(3);
    expect(new Set(buffers).size).toBe(1);
  });

  it('takes its buffer from the device’s allocateBuffer, once per device', async () => {
    const allocations: number[] = [];
    const { device, sent } = writeOnly(4 * ZERO_CHUNK_BYTES, (length) => {
      allocations.push(length);
      return new Uint8Array(length).fill(0x55); // garbage: the helper must zero it
    });
    await writeZeroesByWriting(device, 0, 4096);
    await writeZeroesByWriting(device, 8192, ZERO_CHUNK_BYTES + 1);
    expect(allocations).toEqual([ZERO_CHUNK_BYTES]);
    expect(sent.every((piece) => piece.every((byte) => byte === 0))).toBe(true);
    expect(new Set(sent.map((piece) => piece.buffer)).size).toBe(1);
  });

  it('uses the zero chunk it is given, and refuses one that is not zeroes', async () => {
    const { device, memory, sent } = writeOnly(1 << 20);
    const chunk = new Uint8Array(4096);
    await writeZeroesByWriting(device, 100, 10_000, chunk);
    expect(sent.map((piece) => piece.length)).toEqual([4096, 4096, 1808]);
    expect(sent.every((piece) => piece.buffer === chunk.buffer)).toBe(true);
    expect(memory.bytes.subarray(100, 10_100).every((byte) => byte === 0)).toBe(true);
    await expect(writeZeroesByWriting(device, 0, 1, new Uint8Array(8).fill(1))).rejects.toThrow(/zeroes/);
  });

  it('checks the whole range first: ENOSPC across the end with nothing written, EINVAL for bad offsets', async () => {
    const { device, memory, sent } = writeOnly(1 << 20);
    const error = await writeZeroesByWriting(device, (1 << 20) - 512, 4096).catch((reason) => reason);
    expect(error).toBeInstanceOf(FssError);
    expect(error).toMatchObject({ code: 'ENOSPC', path: '/dev/test' });
    await expect(writeZeroesByWriting(device, -1, 1)).rejects.toMatchObject({ code: 'EINVAL' });
    await writeZeroesByWriting(device, 1 << 20, 0);
    expect(sent).toHaveLength(0);
    expect(memory.bytes.every((byte) => byte === 0xee)).toBe(true);
  });
});

describe('writeAll', () => {
  it('writes back to back without writev, and through writev when the store has it', async () => {
    const plain = new MemoryBackingStore();
    await writeAll(plain, [Uint8Array.of(1, 2), Uint8Array.of(3)], 10);
    const target = new Uint8Array(3);
    await plain.read(target, 10);
    expect([...target]).toEqual([1, 2, 3]);
    const calls: number[] = [];
    const withWritev = Object.assign(new MemoryBackingStore(), {
      writev: async (sources: readonly Uint8Array[], offset: number) => {
        calls.push(sources.length);
        await writeAll(plain, sources, offset);
      },
    });
    await writeAll(withWritev, [Uint8Array.of(4), Uint8Array.of(5)], 0);
    expect(calls).toEqual([2]);
  });
});
