/**
 * The origins the daemon holds: each one claimed (block device O_EXCL, image file flock),
 * wrapped in the engine's copy-on-write Origin, and exported read-write at
 * `origin/NAME.sock` (SPEC §1, §4, §5).
 *
 * Identity: @fss/blockdev-linux's storageIdentity of the path (the image file's dev/ino, a
 * block device's number plus its disk's when it is a partition and the image's when it is a
 * loop device). An origin is found again by an equal identity, so `/srv/a.img`, `./a.img` and
 * a symlink to it are one origin and can never be claimed twice; whether something else would
 * write the origin's storage (a backup on it, a partition of it, a loop device over it) is
 * `holds`, by overlap (identitiesOverlap).
 *
 * A unit's backing store is never an origin (EBUSY naming the unit): its own unit's store
 * writes would bypass the copy-on-write of a snapshot taken of it, which would then miss
 * writes silently. `storeUser` answers which unit's store shares storage with a path.
 *
 * Lifetime: an origin added with `fss origin add` (explicit) stays until `fss origin rm`;
 * one added by FSSIOCSET (implicit) is released when it has no unit left and no client on its
 * export: when its last unit goes, or when its export's last client leaves (an event from the
 * export). Callers hold the daemon's mutex for every method that changes the table; the
 * export's event takes it itself.
 */
import { stat } from 'node:fs/promises';
import { identitiesOverlap, type StorageIdentity, sameIdentity, storageIdentity } from '@fss/blockdev-linux';
import type { OriginInfo } from '@fss/control';
import { checkSocketPath, defaultOriginName, isOriginName, type RunPaths } from '@fss/control';
import { assert, FssError, type Mutex, toFssError } from '@fss/core';
import { Origin } from '@fss/engine';
import type { NbdMetaContext } from '@fss/nbd';
import type { Backends } from './backends';
import type { BypassWatch } from './bypass-watch';
import type { KernelDevice, KernelDevices } from './devices';
import type { Export, Exporter } from './exports';
import type { Log } from './log';
import { leasedDevice, WriteLease } from './origin-lease';
import type { StateDir } from './state-dir';

export interface OriginEntry {
  readonly name: string;
  readonly path: string;
  readonly identity: StorageIdentity;
  readonly engine: Origin;
  readonly export: Export;
  explicit: boolean;
  /** Units configured on this origin. */
  readonly units: Set<number>;
  /** The kernel block device (/dev/fss/NAME), when added with --attach. */
  device: KernelDevice | undefined;
  /** Its write lease, enabled while it has persistent units (origin-lease.ts). */
  readonly lease: WriteLease;
}

/** What `check` found out about a path that may become an origin; nothing claimed yet. */
export interface OriginCandidate {
  readonly path: string;
  readonly identity: StorageIdentity;
  /** The origin this path already is, if any. */
  readonly existing: OriginEntry | undefined;
}

export interface OriginTableOptions {
  paths: RunPaths;
  /** The daemon's mutex: a release triggered by an export event takes it. */
  mutex: Mutex;
  backends: Backends;
  exporter: Exporter;
  log: Log;
  /** The unit whose backing store shares storage with `identity`, if any. */
  storeUser(identity: StorageIdentity): string | undefined;
  /** Kernel block devices; undefined where they cannot be made (not root, no FUSE). */
  devices: KernelDevices | undefined;
  /** Where origins with persistent units are recorded; undefined: no persistence. */
  state: StateDir | undefined;
  /** Watches every claimed origin for writes outside fss (bypass-watch.ts); undefined: none. */
  bypass?: BypassWatch<OriginEntry>;
  /** The metadata contexts an origin's export adds (its units' qemu:dirty-bitmap:fssN). */
  metaContexts?: (entry: OriginEntry) => readonly NbdMetaContext[];
}

export class OriginTable {
  private readonly byName = new Map<string, OriginEntry>();
  private readonly paths: RunPaths;
  private readonly backends: Backends;
  private readonly exporter: Exporter;
  private readonly log: Log;

  constructor(private readonly options: OriginTableOptions) {
    this.paths = options.paths;
    this.backends = options.backends;
    this.exporter = options.exporter;
    this.log = options.log;
  }

  get entries(): OriginEntry[] {
    return [...this.byName.values()];
  }

  get(name: string): OriginEntry | undefined {
    return this.byName.get(name);
  }

  /** The origin whose file or device `path` names, if we hold it. */
  async find(path: string): Promise<OriginEntry | undefined> {
    const identity = await storageIdentity(path);
    return this.entries.find((entry) => sameIdentity(entry.identity, identity));
  }

  /** True when `identity` (a storageIdentity) shares storage with one of our origins. */
  holds(identity: StorageIdentity): boolean {
    return this.entries.some((entry) => identitiesOverlap(entry.identity, identity));
  }

  /**
   * Everything about `path` that can refuse it as an origin, without claiming anything: it
   * must be absolute, exist, be an image file or a block device (a mount point is EBUSY with
   * how to route it through fss), and not be a unit's backing store (EBUSY naming the unit).
   */
  async check(path: string): Promise<OriginCandidate> {
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
    const identity = await storageIdentity(path);
    const existing = this.entries.find((entry) => sameIdentity(entry.identity, identity));
    if (existing === undefined) {
      const unit = this.options.storeUser(identity);
      if (unit !== undefined) {
        throw new FssError(
          'EBUSY',
          `${path} is the backing store of ${unit}: a snapshot of it would miss ${unit}'s own ` +
            `writes; unconfigure ${unit} first (fssconfig -u ${unit})`,
          { syscall: 'open', path },
        );
      }
    }
    return { path, identity, existing };
  }

  /**
   * Claims `path` and exports it. EEXIST when it is already an origin (explicit add) or the
   * name is taken; EBUSY when it is a unit's store, or (from the claim) when something
   * outside fss uses it.
   */
  async add(
    path: string,
    options: { name?: string; explicit: boolean; attach?: boolean },
  ): Promise<OriginEntry> {
    const candidate = await this.check(path);
    const existing = candidate.existing;
    if (existing !== undefined) {
      const kept = this.makeExplicit(existing, options);
      if (options.attach === true && kept.device === undefined) kept.device = await this.attach(kept);
      return kept;
    }
    const name = options.name ?? defaultOriginName(path, (taken) => this.byName.has(taken));
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
    const opened = await this.backends.openOrigin(path);
    const { state } = this.options;
    const lease = new WriteLease(
      async (writesUntilMs) => {
        await state?.writeOrigin({
          version: 1,
          name,
          path,
          identity: [...candidate.identity].sort(),
          sizeBytes: opened.size,
          writesUntilMs,
        });
      },
      (line) => this.log(`origin ${name}: ${line}`),
    );
    const device = leasedDevice(opened, lease);
    const engine = new Origin(device, { name, logger: this.log });
    let entry: OriginEntry | undefined;
    let served: Export;
    try {
      served = await this.exporter(socketPath, engine, {
        name,
        readOnly: false,
        description: `fss origin ${name} (${path}), copy-on-write`,
        // qemu:dirty-bitmap:fssN for each of its units, as they are when a client asks.
        metaContexts: () => (entry === undefined ? [] : (this.options.metaContexts?.(entry) ?? [])),
        // Its last NBD client gone: an implicit origin without units is released.
        onClientsChanged: (clients) => {
          if (clients === 0 && entry !== undefined) this.releaseWhenIdle(entry);
        },
      });
    } catch (error) {
      await engine.close().catch(() => undefined);
      throw error;
    }
    entry = {
      name,
      path,
      identity: candidate.identity,
      engine,
      export: served,
      explicit: options.explicit,
      units: new Set(),
      device: undefined,
      lease,
    };
    this.byName.set(name, entry);
    this.options.bypass?.add(entry);
    this.log(`origin ${name}: claimed ${path} (${device.size} bytes), exported at ${socketPath}`);
    if (options.attach === true) {
      try {
        entry.device = await this.attach(entry);
      } catch (error) {
        await this.release(entry);
        throw error;
      }
    }
    return entry;
  }

  /**
   * `fss origin add` of an origin fssconfig -c claimed implicitly keeps it from now on. It
   * keeps its name too (its export socket is named after it): a different --name is refused
   * rather than ignored.
   */
  private makeExplicit(
    existing: OriginEntry,
    options: { name?: string; explicit: boolean; attach?: boolean },
  ): OriginEntry {
    const { path } = existing;
    if (
      !options.explicit ||
      (existing.explicit && !(options.attach === true && existing.device === undefined))
    ) {
      throw new FssError('EEXIST', `${path} is already origin ${existing.name}`, {
        syscall: 'origin-add',
        path,
      });
    }
    if (options.name !== undefined && options.name !== existing.name) {
      const users = [...existing.units].map((unit) => `fss${unit}`).join(', ');
      throw new FssError(
        'EEXIST',
        `${path} is already origin ${existing.name} (claimed for ${users || 'its export'}) and ` +
          `keeps that name while in use; add it as ${existing.name} (no --name), or name it ` +
          `after its units are unconfigured`,
        { syscall: 'origin-add', path },
      );
    }
    existing.explicit = true;
    return existing;
  }

  /** Makes the origin a kernel block device, /dev/fss/NAME (root, FUSE). */
  private async attach(entry: OriginEntry): Promise<KernelDevice> {
    const devices = this.options.devices;
    if (devices === undefined) {
      throw new FssError('EOPNOTSUPP', 'kernel devices (--attach) need root, /dev/fuse and the loop driver', {
        syscall: 'origin-add',
        path: entry.path,
      });
    }
    return devices.attach('origin', entry.name, entry.engine, false);
  }

  /**
   * Releases an origin: its device detached (EBUSY, changing nothing, while it is mounted;
   * at shutdown logged and left), export closed, engine closed, claim dropped. Caller checked
   * `units`.
   */
  async release(entry: OriginEntry, options: { atShutdown?: boolean } = {}): Promise<void> {
    assert(entry.units.size === 0, 'an origin is released only without units');
    assert(this.byName.get(entry.name) === entry, 'an origin is released once');
    try {
      await entry.device?.close();
      entry.device = undefined;
    } catch (error) {
      // Shutting down anyway: the device stays attached (its record too, for the next start)
      // and fails its I/O once this process is gone.
      if (options.atShutdown !== true) throw error;
      this.log(`origin ${entry.name}: left attached at shutdown: ${toFssError(error).description}`);
    }
    this.byName.delete(entry.name);
    this.options.bypass?.remove(entry);
    await entry.export.close().catch((error: unknown) => this.log(`origin ${entry.name}: ${String(error)}`));
    await entry.engine.close().catch((error: unknown) => this.log(`origin ${entry.name}: ${String(error)}`));
    // Its writes have all landed: a stop leaves the lease ending now (the units come back
    // valid); otherwise its persistent units are gone and so is its record.
    if (entry.lease.isEnabled) {
      if (options.atShutdown === true) {
        await entry.lease
          .settle()
          .catch((error: unknown) => this.log(`origin ${entry.name}: lease: ${String(error)}`));
      } else {
        entry.lease.disable();
        await this.options.state?.removeOrigin(entry.name);
      }
    }
    this.log(`origin ${entry.name}: released ${entry.path}`);
  }

  /**
   * The attached origin a filesystem at `mountPoint` is mounted from, or EBUSY saying how to
   * route it through fss (a mount from a device fss does not serve), or EINVAL when it is no
   * mount point of a block device.
   */
  async mountedFrom(mountPoint: string): Promise<OriginEntry> {
    const source = await this.mountSource(mountPoint);
    const entry = this.entries.find((candidate) => candidate.device?.rdev === source.rdev);
    if (entry !== undefined) return entry;
    throw this.notRoutedError(mountPoint, source.devicePath);
  }

  /** The kernel devices of every attached origin. */
  attachedDevices(): KernelDevice[] {
    return this.entries.flatMap((entry) => (entry.device === undefined ? [] : [entry.device]));
  }

  /** Releases `entry` when it is implicit and nothing uses it any more. */
  async releaseIfUnused(entry: OriginEntry, options: { atShutdown?: boolean } = {}): Promise<boolean> {
    if (entry.explicit || entry.units.size > 0 || entry.export.clients() > 0) return false;
    if (this.byName.get(entry.name) !== entry) return false;
    await this.release(entry, options);
    return true;
  }

  /** releaseIfUnused under the daemon's mutex, for events outside any request. */
  private releaseWhenIdle(entry: OriginEntry): void {
    this.options.mutex
      .run(() => this.releaseIfUnused(entry))
      .catch((error: unknown) => this.log(`origin ${entry.name}: ${String(error)}`));
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
      ...(entry.device === undefined ? {} : { device: entry.device.linkPath, loop: entry.device.loopPath }),
    };
  }

  /** The block device mounted at `path`; EINVAL (naming what it is instead) when there is none. */
  private async mountSource(path: string): Promise<{ devicePath: string; rdev: string }> {
    try {
      return await this.backends.mountSource(path);
    } catch (error) {
      const reason = error instanceof FssError ? error.description : String(error);
      throw new FssError('EINVAL', `${path}: not a block device, image file or mount point: ${reason}`, {
        syscall: 'open',
        path,
      });
    }
  }

  /**
   * A directory as an origin is a mount point; it is snapshotted through the origin fss
   * attached for it (fssconfig -c), never claimed as an origin itself.
   */
  private async mountPointError(path: string): Promise<FssError> {
    try {
      await this.mountedFrom(path);
    } catch (error) {
      return toFssError(error);
    }
    return new FssError(
      'EISDIR',
      `${path} is a mount point of an attached origin: snapshot it with fssconfig -c fssN ${path} BACKUP`,
      { syscall: 'open', path },
    );
  }

  private notRoutedError(mountPoint: string, device: string): FssError {
    return new FssError(
      'EBUSY',
      `${mountPoint} is mounted from ${device}, which fss does not serve: fss snapshots a live ` +
        `filesystem only when its every write passes through fss; unmount it, attach the device ` +
        `(fss origin add ${device} --attach), mount /dev/fss/NAME instead, and snapshot that mount`,
      { syscall: 'open', path: mountPoint },
    );
  }
}
