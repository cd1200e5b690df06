/**
 * Preparing a unit's backing store from FSSIOCSET's `fss_bstore`, in phases so that a
 * refused request changes nothing (SPEC §6.3):
 *
 *  1. plan (no side effects): what the path is, and whether it may be used. A regular file or
 *     a device that shares storage (@fss/blockdev-linux's storage identity: the same file or device,
 *     a partition of it, a loop device over it) with a configured unit's store or with an
 *     origin is EBUSY: NetBSD's fssconfig would truncate the live store first and fail after;
 *     we refuse before touching it.
 *  2. prepare (nothing that cannot be undone): the store's block size, from the filesystem
 *     the file will live on (statfs), or a raw device opened (and claimed) to read its sector
 *     size and capacity; checkGeometry then refuses a cluster size, an origin size or a raw
 *     device too small for the header and table, before anything is created or truncated.
 *  3. open: create (O_EXCL, 0600, sparse, grown to the backup size), or truncate an existing
 *     unused file and grow it again (NetBSD's O_TRUNC + ftruncate), or make a temporary file
 *     in a directory (mkstemp-style, 10 random characters), or open a raw device.
 *     FSS_UNLINK_ON_CREATE and temporary files are unlinked once the store is open.
 *
 * Symlinks: the store is written with the daemon's privileges, so a link at the backup path
 * must never choose which file is truncated. A link to a regular file (or a dangling one) is
 * refused with ELOOP in the plan, as @fss/backing-file refuses it, before anything is touched;
 * the truncation itself opens with O_NOFOLLOW and checks that it holds the planned file, so a
 * link planted in between is refused too. A link to a directory (its temporary file is
 * created O_EXCL|O_NOFOLLOW inside it) or to a block device (/dev/mapper/…, /dev/disk/by-id/…)
 * is followed, as NetBSD's fssconfig does.
 *
 * Errors keep NetBSD's split: opening, creating or truncating the file fails as `create`
 * (fssconfig prints `create: PATH: …`, as NetBSD's open(O_CREAT|O_TRUNC) failure does), the
 * rest as FSSIOCSET.
 */
import { randomBytes } from 'node:crypto';
import { constants as fsConstants, type Stats } from 'node:fs';
import { lstat, open, stat, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileSystemBlockSize } from '@fss/backing-file';
import { type StorageIdentity, storageIdentity } from '@fss/blockdev-linux';
import {
  AssertionError,
  assert,
  type BackingStore,
  computeGeometry,
  FssError,
  isFssError,
  metadataBytes,
  type SnapshotGeometry,
  storeLayout,
  toFssError,
} from '@fss/core';
import type { Backends } from './backends';

export type BackupPlan =
  | { kind: 'file'; path: string; exists: false }
  /** An existing regular file; `dev`/`ino` are what the truncation must find at the path. */
  | { kind: 'file'; path: string; exists: true; dev: number; ino: number }
  | { kind: 'temp'; dir: string }
  | { kind: 'raw'; path: string; identity: StorageIdentity };

export interface BackupUsers {
  /** The unit whose store shares storage with this identity, if any. */
  unitUsing(identity: StorageIdentity): string | undefined;
  /** Whether this identity shares storage with an origin (a partition of it counts). */
  isOrigin(identity: StorageIdentity): boolean;
}

export async function planBackup(path: string, users: BackupUsers): Promise<BackupPlan> {
  let info: Stats;
  try {
    info = await lstat(path);
  } catch {
    // Not there (or not reachable): creating it will say why, as NetBSD's create does.
    return { kind: 'file', path, exists: false };
  }
  if (info.isSymbolicLink()) {
    const target = await stat(path).catch(() => undefined);
    if (target === undefined || !(target.isDirectory() || target.isBlockDevice())) {
      throw symlinkError(path);
    }
    info = target;
  }
  if (info.isDirectory()) return { kind: 'temp', dir: path };
  const identity = await storageIdentity(path);
  if (users.isOrigin(identity)) {
    throw new FssError(
      'EBUSY',
      `backup ${path} is an origin: a snapshot cannot be stored on what it copies`,
      {
        syscall: 'FSSIOCSET',
        path,
      },
    );
  }
  const unit = users.unitUsing(identity);
  if (unit !== undefined) {
    throw new FssError('EBUSY', `backup ${path} is in use by ${unit}; left untouched`, {
      syscall: 'FSSIOCSET',
      path,
    });
  }
  if (info.isBlockDevice()) return { kind: 'raw', path, identity };
  if (info.isFile()) return { kind: 'file', path, exists: true, dev: info.dev, ino: info.ino };
  throw new FssError('EINVAL', `backup ${path} is not a regular file, a directory or a block device`, {
    syscall: 'FSSIOCSET',
    path,
  });
}

/**
 * What a planned backup will be stored on, known before anything is created: the store's
 * block size, and for a raw device the opened (claimed) store and its capacity. openBackup
 * takes a raw store over (`takeRaw`); `release` closes one nobody took, and is safe to call
 * more than once.
 */
export interface PreparedStore {
  readonly blockSize: number;
  /** Bytes a raw device holds; undefined for files, which grow. */
  readonly capacityBytes: number | undefined;
  takeRaw(): BackingStore;
  release(): Promise<void>;
}

export async function prepareStore(
  plan: BackupPlan,
  backends: Backends,
  originPath: string,
): Promise<PreparedStore> {
  if (plan.kind === 'raw') {
    const raw = await backends.openRawStore(plan.path, originPath);
    let owned = true; // until openBackup takes it over
    return {
      blockSize: raw.store.blockSize,
      capacityBytes: raw.sizeBytes,
      takeRaw: () => {
        assert(owned, 'a prepared raw store is taken over once');
        owned = false;
        return raw.store;
      },
      release: async () => {
        if (owned) await raw.store.close().catch(() => undefined);
        owned = false;
      },
    };
  }
  // The filesystem the file is (or will be) on: the file itself, or its directory.
  const path = plan.kind === 'temp' ? plan.dir : plan.exists ? plan.path : dirname(plan.path);
  const blockSize = await fileSystemBlockSize(path).catch((error: unknown) => {
    throw relabel(error, 'create', plan.kind === 'temp' ? join(plan.dir, 'XXXXXXXXXX') : plan.path);
  });
  return {
    blockSize,
    capacityBytes: undefined,
    takeRaw: () => {
      throw new AssertionError('a file backup has no raw store');
    },
    release: async () => undefined,
  };
}

/**
 * The geometry the snapshot will get (the engine computes the same from the same inputs),
 * refusing what cannot work before anything changes: EINVAL from the cluster math (an empty
 * origin, a cluster shift of 32), ENOSPC for a raw device that cannot hold the header and
 * the indirect table.
 */
export function checkGeometry(
  plan: BackupPlan,
  store: PreparedStore,
  origin: { deviceBytes: number; clusterSize: number },
): SnapshotGeometry {
  const geometry = computeGeometry({
    deviceBytes: origin.deviceBytes,
    clusterSize: origin.clusterSize,
    storeBlockSize: store.blockSize,
  });
  const required = metadataBytes(storeLayout(geometry));
  if (store.capacityBytes !== undefined && store.capacityBytes < required) {
    throw new FssError(
      'ENOSPC',
      `backup device of ${store.capacityBytes} bytes cannot hold the store's header and indirect ` +
        `table (${required} bytes for ${geometry.clusterCount} clusters of ${geometry.clusterSize})`,
      { syscall: 'FSSIOCSET', path: plan.kind === 'raw' ? plan.path : undefined },
    );
  }
  return geometry;
}

export interface OpenedBackup {
  store: BackingStore;
  /** The path used (the temporary file's, for a directory). */
  path: string;
  identity: StorageIdentity;
  /** Whether this request created the file (to remove it again if configuring fails). */
  created: boolean;
  /** Whether the path still names the store. */
  linked: boolean;
  /** Bytes a raw device store holds; undefined for files, which grow while their filesystem has room. */
  capacityBytes?: number;
}

const TEMP_ATTEMPTS_MAX = 64;
const TEMP_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** Creates, truncates or takes over the store; the last step before the snapshot is taken. */
export async function openBackup(
  plan: BackupPlan,
  prepared: PreparedStore,
  options: { sizeBytes: number; unlink: boolean },
  backends: Backends,
): Promise<OpenedBackup> {
  switch (plan.kind) {
    case 'raw': {
      const store = prepared.takeRaw();
      return {
        store,
        path: plan.path,
        identity: plan.identity,
        created: false,
        linked: true,
        capacityBytes: prepared.capacityBytes,
      };
    }
    case 'temp':
      return openTemporary(plan.dir, options.sizeBytes, backends);
    case 'file': {
      if (plan.exists) await truncateExisting(plan.path, plan.dev, plan.ino);
      const store = await backends
        .openFileStore(plan.path, {
          create: plan.exists ? 'existing' : 'new',
          sizeBytes: options.sizeBytes,
          unlinkOnOpen: false,
        })
        .catch((error: unknown) => {
          throw relabel(error, 'create', plan.path);
        });
      const opened: OpenedBackup = {
        store,
        path: plan.path,
        identity: new Set(),
        created: !plan.exists,
        linked: true,
      };
      return finishOpen(opened, options.unlink);
    }
  }
}

async function openTemporary(dir: string, sizeBytes: number, backends: Backends): Promise<OpenedBackup> {
  for (let attempt = 0; attempt < TEMP_ATTEMPTS_MAX; attempt += 1) {
    const path = join(dir, temporaryName());
    try {
      const store = await backends.openFileStore(path, { create: 'new', sizeBytes, unlinkOnOpen: false });
      return finishOpen({ store, path, identity: new Set(), created: true, linked: true }, true);
    } catch (error) {
      if (isFssError(error, 'EEXIST') || (error as { code?: string }).code === 'EEXIST') continue;
      throw relabel(error, 'create', path);
    }
  }
  throw new FssError('EEXIST', 'no free temporary name', {
    syscall: 'create',
    path: join(dir, 'XXXXXXXXXX'),
  });
}

/** Records the store's identity, then unlinks it when asked; on failure nothing is left. */
async function finishOpen(opened: OpenedBackup, unlinkPath: boolean): Promise<OpenedBackup> {
  try {
    opened.identity = await storageIdentity(opened.path);
    if (unlinkPath) {
      await unlink(opened.path).catch((error: unknown) => {
        throw toFssError(error, { syscall: 'unlink', path: opened.path });
      });
      opened.linked = false;
    }
    return opened;
  } catch (error) {
    await discardBackup(opened);
    throw error;
  }
}

/** Undoes openBackup after a later failure: closes the store, removes a file we created. */
export async function discardBackup(opened: OpenedBackup): Promise<void> {
  await opened.store.close().catch(() => undefined);
  if (opened.created && opened.linked) {
    await unlink(opened.path).catch(() => undefined);
    opened.linked = false;
  }
}

/**
 * NetBSD's O_TRUNC on an existing backup, without following a link: opened O_NOFOLLOW (a
 * link is ELOOP), and truncated through the handle only when it is the regular file the plan
 * saw (anything else put there since is EBUSY and left as it is).
 */
async function truncateExisting(path: string, dev: number, ino: number): Promise<void> {
  const flags = fsConstants.O_WRONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK;
  const handle = await open(path, flags).catch((error: unknown) => {
    if ((error as { code?: unknown }).code === 'ELOOP') throw symlinkError(path);
    throw toFssError(error, { syscall: 'create', path });
  });
  try {
    const info = await handle.stat();
    if (!info.isFile() || info.dev !== dev || info.ino !== ino) {
      throw new FssError('EBUSY', `backup ${path} changed while it was being prepared; left untouched`, {
        syscall: 'create',
        path,
      });
    }
    await handle.truncate(0);
  } catch (error) {
    throw toFssError(error, { syscall: 'create', path });
  } finally {
    await handle.close().catch(() => undefined);
  }
}

function symlinkError(path: string): FssError {
  return new FssError('ELOOP', `backup ${path} is a symbolic link to a file; it is never followed`, {
    syscall: 'create',
    path,
  });
}

function temporaryName(): string {
  const bytes = randomBytes(10);
  let name = '';
  for (const byte of bytes) name += TEMP_ALPHABET[byte % TEMP_ALPHABET.length];
  return name;
}

function relabel(error: unknown, syscall: string, path: string): FssError {
  const fssError = toFssError(error);
  return new FssError(fssError.code, fssError.description, { syscall, path, cause: error });
}
