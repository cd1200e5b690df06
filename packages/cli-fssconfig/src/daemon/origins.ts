/**
 * The origins the daemon holds: each one claimed (block device O_EXCL, image file flock),
 * wrapped in the engine's copy-on-write Origin, and exported read-write at
 * `origin/NAME.sock` (SPEC §1, §4, §5).
 *
 * Identity: @fss/backing-rawdev's storageIdentity of the path (the image file's dev/ino, a
 * block device's number plus its disk's when it is a partition and the image's when it is a
 * loop device). An origin is found again by an equal identity, so `/srv/a.img`, `./a.img` and
 * a symlink to it are one origin and can never be claimed twice; whether something else would
 * write the origin's storage (a backup on it, a partition of it, a loop device over it) is
 * `holds`, by overlap (identitiesOverlap).
 *
 * Lifetime: an origin added with `fss origin add` (explicit) stays until `fss origin rm`;
 * one added by FSSIOCSET (implicit) is released when it has no unit left and no client on its
 * export (the daemon's sweeper retries while clients are connected). Callers hold the
 * daemon's mutex for every method that changes the table.
 */
import { stat } from 'node:fs/promises';
import { identitiesOverlap, storageIdentity } from '@fss/backing-rawdev';
import { assert, FssError, Origin, toFssError } from '@fss/core';
import { defaultOriginName, isOriginName } from '../names';
import type { OriginInfo } from '../protocol/messages';
import { checkSocketPath, type RunPaths } from '../rundir';
import type { Backends } from './backends';
import type { Export, Exporter } from './exports';
import type { Log } from './log';

export interface OriginEntry {
  readonly name: string;
  readonly path: string;
  readonly identity: StorageIdentity;
  readonly engine: Origin;
  readonly export: Export;
  explicit: boolean;
  /** Units configured on this origin. */
  readonly units: Set<number>;
}

export class OriginTable {
  private readonly byName = new Map<string, OriginEntry>();

  constructor(
    private readonly paths: RunPaths,
    private readonly backends: Backends,
    private readonly exporter: Exporter,
    private readonly log: Log,
  ) {}

  get entries(): OriginEntry[] {
    return [...this.byName.values()];
  }

  get(name: string): OriginEntry | undefined {
    return this.byName.get(name);
  }

  /** The origin whose file or device `path` names, if we hold it. */
  async find(path: string): Promise<OriginEntry | undefined> {
    const identity = await identityOf(path);
    return this.entries.find((entry) => sameIdentity(entry.identity, identity));
  }

  /** True when `identity` (see identityOf) shares storage with one of our origins. */
  holds(identity: StorageIdentity): boolean {
    return this.entries.some((entry) => identitiesOverlap(entry.identity, identity));
  }

  /**
   * Claims `path` and exports it. EEXIST when it is already an origin (explicit add) or the
   * name is taken; EBUSY (from the claim) when something outside fss uses it.
   */
  async add(path: string, options: { name?: string; explicit: boolean }): Promise<OriginEntry> {
    if (!path.startsWith('/')) throw new FssError('EINVAL', 'origin path must be absolute', { path });
    const info = await stat(path).catch((error: unknown) => {
      throw toFssError(error, { syscall: 'stat', path });
    });
    if (info.isDirectory()) throw await this.mountPointError(path);
    if (!info.isFile() && !info.isBlockDevice()) {
      throw new FssError('EINVAL', `${path} is not a block device or an image file`, {
        syscall: 'open',
        path,
      });
    }
    const identity = await identityOf(path);
    const existing = this.entries.find((entry) => sameIdentity(entry.identity, identity));
    if (existing !== undefined) {
      if (options.explicit && !existing.explicit) {
        existing.explicit = true;
        return existing;
      }
      throw new FssError('EEXIST', `${path} is already origin ${existing.name}`, {
        syscall: 'origin-add',
        path,
      });
    }
    const name = options.name ?? defaultOriginName(path, (candidate) => this.byName.has(candidate));
    if (!isOriginName(name)) {
      throw new FssError(
        'EINVAL',
        `bad origin name "${name}": 1-64 of [A-Za-z0-9._-], not starting with . or -`,
      );
    }
    if (this.byName.has(name))
      throw new FssError('EEXIST', `origin name ${name} is taken`, { syscall: 'origin-add' });
    const socketPath = this.paths.origin(name);
    checkSocketPath(socketPath);
    const device = await this.backends.openOrigin(path);
    const engine = new Origin(device, { name, logger: this.log });
    let served: Export;
    try {
      served = await this.exporter(socketPath, engine, {
        name,
        readOnly: false,
        description: `fss origin ${name} (${path}), copy-on-write`,
      });
    } catch (error) {
      await engine.close().catch(() => undefined);
      throw error;
    }
    const entry: OriginEntry = {
      name,
      path,
      identity,
      engine,
      export: served,
      explicit: options.explicit,
      units: new Set(),
    };
    this.byName.set(name, entry);
    this.log(`origin ${name}: claimed ${path} (${device.size} bytes), exported at ${socketPath}`);
    return entry;
  }

  /** Releases an origin: export closed, engine closed, claim dropped. Caller checked `units`. */
  async release(entry: OriginEntry): Promise<void> {
    assert(entry.units.size === 0, 'an origin is released only without units');
    assert(this.byName.get(entry.name) === entry, 'an origin is released once');
    this.byName.delete(entry.name);
    await entry.export.close().catch((error: unknown) => this.log(`origin ${entry.name}: ${String(error)}`));
    await entry.engine.close().catch((error: unknown) => this.log(`origin ${entry.name}: ${String(error)}`));
    this.log(`origin ${entry.name}: released ${entry.path}`);
  }

  /** Releases `entry` when it is implicit and nothing uses it any more. */
  async releaseIfUnused(entry: OriginEntry): Promise<boolean> {
    if (entry.explicit || entry.units.size > 0 || entry.export.clients() > 0) return false;
    if (this.byName.get(entry.name) !== entry) return false;
    await this.release(entry);
    return true;
  }

  info(entry: OriginEntry): OriginInfo {
    return {
      name: entry.name,
      path: entry.path,
      size: entry.engine.size,
      explicit: entry.explicit,
      export: entry.export.socketPath,
      exportClients: entry.export.clients(),
      units: [...entry.units].sort((a, b) => a - b).map((unit) => `fss${unit}`),
    };
  }

  /**
   * Mount points are snapshotted through the origin fss attached for them (kernel devices,
   * not yet available); anything else mounted there is outside fss and refused (SPEC §1).
   */
  private async mountPointError(path: string): Promise<FssError> {
    let device: string;
    try {
      device = await this.backends.mountSource(path);
    } catch (error) {
      const reason = error instanceof FssError ? error.description : String(error);
      return new FssError('EINVAL', `${path}: not a block device, image file or mount point: ${reason}`, {
        syscall: 'open',
        path,
      });
    }
    return new FssError(
      'EBUSY',
      `${path} is mounted from ${device}, which fss does not own: unmount it, route it through fss ` +
        `(fss origin add ${device} --attach) and mount the attached device instead`,
      { syscall: 'open', path },
    );
  }
}

/** The storage a path is: see @fss/backing-rawdev's storageIdentity. */
export type StorageIdentity = ReadonlySet<string>;

/** What `path` resolves to (following symlinks); fails as stat does when it is not there. */
export async function identityOf(path: string): Promise<StorageIdentity> {
  return storageIdentity(path).catch((error: unknown) => {
    throw toFssError(error, { syscall: 'stat', path });
  });
}

/** The same storage, not just overlapping (a partition is not its disk). */
export function sameIdentity(a: StorageIdentity, b: StorageIdentity): boolean {
  return a.size === b.size && [...a].every((token) => b.has(token));
}
