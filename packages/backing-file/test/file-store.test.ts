/**
 * FileBackingStore's own cases: what the conformance suite cannot know about a file: how it
 * is created (0600, O_EXCL, no symlinks, no truncation), what it refuses, sparseness, and
 * unlinkOnOpen. Each test works in its own temporary directory.
 */
import { execFileSync } from 'node:child_process';
import {
  lstat,
  mkdir,
  readFile,
  readlink,
  stat,
  statfs,
  symlink,
  truncate,
  writeFile,
} from 'node:fs/promises';
import { join } from 'node:path';
import { FileBackingStore, openFileBackingStore } from '@fss/backing-file';
import { FssError } from '@fss/core';
import { tempDir } from '@fss/test-utils';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { rejection } from './helpers';

let dir: string;
let removeDir: () => void;
const stores: FileBackingStore[] = [];

beforeEach(() => {
  ({ path: dir, remove: removeDir } = tempDir('fss-backing-file-'));
});

afterEach(async () => {
  for (const store of stores.splice(0)) await store.close();
  removeDir();
});

async function openStore(path: string, options?: Parameters<typeof FileBackingStore.open>[1]) {
  const store = await FileBackingStore.open(path, options);
  stores.push(store);
  return store;
}

/** Asserts `error` is an FssError with this code, syscall and path, and returns it. */
function expectFssError(error: unknown, code: string, syscall: string, path: string): FssError {
  expect(error).toBeInstanceOf(FssError);
  const fssError = error as FssError;
  expect(fssError.code).toBe(code);
  expect(fssError.syscall).toBe(syscall);
  expect(fssError.path).toBe(path);
  return fssError;
}

describe('creating', () => {
  it('creates the file with mode 0600 whatever the umask', async () => {
    const path = join(dir, 'store');
    // A umask that takes the owner's write bit away: the mode must still end up 0600.
    const previous = process.umask(0o277);
    try {
      const store = await openStore(path);
      expect(store.created).toBe(true);
    } finally {
      process.umask(previous);
    }
    expect((await stat(path)).mode & 0o7777).toBe(0o600);
  });

  it('refuses an existing path by default (EEXIST) and leaves the file as it was', async () => {
    const path = join(dir, 'store');
    await writeFile(path, 'precious contents', { mode: 0o644 });
    const error = await rejection(openFileBackingStore(path));
    expect(expectFssError(error, 'EEXIST', 'open', path).message).toMatch(/create: 'existing'/);
    expect(await readFile(path, 'utf8')).toBe('precious contents');
    expect((await stat(path)).mode & 0o777).toBe(0o644);
  });

  it("opens an existing file with 'existing' and 'either' without truncating it", async () => {
    const path = join(dir, 'store');
    await writeFile(path, 'precious contents');
    for (const create of ['existing', 'either'] as const) {
      const store = await openStore(path, { create });
      expect(store.created).toBe(false);
      const target = new Uint8Array(17);
      await store.read(target, 0);
      expect(Buffer.from(target).toString()).toBe('precious contents');
      await store.close();
      expect(await readFile(path, 'utf8')).toBe('precious contents');
    }
  });

  it("creates with 'either' when nothing is there, and fails 'existing' with ENOENT creating nothing", async () => {
    const missing = join(dir, 'missing');
    expectFssError(
      await rejection(openFileBackingStore(missing, { create: 'existing' })),
      'ENOENT',
      'open',
      missing,
    );
    await expect(lstat(missing)).rejects.toMatchObject({ code: 'ENOENT' });
    const store = await openStore(join(dir, 'either'), { create: 'either' });
    expect(store.created).toBe(true);
  });

  it('grows the file to sizeBytes sparsely, and never shrinks an existing file', async () => {
    const path = join(dir, 'sized');
    const store = await openStore(path, { sizeBytes: 1024 ** 3 });
    const info = await store.stat();
    expect(info.sizeBytes).toBe(1024 ** 3);
    expect(info.allocatedBytes).toBeLessThan(1024 * 1024);
    await store.close();
    const reopened = await openStore(path, { create: 'existing', sizeBytes: 4096 });
    expect((await reopened.stat()).sizeBytes).toBe(1024 ** 3);
  });

  it('rejects bad options with EINVAL before creating anything', async () => {
    const path = join(dir, 'store');
    for (const options of [{ sizeBytes: -1 }, { sizeBytes: 1.5 }, { create: 'always' as never }]) {
      const error = await rejection(openFileBackingStore(path, options));
      expect(error).toBeInstanceOf(FssError);
      expect((error as FssError).code).toBe('EINVAL');
    }
    await expect(lstat(path)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('removes a file it created when a later step of opening fails', async () => {
    const path = join(dir, 'store');
    // No Linux filesystem holds a file of 2^53-1 bytes: ftruncate fails (EFBIG or EINVAL)
    // after the file was created, and the open must take the file away again.
    const error = await rejection(openFileBackingStore(path, { sizeBytes: Number.MAX_SAFE_INTEGER }));
    expect(error).toBeInstanceOf(FssError);
    expect(['EFBIG', 'EINVAL']).toContain((error as FssError).code);
    expect((error as FssError).syscall).toBe('ftruncate');
    await expect(lstat(path)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('refusing what is not a regular file', () => {
  it('never follows a symlink, and leaves the link and its target untouched', async () => {
    const target = join(dir, 'target');
    const link = join(dir, 'link');
    await writeFile(target, 'target contents', { mode: 0o644 });
    await symlink(target, link);
    expectFssError(await rejection(openFileBackingStore(link)), 'EEXIST', 'open', link);
    for (const create of ['existing', 'either'] as const) {
      const error = await rejection(openFileBackingStore(link, { create, sizeBytes: 1 << 20 }));
      expect(expectFssError(error, 'ELOOP', 'open', link).message).toMatch(/symbolic link/);
    }
    expect(await readFile(target, 'utf8')).toBe('target contents');
    expect((await stat(target)).mode & 0o777).toBe(0o644);
    expect(await readlink(link)).toBe(target);
  });

  it('does not create the target of a dangling symlink', async () => {
    const target = join(dir, 'nowhere');
    const link = join(dir, 'dangling');
    await symlink(target, link);
    for (const create of ['new', 'either'] as const) {
      await expect(openFileBackingStore(link, { create })).rejects.toBeInstanceOf(FssError);
    }
    await expect(lstat(target)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('refuses a directory with EISDIR', async () => {
    for (const create of ['existing', 'either'] as const) {
      const error = await rejection(openFileBackingStore(dir, { create }));
      expect(expectFssError(error, 'EISDIR', 'open', dir).message).toMatch(/directory/);
    }
  });

  it('refuses a character device and a FIFO with EINVAL, naming what it is', async () => {
    const devNull = await rejection(openFileBackingStore('/dev/null', { create: 'existing' }));
    expect(expectFssError(devNull, 'EINVAL', 'fstat', '/dev/null').message).toMatch(
      /character device, not a regular file/,
    );
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const error = await rejection(openFileBackingStore(fifo, { create: 'either', sizeBytes: 4096 }));
    expect(expectFssError(error, 'EINVAL', 'fstat', fifo).message).toMatch(/FIFO/);
    expect((await lstat(fifo)).isFIFO()).toBe(true);
  });
});

describe('using the store', () => {
  it("takes the block size from the file's filesystem", async () => {
    const store = await openStore(join(dir, 'store'));
    expect(store.blockSize).toBe((await statfs(dir)).bsize);
  });

  it('stays sparse: a write at a large offset allocates about one block', async () => {
    const store = await openStore(join(dir, 'store'));
    const offset = 8 * 1024 ** 3 + 64 * 1024;
    await store.write(new Uint8Array(4096).fill(0x5a), offset);
    const info = await store.stat();
    expect(info.sizeBytes).toBe(offset + 4096);
    expect(info.allocatedBytes).toBeLessThan(1024 * 1024);
    expect(info.allocatedBytes * 1000).toBeLessThan(info.sizeBytes);
  });

  it('reads zeroes past the end of a file that was shortened behind its back', async () => {
    const path = join(dir, 'store');
    const store = await openStore(path);
    await store.write(new Uint8Array(8192).fill(7), 0);
    await truncate(path, 4096);
    const target = new Uint8Array(8192).fill(0xff);
    await store.read(target, 0);
    expect(target.subarray(0, 4096).every((byte) => byte === 7)).toBe(true);
    expect(target.subarray(4096).every((byte) => byte === 0)).toBe(true);
  });

  it('unlinks the path once open with unlinkOnOpen, and keeps working', async () => {
    const path = join(dir, 'store');
    const store = await openStore(path, { unlinkOnOpen: true, sizeBytes: 1 << 20 });
    expect(store.unlinked).toBe(true);
    await expect(lstat(path)).rejects.toMatchObject({ code: 'ENOENT' });
    const source = new Uint8Array(65536).map((_, index) => index % 251);
    await store.write(source, 4096);
    await store.flush();
    const target = new Uint8Array(65536);
    await store.read(target, 4096);
    expect(Buffer.compare(target, source)).toBe(0);
    expect((await store.stat()).sizeBytes).toBe(1 << 20);
    // The name is free again: a second store can be created there.
    const second = await openStore(path);
    expect(second.created).toBe(true);
  });

  it('names the syscall and the path in errors after close', async () => {
    const path = join(dir, 'store');
    const store = await openStore(path);
    await store.close();
    const error = await rejection(store.read(new Uint8Array(512), 0));
    expect(expectFssError(error, 'EBADF', 'pread', path).message).toBe(
      `EBADF: backing store is closed, pread '${path}'`,
    );
  });
});

const isRoot = process.getuid?.() === 0;

// Making a small full filesystem needs mount(2); without root these cases are skipped, and
// vitest lists them as skipped under this name.
describe.skipIf(!isRoot)('on a full filesystem (root only: mounts a 1 MiB tmpfs)', () => {
  let mountPoint: string | undefined;

  beforeEach(async () => {
    const point = join(dir, 'tmpfs');
    await mkdir(point);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'fss-test-enospc', point]);
    mountPoint = point; // only once mounted, so afterEach never unmounts what is not ours
  });

  afterEach(async () => {
    for (const store of stores.splice(0)) await store.close().catch(() => undefined);
    // Unmount in every outcome, before the outer afterEach removes the directory.
    if (mountPoint !== undefined) execFileSync('umount', [mountPoint]);
    mountPoint = undefined;
  });

  it('fails with ENOSPC naming pwrite and the path, and keeps what was written', async () => {
    const path = join(mountPoint!, 'store');
    const store = await openStore(path);
    const chunk = new Uint8Array(256 * 1024).fill(0x42);
    await store.write(chunk, 0);
    let offset = chunk.length;
    let error: unknown;
    while (error === undefined && offset < 16 * 1024 * 1024) {
      error = await store.write(chunk, offset).then(
        () => undefined,
        (reason: unknown) => reason,
      );
      offset += chunk.length;
    }
    expect(expectFssError(error, 'ENOSPC', 'pwrite', path).errno).toBe(28);
    // The first chunk is intact, and rewriting space already allocated still works.
    const target = new Uint8Array(chunk.length);
    await store.read(target, 0);
    expect(target.every((byte) => byte === 0x42)).toBe(true);
    await store.write(new Uint8Array(4096).fill(0x43), 0);
    await store.flush();
  });

  it('fails writev with ENOSPC too', async () => {
    const path = join(mountPoint!, 'store');
    const store = await openStore(path);
    const buffers = Array.from({ length: 64 }, () => new Uint8Array(64 * 1024));
    const error = await rejection(store.writev(buffers, 0));
    expectFssError(error, 'ENOSPC', 'pwritev', path);
  });
});
