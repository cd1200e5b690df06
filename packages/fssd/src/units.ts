/**
 * The snapshot units fss0 … fss(N-1) and the five fss ioctls on them, with NetBSD 1.63's
 * semantics and errnos (SPEC §2):
 *
 *   request     needs   idle                creating / destroying   active
 *   FSSIOCSET   rw      → creating → active  EBUSY                  EBUSY
 *   FSSIOCGET   -       ENXIO               ENXIO                  fss_get
 *   FSSIOCCLR   rw      ENXIO               ENXIO                  → destroying → idle
 *   FSSIOFSET   -       flags = arg, in every state
 *   FSSIOFGET   -       flags, in every state
 *
 * A unit number outside 0..N-1 is ENXIO (there is no such device, `syscall: open`), a
 * request without `rw` where one is needed is EPERM. A unit turns `creating` synchronously,
 * before any await, so of two FSSIOCSETs on one unit exactly one proceeds; the work itself
 * runs under the daemon mutex, one creation at a time (as NetBSD's fss_creating), which also
 * makes the "is this backup in use?" check exact.
 *
 * "Open": a control connection that issues an ioctl on a unit has it open until it closes,
 * like a descriptor on /dev/fssN; NBD clients of the unit's export have it open too. With
 * FSS_UNCONFIG_ON_CLOSE the unit is unconfigured when the last of them closes: on the
 * control connection's close, and on the export's client count dropping to 0 (events, no
 * polling).
 */

import { stat } from 'node:fs/promises';
import { filesystemOf, identitiesOverlap, type StorageIdentity, storageIdentity } from '@fss/blockdev-linux';
import type { RunPaths, SetResult, UnitStatus } from '@fss/control';
import { unitName } from '@fss/control';
import type { Mutex } from '@fss/core';
import {
  assert,
  FSS_UNCONFIG_ON_CLOSE,
  FSS_UNLINK_ON_CREATE,
  FssError,
  type FssGet,
  type FssSet,
  toFssError,
} from '@fss/core';
import type { Snapshot } from '@fss/engine';
import type { Backends } from './backends';
import {
  type BackupPlan,
  checkGeometry,
  discardBackup,
  type OpenedBackup,
  openBackup,
  type PreparedStore,
  planBackup,
  prepareStore,
} from './backup';
import type { KernelDevice, KernelDevices } from './devices';
import type { Export, Exporter } from './exports';
import type { Log } from './log';
import type { OriginEntry, OriginTable } from './origins';

type UnitState = 'idle' | 'creating' | 'active' | 'destroying';

interface Unit {
  readonly index: number;
  state: UnitState;
  flags: number;
  snapshot?: Snapshot;
  origin?: OriginEntry;
  backup?: OpenedBackup;
  export?: Export;
  /** /dev/fssN, when fssd makes kernel devices. */
  device?: KernelDevice;
  /** Control connections that have the unit open. */
  readonly openers: Set<number>;
}

export interface UnitTableOptions {
  count: number;
  paths: RunPaths;
  origins: OriginTable;
  backends: Backends;
  exporter: Exporter;
  mutex: Mutex;
  log: Log;
  /** Kernel block devices; undefined where they cannot be made (not root, no FUSE). */
  devices: KernelDevices | undefined;
}

export class UnitTable {
  private readonly units: Unit[];

  constructor(private readonly options: UnitTableOptions) {
    this.units = Array.from({ length: options.count }, (_, index) => ({
      index,
      state: 'idle' as UnitState,
      flags: 0,
      openers: new Set<number>(),
    }));
  }

  /** The unit numbered `index`, marked open by `connection`; ENXIO when there is none. */
  open(index: number, connection: number): Unit {
    const unit = this.units[index];
    if (unit === undefined) throw new FssError('ENXIO', undefined, { syscall: 'open' });
    unit.openers.add(connection);
    return unit;
  }

  async set(unit: Unit, set: FssSet, backupSize: number | undefined): Promise<SetResult> {
    if (unit.state !== 'idle') throw new FssError('EBUSY', undefined, { syscall: 'FSSIOCSET' });
    unit.state = 'creating';
    try {
      return await this.options.mutex.run(() => this.create(unit, set, backupSize));
    } catch (error) {
      unit.state = 'idle';
      // Everything but creating the backup file is FSSIOCSET's failure, as in NetBSD.
      const failure = toFssError(error);
      if (failure.syscall === 'create') throw failure;
      throw new FssError(failure.code, failure.description, {
        syscall: 'FSSIOCSET',
        path: failure.path,
        cause: error,
      });
    }
  }

  get(unit: Unit): FssGet {
    if (unit.state !== 'active' || unit.snapshot === undefined) {
      throw new FssError('ENXIO', undefined, { syscall: 'FSSIOCGET' });
    }
    return unit.snapshot.info();
  }

  async clear(unit: Unit): Promise<void> {
    if (unit.state !== 'active') throw new FssError('ENXIO', undefined, { syscall: 'FSSIOCCLR' });
    unit.state = 'destroying';
    try {
      await this.options.mutex.run(() => this.destroy(unit, 'unconfigured'));
    } catch (error) {
      // Its device is mounted: nothing was changed, the unit stays configured.
      unit.state = 'active';
      const failure = toFssError(error);
      throw new FssError(failure.code, failure.description, { syscall: 'FSSIOCCLR', cause: error });
    }
  }

  setFlags(unit: Unit, flags: number): void {
    unit.flags = flags;
  }

  getFlags(unit: Unit): number {
    return unit.flags;
  }

  /** A control connection closed: drop its opens, unconfigure what asked for it. */
  async connectionClosed(connection: number): Promise<void> {
    for (const unit of this.units) {
      if (unit.openers.delete(connection)) await this.unconfigureIfUnused(unit);
    }
  }

  /** Unconfigures every unit (shutdown). */
  async clearAll(): Promise<void> {
    // Let a configure in progress finish first, so its unit is cleared below, not leaked.
    await this.options.mutex.run(async () => undefined);
    for (const unit of this.units) {
      if (unit.state === 'active') {
        unit.state = 'destroying';
        await this.options.mutex.run(() => this.destroy(unit, 'unconfigured at shutdown', true));
      }
    }
  }

  /** The unit (by name) whose store shares storage with `identity`. */
  unitUsing(identity: StorageIdentity): string | undefined {
    const unit = this.units.find(
      (each) => each.backup !== undefined && identitiesOverlap(each.backup.identity, identity),
    );
    return unit === undefined ? undefined : unitName(unit.index);
  }

  status(): UnitStatus[] {
    return this.units.map((unit) => {
      const status: UnitStatus = { unit: unitName(unit.index), state: unit.state, flags: unit.flags };
      if (unit.state !== 'active' || unit.snapshot === undefined) return status;
      status.origin = unit.origin?.name;
      status.bstore = unit.backup?.path;
      status.export = unit.export?.socketPath;
      status.exportClients = unit.export?.clients() ?? 0;
      status.valid = unit.snapshot.valid;
      if (!unit.snapshot.valid) status.invalidReason = unit.snapshot.invalidReason;
      status.info = unit.snapshot.info();
      if (unit.device !== undefined) {
        status.device = unit.device.linkPath;
        status.loop = unit.device.loopPath;
      }
      return status;
    });
  }

  /**
   * FSSIOCSET's work. Caller holds the mutex; `unit` is `creating`.
   *
   * A refused request changes nothing (SPEC §6.3), so the work runs in two halves. First
   * every check that can fail, changing nothing: the origin (found, or checked as a
   * candidate and its size probed), the backup (planned), the store's block size, and the
   * geometry those give (cluster size, the device's size, a raw store big enough for the
   * header and table). Then the changes, each undone if a later one fails: claim and export
   * the origin, create or truncate the backup (the one change that cannot be undone, so it
   * comes last), take the snapshot, export it.
   */
  private async create(unit: Unit, set: FssSet, backupSize: number | undefined): Promise<SetResult> {
    const { origins, backends } = this.options;
    assert(unit.state === 'creating', 'create() runs on a creating unit');
    assert(unit.snapshot === undefined && unit.backup === undefined, 'a creating unit holds nothing yet');
    if (!set.fss_mount.startsWith('/')) {
      throw new FssError('EINVAL', 'fss_mount must be an absolute path', { syscall: 'FSSIOCSET' });
    }
    if (!set.fss_bstore.startsWith('/')) {
      throw new FssError('EINVAL', 'fss_bstore must be an absolute path', { syscall: 'FSSIOCSET' });
    }
    // A mount point is snapshotted through the attached origin it is mounted from.
    const mountPoint = (await isDirectory(set.fss_mount)) ? set.fss_mount : undefined;
    const existing =
      mountPoint !== undefined
        ? await origins.mountedFrom(mountPoint)
        : await origins.find(set.fss_mount).catch(() => undefined);
    await this.checkBackupPlacement(set.fss_bstore);
    const mountIdentity = await storageIdentity(existing?.path ?? set.fss_mount).catch(() => undefined);
    const plan = await planBackup(set.fss_bstore, {
      unitUsing: (identity) => this.unitUsing(identity),
      // The origin may not be claimed yet: its own path counts too.
      isOrigin: (identity) =>
        (mountIdentity !== undefined && identitiesOverlap(identity, mountIdentity)) ||
        origins.holds(identity),
    });
    const originBytes = existing?.engine.size ?? (await this.probeCandidate(set.fss_mount));
    const store = await prepareStore(plan, backends, set.fss_mount);
    try {
      checkGeometry(plan, store, { deviceBytes: originBytes, clusterSize: set.fss_csize });
      return await this.configure(unit, set, {
        plan,
        store,
        existing,
        sizeBytes: backupSize ?? originBytes,
        mountPoint,
      });
    } catch (error) {
      await store.release();
      throw error;
    }
  }

  /** The size of an origin not claimed yet, once every check of it passed. */
  private async probeCandidate(path: string): Promise<number> {
    await this.options.origins.check(path);
    return this.options.backends.originSize(path);
  }

  /** The changing half of create(): claim, backup, snapshot, export; undone on failure. */
  private async configure(
    unit: Unit,
    set: FssSet,
    prepared: {
      plan: BackupPlan;
      store: PreparedStore;
      existing: OriginEntry | undefined;
      sizeBytes: number;
      /** Set when snapshotting a mounted filesystem: it is frozen for the snapshot moment. */
      mountPoint: string | undefined;
    },
  ): Promise<SetResult> {
    const { origins, backends, exporter, paths, log } = this.options;
    const name = unitName(unit.index);
    const origin = prepared.existing ?? (await origins.add(set.fss_mount, { explicit: false }));
    let backup: OpenedBackup | undefined;
    let snapshot: Snapshot | undefined;
    let exported: Export | undefined;
    let device: KernelDevice | undefined;
    try {
      // The device may have changed size between the probe and the claim: check again.
      checkGeometry(prepared.plan, prepared.store, {
        deviceBytes: origin.engine.size,
        clusterSize: set.fss_csize,
      });
      backup = await openBackup(
        prepared.plan,
        prepared.store,
        {
          sizeBytes: prepared.sizeBytes,
          unlink: (set.fss_flags & FSS_UNLINK_ON_CREATE) !== 0,
        },
        backends,
      );
      const take = () =>
        origin.engine.createSnapshot((backup as OpenedBackup).store, {
          name,
          clusterSize: set.fss_csize,
          mount: set.fss_mount,
          originIdentity: origin.path,
          logger: log,
        });
      // A mounted filesystem is frozen (its dirty data written, new writes held) for the
      // snapshot moment, and thawed in every outcome; the freeze runs off this event loop,
      // which serves the filesystem's writes.
      const { mountPoint } = prepared;
      snapshot = mountPoint === undefined ? await take() : await backends.frozen(mountPoint, take);
      const served = await exporter(paths.unit(unit.index), snapshot, {
        name,
        readOnly: true,
        description: `fss snapshot ${name} of ${origin.path}`,
        // Its last NBD client gone: an FSS_UNCONFIG_ON_CLOSE unit nobody else holds goes.
        onClientsChanged: (clients) => {
          if (clients > 0 || unit.snapshot !== snapshot) return;
          this.unconfigureIfUnused(unit).catch((error: unknown) => log(`${name}: ${String(error)}`));
        },
      });
      exported = served;
      device = await this.options.devices?.attach('unit', name, snapshot, true);
      assert(unit.state === 'creating', 'nothing else changes a creating unit');
      Object.assign(unit, {
        state: 'active',
        flags: set.fss_flags,
        snapshot,
        origin,
        backup,
        export: served,
        device,
      });
      origin.units.add(unit.index);
      const info = snapshot.info();
      log(
        `${name}: configured on ${origin.name} (${set.fss_mount}), backup ${backup.path}` +
          `${backup.linked ? '' : ' (unlinked)'}: ${info.fsg_mount_size} clusters of ${info.fsg_csize}`,
      );
      return {
        unit: name,
        bstore: backup.path,
        export: served.socketPath,
        origin: origin.name,
        ...(device === undefined ? {} : { device: device.linkPath }),
      };
    } catch (error) {
      await exported?.close().catch(() => undefined);
      if (snapshot !== undefined) await snapshot.close().catch(() => undefined);
      if (backup !== undefined) await discardBackup(backup);
      if (prepared.existing === undefined) await origins.releaseIfUnused(origin);
      throw error;
    }
  }

  /** FSSIOCCLR's work. Caller holds the mutex; `unit` is `destroying`. */
  private async destroy(unit: Unit, why: string, atShutdown = false): Promise<void> {
    const { origins, log } = this.options;
    assert(unit.state === 'destroying', 'destroy() runs on a destroying unit');
    assert(unit.snapshot !== undefined, 'a destroying unit has a snapshot');
    const name = unitName(unit.index);
    try {
      await unit.device?.close(); // EBUSY while mounted: nothing changed yet
    } catch (error) {
      if (!atShutdown) throw error;
      log(`${name}: left attached at shutdown: ${toFssError(error).description}`);
    }
    unit.device = undefined;
    await unit.export?.close().catch((error: unknown) => log(`${name}: export: ${String(error)}`));
    await unit.snapshot?.close().catch((error: unknown) => log(`${name}: close: ${String(error)}`));
    const origin = unit.origin;
    Object.assign(unit, {
      state: 'idle',
      flags: 0,
      snapshot: undefined,
      origin: undefined,
      backup: undefined,
      export: undefined,
    });
    log(`${name}: ${why}`);
    if (origin !== undefined) {
      origin.units.delete(unit.index);
      await origins.releaseIfUnused(origin);
    }
  }

  private async unconfigureIfUnused(unit: Unit): Promise<void> {
    if (unit.state !== 'active' || (unit.flags & FSS_UNCONFIG_ON_CLOSE) === 0) return;
    if (unit.openers.size > 0 || (unit.export?.clients() ?? 0) > 0) return;
    if (unit.device !== undefined && (await unit.device.mountPoints()).length > 0) return;
    unit.state = 'destroying';
    try {
      await this.options.mutex.run(() => this.destroy(unit, 'unconfigured on last close'));
    } catch (error) {
      unit.state = 'active'; // its device is in use: it stays until the next close
      this.options.log(
        `${unitName(unit.index)}: not unconfigured on close: ${toFssError(error).description}`,
      );
    }
  }

  /**
   * A backup on a filesystem fss serves (an attached origin's, the one being snapshotted
   * included) would have the snapshot's own store writes copied into itself: EBUSY.
   */
  private async checkBackupPlacement(backupPath: string): Promise<void> {
    const attached = this.options.origins.attachedDevices();
    if (attached.length === 0) return;
    const filesystem = await filesystemOf(backupPath).catch(() => undefined);
    const device = attached.find((each) => each.rdev === filesystem?.device?.rdev);
    if (device === undefined || filesystem === undefined) return;
    throw new FssError(
      'EBUSY',
      `backup ${backupPath} is on ${filesystem.mountPoint}, a filesystem on ${device.linkPath} that fss ` +
        'serves: the snapshot would copy into itself; put the backup on another filesystem',
      { syscall: 'FSSIOCSET', path: backupPath },
    );
  }
}

async function isDirectory(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isDirectory() ?? false;
}
