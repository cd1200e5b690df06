/**
 * Goal: a BlockDevice attached as /dev/loopN over our FUSE file is a real block device: what
 * the kernel writes lands in the device byte for byte, what it reads is the device's, a
 * read-only attach refuses writes, sizes are exact (also when not a multiple of 4096 or 512),
 * many requests run at once without corrupting each other, ext4 works on it, and teardown
 * (or a killed server plus removeStaleMount) leaves no mount, loop device or process.
 *
 * Method: the server runs in this process and every access to the file, the loop device or
 * a filesystem on it happens in a child process (dd, fio, mkfs.ext4, mount, cp, e2fsck),
 * started asynchronously; see helpers.ts for why. Contents are compared with the device's
 * bytes (MemoryBlockDevice) or the image file (openBlockDevice) after the attach is closed.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, statfsSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loopBackingFile, loopDevicesUnder, openBlockDevice } from '@fss/blockdev-linux';
import { FaultyBlockDevice, MemoryBlockDevice } from '@fss/core';
import { firstDifference } from '@fss/core/testing';
import { afterAll, describe, expect, it } from 'vitest';
import { isFssFuseMounted, removeStaleMount } from '../src';
import {
  isRoot,
  pattern,
  ROOT_REASON,
  run,
  runBytes,
  runOk,
  tempDir,
  unreleased,
  withAttached,
} from './helpers';

const MiB = 1024 * 1024;
const canRun = isRoot && ['/dev/fuse', '/dev/loop-control'].every((path) => existsSync(path));

/** The device's whole contents, read through a child (dd with O_DIRECT). */
async function readThroughKernel(path: string, direct = true): Promise<Buffer> {
  const result = await runBytes('dd', [
    `if=${path}`,
    'bs=1M',
    ...(direct ? ['iflag=direct'] : []),
    'status=none',
  ]);
  if (result.code !== 0) throw new Error(`dd if=${path}: ${result.stderr}`);
  return result.stdout;
}

/** Writes `data` at byte `offset` of `path` through a child dd (oflag=direct when asked). */
async function writeThroughKernel(
  path: string,
  data: Uint8Array,
  offset: number,
  scratch: string,
  direct = true,
) {
  const source = join(scratch, `chunk-${offset}`);
  writeFileSync(source, data); // a temporary file of ours, not on the served mount
  const block = direct ? 4096 : 1;
  return run('dd', [
    `if=${source}`,
    `of=${path}`,
    `bs=${block}`,
    `seek=${offset / block}`,
    'conv=notrunc',
    ...(direct ? ['oflag=direct'] : []),
    'status=none',
  ]);
}

/** Starts fixtures/serve-forever.ts on `mountPoint`; resolves with the child and its loop device. */
async function startServer(mountPoint: string, mode: 'serve' | 'exit') {
  const fixture = fileURLToPath(new URL('./fixtures/serve-forever.ts', import.meta.url));
  const child = spawn(
    process.execPath,
    ['--conditions=@fss/source', '--import', 'tsx', fixture, mountPoint, mode],
    { cwd: fileURLToPath(new URL('..', import.meta.url)), stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const loopPath = await new Promise<string>((resolve, reject) => {
    let output = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('\n')) resolve(output.split('\n')[0]!.trim());
    });
    void exited.then((code) => reject(new Error(`serve-forever exited ${code} before attaching`)));
  });
  return { child, exited, loopPath };
}

describe.skipIf(!canRun)(`FUSE file + loop device (${ROOT_REASON}; needs /dev/fuse)`, () => {
  const scratch = tempDir('fss-fuse-scratch-');
  afterAll(async () => {
    for (const release of [...unreleased]) await release().catch(() => undefined);
    scratch.remove();
  });

  it('bytes written through /dev/loopN land in a MemoryBlockDevice and read back byte for byte', async () => {
    const device = new MemoryBlockDevice(pattern(8 * MiB, 1));
    await withAttached(device, {}, async ({ loop, file }) => {
      expect(loop.path).toMatch(/^\/dev\/loop\d+$/);
      expect(loop.directIo).toBe(true);
      expect((await runOk('blockdev', ['--getsize64', '--getss', loop.path])).split('\n')).toEqual([
        String(8 * MiB),
        '512',
        '',
      ]);
      const data = pattern(3 * MiB, 2);
      const written = await writeThroughKernel(loop.path, data, 1 * MiB + 4096, scratch.path);
      expect(written.code, written.stderr).toBe(0);
      expect(firstDifference(device.bytes.subarray(MiB + 4096, MiB + 4096 + data.length), data)).toBe(-1);
      const read = await readThroughKernel(loop.path);
      expect(read.length).toBe(8 * MiB);
      expect(firstDifference(read, device.bytes)).toBe(-1);
      expect(file.stats.byOpcode.WRITE).toBeGreaterThan(0);
    });
  });

  it('the serving thread itself can stat its file after writes: the readers answer GETATTR/LOOKUP/STATFS', async () => {
    // A synchronous stat on the main thread waits for a reply; before the readers answered
    // attribute requests themselves, only the main thread could give it: a deadlock that not
    // even SIGKILL ended. Writes invalidate the kernel's cached attributes, so the stats here
    // reach the server.
    const device = new MemoryBlockDevice(4 * MiB);
    await withAttached(device, {}, async ({ loop, file }) => {
      const written = await writeThroughKernel(loop.path, pattern(64 * 1024, 3), 0, scratch.path);
      expect(written.code, written.stderr).toBe(0);
      const before = file.stats.readerAnswers;
      const stat = statSync(file.path); // the main thread, the one that answers everything else
      expect(stat.size).toBe(4 * MiB);
      expect(statfsSync(file.mountPoint).bsize).toBeGreaterThan(0);
      expect(statSync(file.mountPoint).isDirectory()).toBe(true);
      expect(() => statSync(join(file.mountPoint, 'no-such-file'))).toThrow(/ENOENT/);
      expect(file.stats.readerAnswers).toBeGreaterThan(before);
    });
  });

  it('a real image through openBlockDevice: the image file holds what was written through the loop', async () => {
    const image = join(scratch.path, 'image.raw');
    const original = pattern(16 * MiB, 3);
    writeFileSync(image, original);
    const device = await openBlockDevice(image);
    const data = pattern(4 * MiB + 512, 4);
    try {
      await withAttached(device, {}, async ({ loop, file }) => {
        const written = await writeThroughKernel(loop.path, data, 5 * MiB, scratch.path);
        expect(written.code, written.stderr).toBe(0);
        const read = await readThroughKernel(loop.path);
        const expected = Buffer.from(original);
        expected.set(data, 5 * MiB);
        expect(firstDifference(read, expected)).toBe(-1);
        // Requests no larger than one FUSE WRITE (1 MiB): none is split in two.
        const limit = readFileSync(`/sys/block/loop${loop.number}/queue/max_sectors_kb`, 'utf8');
        expect(limit.trim()).toBe('1024');
        // The device offers its descriptor: the reader threads did the I/O themselves.
        expect(file.stats.workerWrites).toBeGreaterThan(0);
        expect(file.stats.workerReads).toBeGreaterThan(0);
      });
    } finally {
      await device.close();
    }
    const expected = Buffer.from(original);
    expected.set(data, 5 * MiB);
    expect(firstDifference(readFileSync(image), expected)).toBe(-1); // the image is no longer served
  });

  it('read-only: writes through the loop device and the file fail, reads work, the device is untouched', async () => {
    const device = new MemoryBlockDevice(pattern(2 * MiB, 5));
    const before = Buffer.from(device.bytes);
    await withAttached(device, { readOnly: true }, async ({ loop, file }) => {
      expect(loop.readOnly).toBe(true);
      expect((await runOk('blockdev', ['--getro', loop.path])).trim()).toBe('1');
      const viaLoop = await writeThroughKernel(loop.path, pattern(4096, 6), 0, scratch.path);
      expect(viaLoop.code).not.toBe(0);
      const viaFile = await writeThroughKernel(file.path, pattern(4096, 6), 0, scratch.path, false);
      expect(viaFile.code).not.toBe(0);
      expect(viaFile.stderr).toMatch(/Read-only file system/);
      expect(firstDifference(await readThroughKernel(loop.path), before)).toBe(-1);
    });
    expect(firstDifference(device.bytes, before)).toBe(-1);
  });

  it('sizes are exact: a file of 1 000 003 bytes (not a multiple of 512), a loop of whole sectors', async () => {
    const size = 1_000_003;
    const device = new MemoryBlockDevice(pattern(size, 7));
    await withAttached(device, {}, async ({ loop, file }) => {
      expect((await runOk('stat', ['-c', '%s', file.path])).trim()).toBe(String(size));
      const whole = await readThroughKernel(file.path, false);
      expect(whole.length).toBe(size);
      expect(firstDifference(whole, device.bytes)).toBe(-1);
      // The last 3 bytes are only reachable through the file; write them there, byte-granular.
      const tail = await writeThroughKernel(
        file.path,
        new Uint8Array([1, 2, 3]),
        size - 3,
        scratch.path,
        false,
      );
      expect(tail.code, tail.stderr).toBe(0);
      expect([...device.bytes.subarray(size - 3)]).toEqual([1, 2, 3]);
      const sectors = size - (size % 512);
      expect((await runOk('blockdev', ['--getsize64', loop.path])).trim()).toBe(String(sectors));
      expect(firstDifference(await readThroughKernel(loop.path), device.bytes.subarray(0, sectors))).toBe(-1);
    });
  });

  it('4096-byte sectors: the loop device takes the device logical sector size; size 3 MiB + 512', async () => {
    const size = 3 * MiB + 512;
    const device = new MemoryBlockDevice(pattern(size, 8), { logicalSectorSize: 4096 });
    await withAttached(device, {}, async ({ loop, file }) => {
      expect(loop.blockSizeBytes).toBe(4096);
      expect((await runOk('blockdev', ['--getss', loop.path])).trim()).toBe('4096');
      expect((await runOk('stat', ['-c', '%s', file.path])).trim()).toBe(String(size));
      const read = await readThroughKernel(loop.path);
      expect(read.length).toBe(3 * MiB); // whole 4 KiB sectors only
      expect((await runOk('blockdev', ['--getsize64', loop.path])).trim()).toBe(String(3 * MiB));
      expect(firstDifference(read, device.bytes.subarray(0, 3 * MiB))).toBe(-1);
    });
  });

  it('many requests at once (fio QD 16 with verify, 8 dd children): all land, none lost or mixed', async () => {
    const inner = new MemoryBlockDevice(16 * MiB);
    const device = new FaultyBlockDevice(inner, { seed: 9, latencyMs: { min: 0, max: 2 } });
    await withAttached(device, {}, async ({ loop, file }) => {
      const fio = await run('fio', [
        '--name=verify',
        `--filename=${loop.path}`,
        '--direct=1',
        '--ioengine=libaio',
        '--rw=randwrite',
        '--bs=4k',
        '--iodepth=16',
        '--size=4M',
        '--verify=crc32c',
        '--do_verify=1',
        '--verify_state_save=0', // no local-verify-*.state file left in the cwd
        '--output-format=terse',
      ]);
      expect(fio.code, fio.stderr).toBe(0);
      expect(file.stats.maxInFlight).toBeGreaterThan(4);
      const chunks = Array.from({ length: 8 }, (_, index) => pattern(MiB, 20 + index));
      const results = await Promise.all(
        chunks.map((chunk, index) => writeThroughKernel(loop.path, chunk, (8 + index) * MiB, scratch.path)),
      );
      for (const result of results) expect(result.code, result.stderr).toBe(0);
      chunks.forEach((chunk, index) => {
        const at = (8 + index) * MiB;
        expect(firstDifference(inner.bytes.subarray(at, at + MiB), chunk), `chunk ${index}`).toBe(-1);
      });
    });
  });

  it('ext4: mkfs, mount, write files, unmount, e2fsck -fn clean, files intact', async () => {
    const image = join(scratch.path, 'ext4.raw');
    writeFileSync(image, Buffer.alloc(0));
    await runOk('truncate', ['-s', String(64 * MiB), image]);
    const device = await openBlockDevice(image);
    const big = join(scratch.path, 'big.bin');
    writeFileSync(big, pattern(6 * MiB, 10));
    const mountPoint = tempDir('fss-fuse-ext4-');
    try {
      await withAttached(device, {}, async ({ loop }) => {
        await runOk('mkfs.ext4', ['-q', '-F', loop.path]);
        await runOk('mount', [loop.path, mountPoint.path]);
        try {
          await runOk('cp', [big, join(mountPoint.path, 'big.bin')]);
          await runOk('sh', ['-c', `echo hello > ${join(mountPoint.path, 'hello.txt')}`]);
          await runOk('sync', []);
          const sums = await runOk('sha256sum', [big, join(mountPoint.path, 'big.bin')]);
          const [first, second] = sums.split('\n').map((line) => line.split(' ')[0]);
          expect(second).toBe(first);
        } finally {
          await runOk('umount', [mountPoint.path]);
        }
        const fsck = await run('e2fsck', ['-fn', loop.path]);
        expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0);
      });
    } finally {
      await device.close();
      mountPoint.remove();
    }
    const fsck = await run('e2fsck', ['-fn', image]);
    expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0);
    expect((await runOk('debugfs', ['-R', 'cat /hello.txt', image])).trim()).toBe('hello');
  });

  it('close() while the loop device is mounted: EBUSY, keeps serving; after umount it closes', async () => {
    const device = new MemoryBlockDevice(32 * MiB);
    const mountPoint = tempDir('fss-fuse-busy-');
    try {
      await withAttached(device, {}, async (attached) => {
        await runOk('mkfs.ext4', ['-q', '-F', attached.loop.path]);
        await runOk('mount', [attached.loop.path, mountPoint.path]);
        let mounted = true;
        try {
          await expect(attached.close()).rejects.toMatchObject({ code: 'EBUSY' });
          await runOk('sh', ['-c', `echo still > ${join(mountPoint.path, 'after.txt')} && sync`]);
          await runOk('umount', [mountPoint.path]);
          mounted = false;
        } finally {
          if (mounted) await run('umount', [mountPoint.path]);
        }
      });
    } finally {
      mountPoint.remove();
    }
  });

  it('teardown leaves no mount and no loop device behind', async () => {
    const device = new MemoryBlockDevice(MiB);
    let mountPoint = '';
    let loopPath = '';
    await withAttached(device, {}, async ({ file, loop }) => {
      mountPoint = file.mountPoint;
      loopPath = loop.path;
      expect(await isFssFuseMounted(mountPoint)).toBe(true);
      expect(await loopDevicesUnder(mountPoint)).toEqual([loop.path]);
    });
    expect(await isFssFuseMounted(mountPoint)).toBe(false);
    expect(await loopDevicesUnder(mountPoint)).toEqual([]);
    const listed = await runOk('losetup', ['-a', '-n', '-O', 'NAME,BACK-FILE']);
    expect(listed).not.toContain(mountPoint);
    expect(
      listed.split('\n').some((line) => line.startsWith(`${loopPath} `) && line.includes('/device')),
    ).toBe(false);
  });

  it('a server killed by SIGKILL: I/O fails fast (no hang), removeStaleMount detaches and unmounts', async () => {
    const mountPoint = tempDir('fss-fuse-killed-');
    let server: Awaited<ReturnType<typeof startServer>> | undefined;
    const cleanup = async () => {
      unreleased.delete(cleanup);
      server?.child.kill('SIGKILL');
      await server?.exited;
      await removeStaleMount(mountPoint.path);
      if (!(await isFssFuseMounted(mountPoint.path))) mountPoint.remove();
    };
    unreleased.add(cleanup);
    try {
      server = await startServer(mountPoint.path, 'serve');
      const { loopPath } = server;
      expect(loopPath).toMatch(/^\/dev\/loop\d+$/);
      server.child.kill('SIGKILL');
      await server.exited;
      // What SIGKILL leaves: the mount point and the loop device; I/O fails instead of hanging.
      expect(await isFssFuseMounted(mountPoint.path)).toBe(true);
      expect(await loopDevicesUnder(mountPoint.path)).toEqual([loopPath]);
      const started = Date.now();
      const read = await run('dd', [`if=${loopPath}`, 'of=/dev/null', 'bs=4096', 'count=1', 'iflag=direct'], {
        timeoutMs: 20_000,
      });
      expect(read.code).not.toBe(0);
      expect(Date.now() - started).toBeLessThan(15_000);
      expect(await removeStaleMount(mountPoint.path)).toEqual({ loops: [loopPath], unmounted: true });
      expect(await isFssFuseMounted(mountPoint.path)).toBe(false);
      expect(await loopDevicesUnder(mountPoint.path)).toEqual([]);
    } finally {
      await cleanup();
    }
  });

  it('a server that exits without close(): its exit hooks detach the loop device and unmount', async () => {
    const mountPoint = tempDir('fss-fuse-exit-');
    let server: Awaited<ReturnType<typeof startServer>> | undefined;
    const cleanup = async () => {
      unreleased.delete(cleanup);
      server?.child.kill('SIGKILL');
      await server?.exited;
      await removeStaleMount(mountPoint.path);
      if (!(await isFssFuseMounted(mountPoint.path))) mountPoint.remove();
    };
    unreleased.add(cleanup);
    try {
      server = await startServer(mountPoint.path, 'exit');
      expect(await server.exited).toBe(0);
      expect(await isFssFuseMounted(mountPoint.path)).toBe(false);
      // Unbound (or already reused by a parallel test for a file of its own, never ours).
      const backing = await loopBackingFile(server.loopPath.slice('/dev/'.length));
      expect(backing === undefined || !backing.endsWith('/device')).toBe(true);
    } finally {
      await cleanup();
    }
  });
});
