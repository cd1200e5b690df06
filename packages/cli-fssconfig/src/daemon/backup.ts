/**
 * Preparing a unit's backing store from FSSIOCSET's `fss_bstore`, in two phases so that a
 * refused request changes nothing (SPEC §6.3):
 *
 *  1. plan (no side effects): what the path is, and whether it may be used. A regular file or
 *     a device that shares storage (@fss/backing-rawdev's identity: the same file or device,
 *     a partition of it, a loop device over it) with a configured unit's store or with an
 *     origin is EBUSY: NetBSD's fssconfig would truncate the live store first and fail after;
 *     we refuse before touching it.
 *  2. open: create (O_EXCL, 0600, sparse, grown to the backup size), or truncate an existing
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
import { join } from 'node:path';
import { type BackingStore, FssError, isFssError, toFssError } from '@fss/core';
import type { Backends } from './backends';
import { identityOf, type StorageIdentity } from './origins';

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
  const identity = await identityOf(path);
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

export interface OpenedBackup {
  store: BackingStore;
  /** The path used (the temporary file's, for a directory). */
  path: string;
  identity: StorageIdentity;
  /** Whether this request created the file (to remove it again if configuring fails). */
  created: boolean;
  /** Whether the path still names the store. */
  linked: boolean;
}

const TEMP_ATTEMPTS_MAX = 64;
const TEMP_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

export async function openBackup(
  plan: BackupPlan,
  options: { sizeBytes: number; unlink: boolean; originPath: string },
  backends: Backends,
): Promise<OpenedBackup> {
  switch (plan.kind) {
    case 'raw': {
      const store = await backends.openRawStore(plan.path, options.originPath);
      return { store, path: plan.path, identity: plan.identity, created: false, linked: true };
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
    opened.identity = await identityOf(opened.path);
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
