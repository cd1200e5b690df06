/**
 * The state directory: what fssd keeps across its own death, so persistent units come back
 * (issue 15). Unlike the run directory (sockets, the pid, the lock: gone with the daemon or
 * the boot), it lives where state survives a reboot:
 *
 *   $FSS_STATEDIR, else /var/lib/fss as root, else $XDG_STATE_HOME/fss, else ~/.local/state/fss
 *
 * Layout (0700, every file 0600, written atomically: a temporary file, fsync, rename, fsync of
 * the directory, so a crash leaves the old record or the new one, never half of one):
 *
 *   units/fssN.json      one persistent unit: its origin, its store, its options
 *   origins/NAME.json    one origin with persistent units: its identity and its write lease
 *
 * The write lease says until when this daemon may have written the origin (`writesUntilMs`).
 * An image's mtime after a restart that is later than the lease means someone else wrote it
 * while no daemon was watching: its units cannot be exact and come back invalid. The lease is
 * renewed ahead of the writes (origin-lease.ts); a clean stop records the final mtime.
 */
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { FssError, toFssError } from '@fss/core';
import type { Durability } from '@fss/engine';
import type { BaselineRecord } from './changed-blocks';

/** The state directory fssd uses unless told otherwise (see the file comment). */
export function defaultStateDir(env: NodeJS.ProcessEnv, uid = process.getuid?.()): string {
  const chosen = env['FSS_STATEDIR'];
  if (chosen !== undefined && chosen !== '') return chosen;
  if (uid === 0) return '/var/lib/fss';
  const xdg = env['XDG_STATE_HOME'];
  if (xdg?.startsWith('/')) return join(xdg, 'fss');
  return join(homedir(), '.local', 'state', 'fss');
}

export const UNIT_RECORD_VERSION = 1;

/** A persistent unit, as recorded. */
export interface UnitRecord {
  version: typeof UNIT_RECORD_VERSION;
  unit: number;
  /** The origin as FSSIOCSET named it (a path, or the mount point snapshotted). */
  mount: string;
  clusterSize: number;
  flags: number;
  durability: Exclude<Durability, 'none'>;
  /** The store-full policy (absent in records written before it existed: invalidate). */
  onFull?: { policy: 'invalidate' | 'block'; timeoutMs: number };
  origin: { name: string; path: string; explicit: boolean; attach: boolean };
  store: { path: string; kind: 'file' | 'raw'; identity: string[] };
  createdAt: string;
  /** Tells this snapshot from a later one under the same number (changed-blocks.ts). */
  id?: string;
  /** What each older unit of the origin had copied when this one was taken (changed-blocks.ts). */
  baselines?: BaselineRecord[];
  /**
   * Set once a rollback of the unit started (rollback.ts): every cluster before `nextCluster`
   * is written back; the next start resumes from there.
   */
  rollback?: { nextCluster: number; startedAt: string };
}

/** An origin with persistent units, as recorded. */
export interface OriginRecord {
  version: typeof UNIT_RECORD_VERSION;
  name: string;
  path: string;
  identity: string[];
  sizeBytes: number;
  /** This daemon may have written the origin until then (ms since the epoch). */
  writesUntilMs: number;
}

export class StateDir {
  readonly unitsDir: string;
  readonly originsDir: string;

  constructor(readonly dir: string) {
    this.unitsDir = join(dir, 'units');
    this.originsDir = join(dir, 'origins');
  }

  /** Makes the directories (0700), refusing a symlink or someone else's directory. */
  async prepare(): Promise<void> {
    for (const dir of [this.dir, this.unitsDir, this.originsDir]) {
      await mkdir(dir, { recursive: true, mode: 0o700 }).catch((error: unknown) => {
        throw toFssError(error, { syscall: 'mkdir', path: dir });
      });
      const info = await lstat(dir);
      if (!info.isDirectory()) {
        throw new FssError('ENOTDIR', 'state directory is not a directory', { path: dir });
      }
      const uid = process.getuid?.();
      if (uid !== undefined && info.uid !== uid) {
        throw new FssError('EPERM', `state directory is owned by uid ${info.uid}, not ${uid}`, { path: dir });
      }
    }
  }

  unitPath(unit: number): string {
    return join(this.unitsDir, `fss${unit}.json`);
  }

  originPath(name: string): string {
    return join(this.originsDir, `${name}.json`);
  }

  writeUnit(record: UnitRecord): Promise<void> {
    return writeAtomically(this.unitPath(record.unit), record);
  }

  async removeUnit(unit: number): Promise<void> {
    await rm(this.unitPath(unit), { force: true });
    await syncDirectory(this.unitsDir);
  }

  writeOrigin(record: OriginRecord): Promise<void> {
    return writeAtomically(this.originPath(record.name), record);
  }

  async removeOrigin(name: string): Promise<void> {
    await rm(this.originPath(name), { force: true });
  }

  async readOrigin(name: string): Promise<OriginRecord | undefined> {
    const text = await readFile(this.originPath(name), 'utf8').catch(() => undefined);
    if (text === undefined) return undefined;
    try {
      const record = JSON.parse(text) as OriginRecord;
      return record.version === UNIT_RECORD_VERSION && typeof record.writesUntilMs === 'number'
        ? record
        : undefined;
    } catch {
      return undefined;
    }
  }

  /** Every unit record, by unit number; unreadable ones are reported through `bad` and skipped. */
  async readUnits(bad: (path: string, why: string) => void): Promise<UnitRecord[]> {
    const records: UnitRecord[] = [];
    for (const name of (await readdir(this.unitsDir)).sort()) {
      const path = join(this.unitsDir, name);
      if (!/^fss\d+\.json$/.test(name)) {
        if (name.includes('.tmp-')) await rm(path, { force: true }); // an interrupted write
        continue;
      }
      try {
        const record = JSON.parse(await readFile(path, 'utf8')) as UnitRecord;
        if (record.version !== UNIT_RECORD_VERSION || `fss${record.unit}.json` !== name) {
          throw new Error(`not a version ${UNIT_RECORD_VERSION} record of its unit`);
        }
        records.push(record);
      } catch (error) {
        bad(path, error instanceof Error ? error.message : String(error));
      }
    }
    return records.sort((a, b) => a.unit - b.unit);
  }
}

/** temp + fsync + rename + fsync(dir): the old file or the new one, whatever happens. */
async function writeAtomically(path: string, value: unknown): Promise<void> {
  const dir = join(path, '..');
  const temporary = `${path}.tmp-${randomBytes(6).toString('hex')}`;
  const handle = await open(temporary, 'wx', 0o600);
  try {
    await handle.writeFile(`${JSON.stringify(value, null, 2)}\n`);
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
  await syncDirectory(dir);
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
