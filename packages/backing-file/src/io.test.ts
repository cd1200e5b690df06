/**
 * The FileHandle adapters of core's complete-transfer loops, against a file that transfers
 * only a few bytes per call (as the kernel may), and that reports end-of-file or no progress.
 * (The loops themselves, dropWritten and the IOV_MAX split are tested in core.)
 */
import { FssError } from '@fss/core';
import { DribblingFile } from '@fss/core/testing';
import { pattern } from '@fss/test-utils';
import { describe, expect, it } from 'vitest';
import { type PositionalFile, preadFully, pwriteFully, pwritevFully } from './io';

/** core's DribblingFile (1..maxChunk bytes per call) in FileHandle's shape. */
class DribblingHandle extends DribblingFile implements PositionalFile {
  async read(buffer: Uint8Array, offset: number, length: number, position: number) {
    return { bytesRead: await this.readAt(buffer, offset, length, position) };
  }

  async write(buffer: Uint8Array, offset: number, length: number, position: number) {
    return { bytesWritten: await this.writeAt(buffer, offset, length, position) };
  }

  async writev(buffers: readonly Uint8Array[], position: number) {
    return { bytesWritten: await this.writevAt(buffers, position) };
  }
}

describe('complete transfers over short ones', () => {
  it('pwriteFully and preadFully move every byte, 1..7 bytes per call', async () => {
    const file = new DribblingHandle(4096, 7, 1);
    const source = pattern(1000, 2);
    await pwriteFully(file, source, 100);
    expect(file.calls).toBeGreaterThan(1000 / 7);
    expect(Buffer.compare(file.bytes.subarray(100, 1100), source)).toBe(0);
    const target = new Uint8Array(1000);
    await preadFully(file, target, 100);
    expect(Buffer.compare(target, source)).toBe(0);
  });

  it('pwritevFully resumes inside a buffer and skips empty ones', async () => {
    const file = new DribblingHandle(4096, 13, 3);
    const sources = [pattern(50, 4), new Uint8Array(0), pattern(1, 5), pattern(300, 6), new Uint8Array(0)];
    await pwritevFully(file, sources, 10);
    expect(Buffer.compare(file.bytes.subarray(10, 361), Buffer.concat(sources))).toBe(0);
    expect(file.bytes.subarray(361).every((byte) => byte === 0)).toBe(true);
  });

  it('preadFully zero-fills what lies past the end of the file', async () => {
    const file = new DribblingHandle(100, 9, 7);
    file.bytes.fill(0x11);
    const target = new Uint8Array(64).fill(0xee);
    await preadFully(file, target, 80);
    expect(target.subarray(0, 20).every((byte) => byte === 0x11)).toBe(true);
    expect(target.subarray(20).every((byte) => byte === 0)).toBe(true);
  });

  it('completes many concurrent requests on one file, each with its own bytes', async () => {
    const file = new DribblingHandle(1 << 16, 4096, 11);
    const sources = Array.from({ length: 50 }, (_, index) => pattern(1000, 20 + index));
    await Promise.all(sources.map((source, index) => pwriteFully(file, source, index * 1000)));
    const target = new Uint8Array(50 * 1000);
    await preadFully(file, target, 0);
    expect(Buffer.compare(target, Buffer.concat(sources))).toBe(0);
    expect(file.calls).toBeGreaterThanOrEqual(51);
  });

  it('fails with EIO, naming the path, when a write makes no progress', async () => {
    const stuck: PositionalFile = {
      read: async () => ({ bytesRead: 0 }),
      write: async () => ({ bytesWritten: 0 }),
      writev: async () => ({ bytesWritten: 0 }),
    };
    const error = await pwriteFully(stuck, new Uint8Array(8), 0, '/x/store').catch((reason) => reason);
    expect(error).toBeInstanceOf(FssError);
    expect(error).toMatchObject({ code: 'EIO', syscall: 'pwrite', path: '/x/store' });
    await expect(pwritevFully(stuck, [new Uint8Array(8)], 0, '/x/store')).rejects.toMatchObject({
      code: 'EIO',
      syscall: 'pwritev',
    });
  });
});
