/**
 * Opening a backing file safely: the part of the store with the rules about what may be
 * created, followed, truncated or unlinked.
 *
 * The rules, and why:
 * - Never follow a symlink at the path (O_NOFOLLOW; with O_CREAT|O_EXCL a symlink is EEXIST).
 *   A backing file is written with the daemon's privileges; following a link planted at the
 *   path would let someone else choose which file we overwrite.
 * - Create with O_CREAT|O_EXCL, mode 0600: the store holds copies of the origin's data, which
 *   may be more private than the directory it lands in.
 * - Never truncate a file we did not create, and never truncate at all while opening: the
 *   size is only ever grown, with ftruncate, as the last step (NetBSD's fssconfig opens with
 *   O_TRUNC, which can destroy a store a configured unit is using; SPEC §4 forbids that).
 * - Refuse what is not a regular file (a raw device is @fss/backing-rawdev's job).
 * - A failed open leaves nothing behind: every check runs before anything changes, and a file
 *   this call created is closed and unlinked again (only if the path still names it).
 *
 * Order: validate options → open (create or reuse) → fstat: regular file → fstatfs: block
 * size → grow to `sizeBytes` → unlink when asked. Only the last two change anything.
 */
import { constants as fsConstants } from 'node:fs';
import { type FileHandle, lstat, open, statfs, unlink } from 'node:fs/promises';
import { FssError, isPowerOfTwo, toFssError } from '@fss/core';

/** Whether `open` may create the file, reuse an existing one, or either. */
export type CreateMode = 'new' | 'existing' | 'either';

export interface FileBackingStoreOptions {
  /**
   * `'new'` (default): create the file; an existing path fails with EEXIST.
   * `'existing'`: open an existing regular file, never create; its contents are kept.
   * `'either'`: create the file, or open it without truncation when it exists.
   */
  create?: CreateMode;
  /**
   * Grow the file to this apparent size with ftruncate (sparse: nothing is allocated). A
   * file already this large or larger is left as it is: opening never shrinks a file.
   */
  sizeBytes?: number;
  /**
   * Unlink the path once the file is open (FSS_UNLINK_ON_CREATE): the store keeps working
   * through the open descriptor, and its space is freed when the store is closed.
   */
  unlinkOnOpen?: boolean;
}

/** What `openBackingFile` hands to the store. */
export interface OpenedFile {
  handle: FileHandle;
  blockSize: number;
  created: boolean;
  unlinked: boolean;
}

const CREATE_MODES: readonly CreateMode[] = ['new', 'existing', 'either'];
/** Mode of a created backing file: owner read/write only. */
const CREATED_FILE_MODE = 0o600;
/** Smallest block size we accept; a cluster shift must stay below 32 (SPEC §2). */
const BLOCK_SIZE_MIN = 512;
const BLOCK_SIZE_MAX = 2 ** 31;
/**
 * O_NONBLOCK only matters for what we then refuse: opening a FIFO or a device can wait for a
 * peer, and we must get to the fstat that refuses it. It has no effect on regular files.
 */
const OPEN_FLAGS = fsConstants.O_RDWR | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK;
/** How often 'either' retries when the path appears or vanishes between its two opens. */
const EITHER_ATTEMPTS_MAX = 4;

export async function openBackingFile(path: string, options: FileBackingStoreOptions): Promise<OpenedFile> {
  const mode = checkOptions(path, options);
  const { handle, created } = await openOrCreate(path, mode);
  let identity: Identity | undefined;
  try {
    const stats = await handle.stat().catch((error: unknown) => {
      throw toFssError(error, { syscall: 'fstat', path });
    });
    identity = stats;
    checkRegularFile(path, stats.mode);
    const blockSize = await openFileBlockSize(handle, path, stats.blksize);
    if (options.sizeBytes !== undefined && options.sizeBytes > stats.size) {
      await handle.truncate(options.sizeBytes).catch((error: unknown) => {
        throw toFssError(error, { syscall: 'ftruncate', path });
      });
    }
    if (created) await handle.chmod(CREATED_FILE_MODE); // exact, whatever the umask took away
    let unlinked = false;
    if (options.unlinkOnOpen === true) {
      await unlinkIfSame(path, stats, 'unlinkOnOpen');
      unlinked = true;
    }
    return { handle, blockSize, created, unlinked };
  } catch (error) {
    await handle.close().catch(() => undefined);
    if (created) await unlinkCreated(path, identity).catch(() => undefined);
    throw toFssError(error, { path });
  }
}

function checkOptions(path: string, options: FileBackingStoreOptions): CreateMode {
  if (typeof path !== 'string' || path.length === 0) {
    throw new FssError('EINVAL', 'backing file path must be a non-empty string', { syscall: 'open' });
  }
  const mode = options.create ?? 'new';
  if (!CREATE_MODES.includes(mode)) {
    throw new FssError('EINVAL', `create must be one of ${CREATE_MODES.join(', ')}, not '${mode}'`, {
      syscall: 'open',
      path,
    });
  }
  const size = options.sizeBytes;
  if (size !== undefined && (!Number.isSafeInteger(size) || size < 0)) {
    throw new FssError('EINVAL', `sizeBytes must be a byte count (0..2^53-1), not ${size}`, {
      syscall: 'ftruncate',
      path,
    });
  }
  return mode;
}

async function openOrCreate(
  path: string,
  mode: CreateMode,
): Promise<{ handle: FileHandle; created: boolean }> {
  if (mode === 'new') return { handle: await createNew(path), created: true };
  if (mode === 'existing') return { handle: await openExisting(path), created: false };
  // 'either': try to create first, so we know whether the file is ours. A path that appears
  // or vanishes between the two opens is a race with someone else; try again a few times.
  for (let attempt = 1; ; attempt++) {
    try {
      return { handle: await createNew(path), created: true };
    } catch (error) {
      if (!(error instanceof FssError) || error.code !== 'EEXIST' || attempt >= EITHER_ATTEMPTS_MAX) {
        throw error;
      }
    }
    try {
      return { handle: await openExisting(path), created: false };
    } catch (error) {
      if (!(error instanceof FssError) || error.code !== 'ENOENT' || attempt >= EITHER_ATTEMPTS_MAX) {
        throw error;
      }
    }
  }
}

async function createNew(path: string): Promise<FileHandle> {
  try {
    return await open(path, OPEN_FLAGS | fsConstants.O_CREAT | fsConstants.O_EXCL, CREATED_FILE_MODE);
  } catch (error) {
    throw describeOpenError(error, path, 'create');
  }
}

async function openExisting(path: string): Promise<FileHandle> {
  try {
    return await open(path, OPEN_FLAGS);
  } catch (error) {
    throw describeOpenError(error, path, 'open');
  }
}

/** Turns an open(2) failure into an FssError whose description says what to do about it. */
function describeOpenError(error: unknown, path: string, action: 'create' | 'open'): FssError {
  const code = (error as { code?: unknown }).code;
  const details = { syscall: 'open', path, cause: error };
  if (code === 'EEXIST' && action === 'create') {
    return new FssError(
      'EEXIST',
      "backing file already exists (a symlink counts); pass create: 'existing' or 'either' to reuse a regular file",
      details,
    );
  }
  if (code === 'ELOOP') {
    return new FssError('ELOOP', 'backing file path is a symbolic link; it is never followed', details);
  }
  if (code === 'EISDIR') {
    return new FssError('EISDIR', 'backing file path is a directory; give a file path inside it', details);
  }
  return toFssError(error, { syscall: 'open', path });
}

function checkRegularFile(path: string, mode: number): void {
  const type = mode & fsConstants.S_IFMT;
  if (type === fsConstants.S_IFREG) return;
  if (type === fsConstants.S_IFDIR) {
    throw new FssError('EISDIR', 'backing file path is a directory', { syscall: 'fstat', path });
  }
  throw new FssError(
    'EINVAL',
    `backing file is a ${fileTypeName(type)}, not a regular file (use @fss/backing-rawdev for devices)`,
    { syscall: 'fstat', path },
  );
}

function fileTypeName(type: number): string {
  if (type === fsConstants.S_IFBLK) return 'block device';
  if (type === fsConstants.S_IFCHR) return 'character device';
  if (type === fsConstants.S_IFIFO) return 'FIFO';
  if (type === fsConstants.S_IFSOCK) return 'socket';
  return `file of type 0o${type.toString(8)}`;
}

/**
 * The block size of the filesystem holding the open file: fstatfs's f_bsize (the I/O size
 * NetBSD's f_iosize corresponds to), read through /proc/self/fd so it is the file we hold,
 * not whatever the path names now; else st_blksize. It must be a power of two in
 * [512, 2^31) because the cluster size is derived from it.
 */
async function openFileBlockSize(handle: FileHandle, path: string, statBlockSize: number): Promise<number> {
  const fsBlockSize = await statfs(`/proc/self/fd/${handle.fd}`).then(
    (stats) => stats.bsize,
    () => undefined,
  );
  for (const candidate of [fsBlockSize, statBlockSize]) {
    if (candidate !== undefined && isBlockSize(candidate)) return candidate;
  }
  throw badBlockSize(fsBlockSize ?? statBlockSize, 'fstatfs', path);
}

/**
 * The block size a backing file at or inside `path` (the file, or the directory it will be
 * created in) gets: statfs's f_bsize, with the same rule as an opened file. Lets a caller
 * work out a snapshot's geometry before it creates or truncates anything.
 */
export async function fileSystemBlockSize(path: string): Promise<number> {
  const stats = await statfs(path).catch((error: unknown) => {
    throw toFssError(error, { syscall: 'statfs', path });
  });
  if (!isBlockSize(stats.bsize)) throw badBlockSize(stats.bsize, 'statfs', path);
  return stats.bsize;
}

function badBlockSize(size: number, syscall: string, path: string): FssError {
  return new FssError('EINVAL', `filesystem block size ${size} is not a power of two in [512, 2^31)`, {
    syscall,
    path,
  });
}

function isBlockSize(value: number): boolean {
  return isPowerOfTwo(value) && value >= BLOCK_SIZE_MIN && value < BLOCK_SIZE_MAX;
}

interface Identity {
  dev: number;
  ino: number;
}

/**
 * Unlinks `path` if it still names the file we opened. If someone replaced it in between,
 * unlinking would remove their file instead: fail with EBUSY and leave it.
 */
async function unlinkIfSame(path: string, ours: Identity, why: string): Promise<void> {
  const current = await lstat(path).catch((error: unknown) => {
    throw toFssError(error, { syscall: 'lstat', path });
  });
  if (current.dev !== ours.dev || current.ino !== ours.ino) {
    throw new FssError('EBUSY', `${why}: the path no longer names the opened file; not unlinked`, {
      syscall: 'unlink',
      path,
    });
  }
  await unlink(path).catch((error: unknown) => {
    throw toFssError(error, { syscall: 'unlink', path });
  });
}

/** Cleanup after a failed open: remove the file this call created, if it is still there. */
async function unlinkCreated(path: string, ours: Identity | undefined): Promise<void> {
  if (ours === undefined) return;
  const current = await lstat(path).catch(() => undefined);
  if (current === undefined) return; // already gone (e.g. unlinkOnOpen got that far)
  await unlinkIfSame(path, ours, 'cleanup');
}
