/**
 * Real clients against the server: nbdinfo, nbdcopy, qemu-img and qemu-io, spawned for real,
 * with exit codes, output and bytes asserted. The exports are engine-backed: an image file
 * wrapped in the copy-on-write Origin, and Snapshots of it, exactly what fssd will serve.
 *
 * Goal per test, and method:
 *   - metadata: nbdinfo --json reports size, read-only flag and block sizes per export;
 *   - data: nbdcopy in both directions moves the exact bytes;
 *   - point in time: qemu-io pattern writes through the origin export, then qemu-img compare
 *     of the snapshot export against a copy of the image taken at snapshot time (exit 0);
 *   - read-only: qemu-io writes to the snapshot export fail and change nothing;
 *   - concurrency: several nbdcopy readers of the snapshot while nbdcopy and qemu-io write
 *     the origin; every reader gets the snapshot-time bytes;
 *   - NetBSD t_fss `basic`, over NBD.
 */
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type LinuxBlockDevice, openBlockDevice } from '@fss/blockdev-linux';
import { MemoryBackingStore, MemoryBlockDevice } from '@fss/core';
import { Origin, type Snapshot } from '@fss/engine';
import { pattern, tempDir } from '@fss/test-utils';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { NbdServer } from '../src/server';
import { type RunningServer, run, startServer } from './helpers';

const MiB = 1024 * 1024;
const IMAGE_BYTES = 32 * MiB;

let dir: ReturnType<typeof tempDir>;
beforeAll(() => {
  dir = tempDir('fss-nbd-clients-');
});
afterAll(() => dir.remove());

interface EngineExports {
  imagePath: string;
  /** A copy of the image taken at snapshot time. */
  copyPath: string;
  file: LinuxBlockDevice;
  origin: Origin;
  snapshot: Snapshot;
  originServer: RunningServer;
  snapshotServer: RunningServer;
  close: () => Promise<void>;
}

let serial = 0;

/** An image with patterned contents, its Origin and one snapshot, each on its own socket. */
async function startEngineExports(): Promise<EngineExports> {
  serial++;
  const imagePath = join(dir.path, `image${serial}.img`);
  const copyPath = join(dir.path, `image${serial}.copy`);
  writeFileSync(imagePath, pattern(IMAGE_BYTES, serial));
  const file = await openBlockDevice(imagePath, { exclusive: false });
  const origin = new Origin(file, { name: `image${serial}`, logger: () => {} });
  const snapshot = await origin.createSnapshot(new MemoryBackingStore(), { name: 'fss0' });
  copyFileSync(imagePath, copyPath);
  const originServer = await startServer(dir.path, [{ name: `image${serial}`, device: origin }], {
    socketName: `origin${serial}.sock`,
  });
  // No preferredBlockSize: a Snapshot's cluster size is the default.
  const snapshotServer = await startServer(dir.path, [{ name: 'fss0', device: snapshot }], {
    socketName: `fss0-${serial}.sock`,
  });
  return {
    imagePath,
    copyPath,
    file,
    origin,
    snapshot,
    originServer,
    snapshotServer,
    close: async () => {
      await originServer.close();
      await snapshotServer.close();
      await snapshot.close();
      await origin.close();
    },
  };
}

let engine: EngineExports;
beforeEach(async () => {
  engine = await startEngineExports();
});
afterEach(async () => {
  await engine.close();
});

describe('nbdinfo', () => {
  it('reports size, read-only flag and block sizes of the origin and snapshot exports', async () => {
    const origin = await run('nbdinfo', ['--json', engine.originServer.uri()]);
    expect(origin.code, origin.stderr).toBe(0);
    const originInfo = JSON.parse(origin.stdout);
    expect(originInfo.protocol).toBe('newstyle-fixed');
    expect(originInfo.structured).toBe(true);
    expect(originInfo.exports[0]).toMatchObject({
      'export-size': IMAGE_BYTES,
      is_read_only: false,
      can_flush: true,
      can_fua: true,
      can_trim: true,
      can_zero: true,
      can_multi_conn: true,
      block_size_minimum: 512,
      block_size_preferred: 4096,
      block_size_maximum: 32 * MiB,
    });

    const snapshot = await run('nbdinfo', ['--json', engine.snapshotServer.uri('fss0')]);
    expect(snapshot.code, snapshot.stderr).toBe(0);
    expect(JSON.parse(snapshot.stdout).exports[0]).toMatchObject({
      'export-name': 'fss0',
      'export-size': IMAGE_BYTES,
      is_read_only: true,
      can_trim: false,
      can_zero: false,
      block_size_minimum: 512,
      block_size_preferred: 65536,
      block_size_maximum: 32 * MiB,
    });
    const plain = await run('nbdinfo', ['--size', engine.snapshotServer.uri()]);
    expect(plain).toMatchObject({ code: 0, stdout: `${IMAGE_BYTES}\n` });
  });

  it('reaches a TCP listener only on the address it was bound to', async () => {
    const server = new NbdServer({ exports: [{ name: 'fss0', device: engine.snapshot }] });
    const address = await server.listen({ host: '127.0.0.1', port: 0 });
    try {
      const port = 'port' in address ? address.port : 0;
      const info = await run('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/fss0`]);
      expect(info).toMatchObject({ code: 0, stdout: `${IMAGE_BYTES}\n` });
    } finally {
      await server.close();
    }
  });

  it('--map reports base:allocation (all data)', async () => {
    const map = await run('nbdinfo', ['--map', engine.snapshotServer.uri()]);
    expect(map.code, map.stderr).toBe(0);
    expect(map.stdout.trim().split(/\s+/)).toEqual(['0', `${IMAGE_BYTES}`, '0', 'data']);
  });

  it('--list shows every export of a server, by name and description', async () => {
    const listing = await startServer(
      dir.path,
      [
        { name: 'origin', device: engine.origin, description: 'the origin' },
        { name: 'fss0', device: engine.snapshot, description: 'snapshot fss0' },
      ],
      { socketName: 'list.sock' },
    );
    try {
      const result = await run('nbdinfo', ['--list', '--json', listing.uri()]);
      expect(result.code, result.stderr).toBe(0);
      const exports = JSON.parse(result.stdout).exports as Record<string, unknown>[];
      expect(exports.map((each) => [each['export-name'], each.description, each.is_read_only])).toEqual([
        ['origin', 'the origin', false],
        ['fss0', 'snapshot fss0', true],
      ]);
      const text = await run('nbdinfo', ['--list', listing.uri()]);
      expect(text.code).toBe(0);
      expect(text.stdout).toMatch(/export="origin"/);
      expect(text.stdout).toMatch(/export="fss0"/);
    } finally {
      await listing.close();
    }
  });
});

describe('nbdcopy', () => {
  it('copies an export to a file and a file to an export, byte for byte', async () => {
    const out = join(dir.path, 'out.img');
    const read = await run('nbdcopy', [engine.originServer.uri(), out]);
    expect(read.code, read.stderr).toBe(0);
    expect(Buffer.compare(readFileSync(out), readFileSync(engine.imagePath))).toBe(0);

    const source = join(dir.path, 'source.img');
    const bytes = pattern(IMAGE_BYTES, 99);
    bytes.fill(0, 4 * MiB, 8 * MiB); // a zero run: nbdcopy sends WRITE_ZEROES for it
    writeFileSync(source, bytes);
    const write = await run('nbdcopy', ['--flush', source, engine.originServer.uri()]);
    expect(write.code, write.stderr).toBe(0);
    expect(Buffer.compare(readFileSync(engine.imagePath), bytes)).toBe(0);
    // The snapshot still serves the old contents, whatever nbdcopy sent.
    const snap = join(dir.path, 'snap.img');
    expect((await run('nbdcopy', [engine.snapshotServer.uri(), snap])).code).toBe(0);
    expect(Buffer.compare(readFileSync(snap), readFileSync(engine.copyPath))).toBe(0);
  });

  it('writes into a plain in-memory export', async () => {
    const device = new MemoryBlockDevice(8 * MiB);
    const memory = await startServer(dir.path, [{ name: 'mem', device }], { socketName: 'mem.sock' });
    try {
      const source = join(dir.path, 'mem-source.img');
      writeFileSync(source, pattern(8 * MiB, 5));
      const result = await run('nbdcopy', [source, memory.uri()]);
      expect(result.code, result.stderr).toBe(0);
      expect(Buffer.compare(device.bytes, readFileSync(source))).toBe(0);
    } finally {
      await memory.close();
    }
  });
});

describe('qemu', () => {
  it('pattern writes through the origin leave the snapshot equal to the snapshot-time copy', async () => {
    const write = await run('qemu-io', [
      '-f',
      'raw',
      '-c',
      'write -P 0xab 1M 64k',
      '-c',
      'write -P 0xcd 5000k 3k',
      '-c',
      'write -f -P 0x11 31M 1M',
      '-c',
      'write -z 8M 2M',
      '-c',
      'read -P 0xab 1M 64k',
      '-c',
      'flush',
      engine.originServer.uri(),
    ]);
    expect(write.code, write.stderr).toBe(0);
    expect(write.stdout).toMatch(/wrote 65536\/65536 bytes at offset 1048576/);
    expect(write.stdout).toMatch(/read 65536\/65536 bytes at offset 1048576/);

    const snapshot = await run('qemu-img', [
      'compare',
      '-f',
      'raw',
      '-F',
      'raw',
      engine.copyPath,
      engine.snapshotServer.uri(),
    ]);
    expect(snapshot.stderr).toBe('');
    expect(snapshot).toMatchObject({ code: 0, stdout: 'Images are identical.\n' });

    const origin = await run('qemu-img', [
      'compare',
      '-f',
      'raw',
      '-F',
      'raw',
      engine.copyPath,
      engine.originServer.uri(),
    ]);
    expect(origin.code).toBe(1);
    expect(origin.stdout).toMatch(/Content mismatch at offset 1048576!/);
    const image = readFileSync(engine.imagePath);
    expect(image.subarray(MiB, MiB + 65536).every((byte) => byte === 0xab)).toBe(true);
    expect(image.subarray(8 * MiB, 10 * MiB).every((byte) => byte === 0)).toBe(true);
  });

  it('qemu-io writes to a snapshot export are rejected and change nothing', async () => {
    const result = await run('qemu-io', [
      '-f',
      'raw',
      '-c',
      'write -P 0xee 0 64k',
      engine.snapshotServer.uri(),
    ]);
    expect(result.code).not.toBe(0);
    expect(`${result.stdout}${result.stderr}`).toMatch(
      /Permission denied|read-only|Operation not permitted/i,
    );
    const forced = await run('qemu-io', ['-f', 'raw', '-c', 'write -z 0 64k', engine.snapshotServer.uri()]);
    expect(forced.code).not.toBe(0);
    expect(`${forced.stdout}${forced.stderr}`).toMatch(
      /Permission denied|read-only|Operation not permitted/i,
    );
    const compare = await run('qemu-img', [
      'compare',
      '-f',
      'raw',
      '-F',
      'raw',
      engine.copyPath,
      engine.snapshotServer.uri(),
    ]);
    expect(compare.code).toBe(0);
    expect(Buffer.compare(readFileSync(engine.imagePath), readFileSync(engine.copyPath))).toBe(0);
  });
});

describe('concurrency', () => {
  it('several nbdcopy readers of the snapshot during writes to the origin all read the snapshot', async () => {
    const source = join(dir.path, 'concurrent-source.img');
    writeFileSync(source, pattern(IMAGE_BYTES, 77));
    const readers = Array.from({ length: 4 }, (_, index) => join(dir.path, `reader${index}.img`));
    const results = await Promise.all([
      ...readers.map((out) => run('nbdcopy', [engine.snapshotServer.uri(), out])),
      run('nbdcopy', ['--flush', source, engine.originServer.uri()]),
      run('qemu-io', [
        '-f',
        'raw',
        '-c',
        'write -P 0x5a 0 4M',
        '-c',
        'write -P 0x5b 16M 4M',
        engine.originServer.uri(),
      ]),
      ...readers.map((_, index) => run('nbdcopy', [engine.snapshotServer.uri(), `${readers[index]}.2`])),
    ]);
    for (const result of results) expect(result.code, result.stderr).toBe(0);
    const expected = readFileSync(engine.copyPath);
    for (const out of readers) {
      expect(Buffer.compare(readFileSync(out), expected), out).toBe(0);
      expect(Buffer.compare(readFileSync(`${out}.2`), expected), `${out}.2`).toBe(0);
    }
    const compare = await run('qemu-img', [
      'compare',
      '-f',
      'raw',
      '-F',
      'raw',
      engine.copyPath,
      engine.snapshotServer.uri(),
    ]);
    expect(compare.code).toBe(0);
  });
});

describe('NetBSD t_fss basic, over NBD', () => {
  it('the snapshot still reads "Original data" after "Replacement data" went through the origin', async () => {
    const original = join(dir.path, 'original.bin');
    const replacement = join(dir.path, 'replacement.bin');
    writeFileSync(original, Buffer.concat([Buffer.from('Original data\n'), Buffer.alloc(512 - 14)]));
    writeFileSync(replacement, Buffer.concat([Buffer.from('Replacement data\n'), Buffer.alloc(512 - 17)]));
    const device = new MemoryBlockDevice(4 * MiB);
    const origin = new Origin(device, { name: 'basic', logger: () => {} });
    const originServer = await startServer(dir.path, [{ name: 'basic', device: origin }], {
      socketName: 'basic.sock',
    });
    try {
      const first = await run('qemu-io', [
        '-f',
        'raw',
        '-c',
        `write -s ${original} 0 512`,
        originServer.uri(),
      ]);
      expect(first.code, first.stderr).toBe(0);
      const snapshot = await origin.createSnapshot(new MemoryBackingStore(), { name: 'fss0' });
      const snapshotServer = await startServer(dir.path, [{ name: 'fss0', device: snapshot }], {
        socketName: 'basic-fss0.sock',
      });
      try {
        const second = await run('qemu-io', [
          '-f',
          'raw',
          '-c',
          `write -s ${replacement} 0 512`,
          originServer.uri(),
        ]);
        expect(second.code, second.stderr).toBe(0);
        const fromSnapshot = join(dir.path, 'basic-snapshot.img');
        const fromOrigin = join(dir.path, 'basic-origin.img');
        expect((await run('nbdcopy', [snapshotServer.uri(), fromSnapshot])).code).toBe(0);
        expect((await run('nbdcopy', [originServer.uri(), fromOrigin])).code).toBe(0);
        expect(readFileSync(fromSnapshot).subarray(0, 14).toString()).toBe('Original data\n');
        expect(readFileSync(fromOrigin).subarray(0, 17).toString()).toBe('Replacement data\n');
      } finally {
        await snapshotServer.close();
        await snapshot.close();
      }
    } finally {
      await originServer.close();
      await origin.close();
    }
  });
});
