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
 *
 * Persistence (issue 15): a unit whose backing store is a named file or a raw device (not a
 * directory's temporary file, not FSS_UNLINK_ON_CREATE) is persistent when the daemon has a
 * state directory and its durability is not 'none': its snapshot runs the engine's commit
 * protocol, its origin's write lease is on, and a record of it is written to the state
 * directory (state-dir.ts) once it is configured. FSSIOCCLR removes the record; a stop keeps
 * it. `reattach` brings recorded units back at start, under the same numbers with the same
 * exports, invalid (with the reason) when the origin may have changed meanwhile.
 */

import { stat } from 'node:fs/promises';
import { filesystemOf, identitiesOverlap, type StorageIdentity, storageIdentity } from '@fss/blockdev-linux';
import type {
  ChangedResult,
  RollbackStatus,
  RunPaths,
  SetOptions,
  SetResult,
  TcpExportInfo,
  TcpExportRequest,
  UnitStatus,
} from '@fss/control';
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
import { type Durability, ON_FULL_TIMEOUT_MS_DEFAULT, type OriginWriter, type Snapshot } from '@fss/engine';
import type { NbdMetaContext } from '@fss/nbd';
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
import {
  type Baseline,
  changedBitmap,
  changedExtents,
  decodeBaseline,
  encodeBaseline,
  newUnitId,
  recordBaselines,
  type TrackedUnit,
} from './changed-blocks';
import type { KernelDevice, KernelDevices } from './devices';
import { dirtyBitmapContext } from './dirty-bitmaps';
import type { Export, Exporter } from './exports';
import type { Log } from './log';
import type { OriginEntry, OriginTable } from './origins';
import { type RateMeters, secondsToFull } from './rate-meter';
import { RollbackJob } from './rollback';
import type { StateDir, UnitRecord } from './state-dir';
import { storeBytesLimit, storeStart, storeUsage } from './store-usage';
import { startTcpExport, type TcpExport } from './tcp-exports';

type UnitState = 'idle' | 'creating' | 'active' | 'destroying';

interface Unit {
  readonly index: number;
  state: UnitState;
  flags: number;
  snapshot?: Snapshot;
  origin?: OriginEntry;
  backup?: OpenedBackup;
  export?: Export;
  /** Its TCP listener, when one was asked for (tcp-exports.ts). */
  tcp?: TcpExport;
  /** /dev/fssN, when fssd makes kernel devices. */
  device?: KernelDevice;
  /** Control connections that have the unit open. */
  readonly openers: Set<number>;
  /** Recorded in the state directory: survives the daemon. */
  persistent: boolean;
  /** Drawn when configured: tells this snapshot from a later one under the same number. */
  id: string;
  /** What each older unit of the origin had copied when this one was taken (changed-blocks.ts). */
  baselines: Map<number, Baseline>;
  /** Its record in the state directory, when persistent. */
  record?: UnitRecord;
  /** Its rollback onto the origin, while one runs (rollback.ts). */
  rollback?: RollbackJob;
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
  /** Where persistent units are recorded; undefined: no unit is persistent. */
  state: StateDir | undefined;
  /** Durability of persistent units (default 'process'; 'none' makes none persistent). */
  durability?: Durability;
  /** A rollback writes at most this many bytes a second; 0 or absent: no limit. */
  rollbackBytesPerSecond?: number;
}

export class UnitTable {
  private readonly units: Unit[];
  /** The last rollback of each unit number since start (running, done or failed). */
  private readonly rollbacks = new Map<number, RollbackJob>();
  /** Rollbacks running now, each until its unit is unconfigured or it failed. */
  private readonly rollbackRuns = new Set<Promise<void>>();
  /** Rollbacks a reattached unit had begun: they resume once every unit is back. */
  private readonly resumes: Array<{ unit: Unit; writer: OriginWriter; fromCluster: number }> = [];

  constructor(private readonly options: UnitTableOptions) {
    this.units = Array.from({ length: options.count }, (_, index) => ({
      index,
      state: 'idle' as UnitState,
      flags: 0,
      openers: new Set<number>(),
      persistent: false,
      id: '',
      baselines: new Map<number, Baseline>(),
    }));
  }

  /** The unit numbered `index`, marked open by `connection`; ENXIO when there is none. */
  open(index: number, connection: number): Unit {
    const unit = this.units[index];
    if (unit === undefined) throw new FssError('ENXIO', undefined, { syscall: 'open' });
    unit.openers.add(connection);
    return unit;
  }

  async set(unit: Unit, set: FssSet, options: SetOptions = {}): Promise<SetResult> {
    if (unit.state !== 'idle') throw new FssError('EBUSY', undefined, { syscall: 'FSSIOCSET' });
    unit.state = 'creating';
    try {
      return await this.options.mutex.run(() => this.create(unit, set, options));
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
    if (unit.rollback?.running === true) {
      throw new FssError(
        'EBUSY',
        `${unitName(unit.index)} is being rolled back onto its origin; it is unconfigured when that completes`,
        { syscall: 'FSSIOCCLR' },
      );
    }
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

  /**
   * Starts rolling unit `index` back onto its origin (rollback.ts) and answers at once; the
   * job runs in the background and unconfigures the unit when it completes. ENXIO when the
   * unit is not configured or invalid; EBUSY while its origin is mounted or has NBD clients,
   * while the unit's own device is mounted or its export has clients, or while a rollback of
   * the origin runs.
   */
  rollback(index: number): Promise<RollbackStatus> {
    return this.options.mutex.run(async () => {
      const unit = this.tracked(index, 'rollback') as TrackedUnit & Unit;
      const name = unitName(index);
      if (unit.rollback?.running === true) {
        throw new FssError('EBUSY', `${name} is being rolled back already`, { syscall: 'rollback' });
      }
      if (!unit.snapshot.valid) {
        throw new FssError(
          'ENXIO',
          `${name} is invalid (${unit.snapshot.invalidReason ?? 'unknown'}): it cannot be rolled back`,
          { syscall: 'rollback' },
        );
      }
      const origin = unit.origin as OriginEntry;
      await this.checkRollbackUsers(unit, origin);
      const writer = await origin.engine.reserveWrites(`${name} is being rolled back onto it`);
      try {
        if (unit.persistent) await this.recordRollback(unit, 0);
      } catch (error) {
        writer.release();
        throw error;
      }
      return this.startRollback(unit, writer, 0).status();
    });
  }

  /** The progress of unit `index`'s last rollback; ENOENT when none ran since fssd started. */
  rollbackStatus(index: number): RollbackStatus {
    const job = this.rollbacks.get(index);
    if (job === undefined) {
      throw new FssError('ENOENT', `no rollback of ${unitName(index)} since fssd started`, {
        syscall: 'rollback-status',
      });
    }
    return job.status();
  }

  /** EBUSY, naming who, while anyone could see the origin change under them. */
  private async checkRollbackUsers(unit: Unit, origin: OriginEntry): Promise<void> {
    const name = unitName(unit.index);
    const busy = (why: string) => new FssError('EBUSY', why, { syscall: 'rollback' });
    const rolling = this.units.find((each) => each.rollback?.running === true && each.origin === origin);
    if (rolling !== undefined) {
      throw busy(`origin ${origin.name} is being rolled back to ${unitName(rolling.index)}`);
    }
    const mounted = (await origin.device?.mountPoints()) ?? [];
    if (mounted.length > 0) {
      throw busy(
        `origin ${origin.name} is mounted (${mounted.join(', ')}): unmount it before rolling it back`,
      );
    }
    const clients = origin.export.clients();
    if (clients > 0) {
      throw busy(
        `origin ${origin.name} has ${clients} NBD client${clients === 1 ? '' : 's'} connected to its ` +
          'export: disconnect them before rolling it back',
      );
    }
    const unitMounted = (await unit.device?.mountPoints()) ?? [];
    if (unitMounted.length > 0) throw busy(`${name} is mounted (${unitMounted.join(', ')})`);
    const readers = unit.export?.clients() ?? 0;
    if (readers > 0) {
      throw busy(
        `${name} has ${readers} NBD client${readers === 1 ? '' : 's'} connected to its export: ` +
          'a rollback unconfigures it',
      );
    }
  }

  /** A reattached unit's rollback had begun: the origin is reserved now, the job starts later. */
  private async reserveForResume(unit: Unit, origin: OriginEntry, fromCluster: number): Promise<void> {
    const name = unitName(unit.index);
    if (unit.snapshot?.valid !== true) {
      this.options.log(
        `${name}: rollback not resumed: the snapshot is invalid (${unit.snapshot?.invalidReason})`,
      );
      return;
    }
    const writer = await origin.engine.reserveWrites(`${name} is being rolled back onto it`);
    this.resumes.push({ unit, writer, fromCluster });
  }

  /** Records that every cluster before `nextCluster` of the unit's rollback is on the origin. */
  private async recordRollback(unit: Unit, nextCluster: number): Promise<void> {
    const { state } = this.options;
    if (state === undefined || unit.record === undefined) return;
    const record: UnitRecord = {
      ...unit.record,
      rollback: { nextCluster, startedAt: unit.record.rollback?.startedAt ?? new Date().toISOString() },
    };
    await state.writeUnit(record);
    unit.record = record;
  }

  /** Runs the rollback of `unit` in the background, holding `writer` until it ends. */
  private startRollback(unit: Unit, writer: OriginWriter, fromCluster: number): RollbackJob {
    const { log, mutex } = this.options;
    const name = unitName(unit.index);
    const snapshot = unit.snapshot as Snapshot;
    const origin = unit.origin as OriginEntry;
    const job = new RollbackJob({
      unit: unit.index,
      snapshot,
      origin: origin.engine,
      writer,
      fromCluster,
      recordProgress: (nextCluster) => this.recordRollback(unit, nextCluster),
      bytesPerSecond: this.options.rollbackBytesPerSecond ?? 0,
    });
    unit.rollback = job;
    this.rollbacks.set(unit.index, job);
    log(
      `${name}: rollback onto origin ${origin.name}: ${job.totalBytes} bytes of saved clusters` +
        `${fromCluster > 0 ? `, resumed at cluster ${fromCluster}` : ''}`,
    );
    const run = (async () => {
      try {
        if (await job.run()) {
          unit.state = 'destroying';
          try {
            await mutex.run(() => this.destroy(unit, `rolled back onto origin ${origin.name}; unconfigured`));
            job.finish();
          } catch (error) {
            unit.state = 'active';
            job.fail(error);
          }
        }
      } finally {
        if (unit.rollback === job) unit.rollback = undefined;
        writer.release();
      }
      const status = job.status();
      if (status.state === 'failed') {
        log(`${name}: rollback stopped: ${status.error?.detail ?? status.error?.message}`);
      }
    })();
    this.rollbackRuns.add(run);
    void run.finally(() => this.rollbackRuns.delete(run));
    return job;
  }

  /**
   * The extents of the origin written since unit `index` was taken, or between the older
   * unit `since` and it (changed-blocks.ts). ENXIO for a unit that is not configured.
   */
  changed(index: number, since: number | undefined): ChangedResult {
    const unit = this.tracked(index);
    return changedExtents(unit, since === undefined ? undefined : this.tracked(since));
  }

  private tracked(index: number, syscall = 'changed'): TrackedUnit {
    const unit = this.units[index];
    if (unit === undefined) {
      throw new FssError('ENXIO', `fss${index}: no such unit (this daemon has ${this.units.length})`, {
        syscall,
      });
    }
    if (unit.state !== 'active' || unit.snapshot === undefined || unit.origin === undefined) {
      throw new FssError('ENXIO', `${unitName(index)} is not configured`, { syscall });
    }
    return unit as TrackedUnit;
  }

  /**
   * The qemu:dirty-bitmap contexts of unit `unit`'s export: `fssM` for every unit fssM of the
   * same origin that is older than it and whose changes until it are known (its baseline),
   * each meaning "changed between fssM and this unit".
   */
  private unitDirtyBitmaps(unit: Unit): NbdMetaContext[] {
    if (unit.state !== 'active' || unit.origin === undefined) return [];
    const own = { index: unit.index, id: unit.id };
    return this.units.flatMap((older) => {
      const baseline = unit.baselines.get(older.index);
      const known =
        older !== unit &&
        older.state === 'active' &&
        older.origin === unit.origin &&
        baseline?.known === true &&
        baseline.id === older.id;
      if (!known) return [];
      const since = { index: older.index, id: older.id };
      return [
        dirtyBitmapContext(unitName(older.index), () =>
          changedBitmap(this.trackedAgain(own), this.trackedAgain(since)),
        ),
      ];
    });
  }

  /**
   * The qemu:dirty-bitmap contexts of `origin`'s export: `fssN` for every valid unit of it,
   * meaning "changed since fssN" (its copied bitmap, as it is at each request).
   */
  originDirtyBitmaps(origin: OriginEntry): NbdMetaContext[] {
    return this.units.flatMap((unit) => {
      if (unit.state !== 'active' || unit.origin !== origin || unit.snapshot?.valid !== true) return [];
      const own = { index: unit.index, id: unit.id };
      return [
        dirtyBitmapContext(unitName(unit.index), () => changedBitmap(this.trackedAgain(own), undefined)),
      ];
    });
  }

  /**
   * The unit a dirty-bitmap context was offered for, when a request comes: ENXIO once it is
   * unconfigured, also when its number has been configured again since (another snapshot).
   */
  private trackedAgain(offered: { index: number; id: string }): TrackedUnit {
    const unit = this.tracked(offered.index);
    if (unit.id !== offered.id) {
      throw new FssError('ENXIO', `${unitName(offered.index)} was unconfigured and configured again`, {
        syscall: 'changed',
      });
    }
    return unit;
  }

  /** The configured units of `origin` other than `except`, for their baselines. */
  private unitsOf(origin: OriginEntry, except: Unit): Omit<TrackedUnit, 'baselines'>[] {
    return this.units.flatMap((each) =>
      each !== except && each.state === 'active' && each.origin === origin && each.snapshot !== undefined
        ? [{ index: each.index, id: each.id, snapshot: each.snapshot, origin }]
        : [],
    );
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

  /** Stops every rollback after its chunk in flight; each resumes at the next start (shutdown). */
  async stopRollbacks(): Promise<void> {
    for (const unit of this.units) unit.rollback?.cancel();
    await Promise.all([...this.rollbackRuns]);
  }

  /** Unconfigures every unit (shutdown). */
  async clearAll(): Promise<void> {
    await this.stopRollbacks();
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

  /**
   * Every unit's state; active ones with their store's use and rates. `rates` takes a sample
   * of each store's bytes in use (rate-meter.ts); the limits come from statfs, so this is
   * asynchronous.
   */
  async status(rates: RateMeters<Snapshot>, nowMs = Date.now()): Promise<UnitStatus[]> {
    return Promise.all(
      this.units.map(async (unit) => {
        const status: UnitStatus = { unit: unitName(unit.index), state: unit.state, flags: unit.flags };
        const { snapshot, backup } = unit;
        if (unit.state !== 'active' || snapshot === undefined) return status;
        status.origin = unit.origin?.name;
        status.bstore = backup?.path;
        status.export = unit.export?.socketPath;
        status.exportClients = unit.export?.clients() ?? 0;
        status.valid = snapshot.valid;
        status.persistent = unit.persistent;
        if (unit.persistent) status.durability = snapshot.durability;
        status.onFull = snapshot.onFull;
        if (snapshot.onFull === 'block') {
          status.onFullTimeoutMs = snapshot.onFullTimeoutMs;
          status.waitingForSpace = snapshot.waitingForSpace;
        }
        if (!snapshot.valid) status.invalidReason = snapshot.invalidReason;
        status.info = snapshot.info();
        if (unit.device !== undefined) {
          status.device = unit.device.linkPath;
          status.loop = unit.device.loopPath;
        }
        const rollback = this.rollbacks.get(unit.index);
        if (rollback !== undefined) status.rollback = rollback.status();
        if (unit.tcp !== undefined) status.tcp = unit.tcp.info();
        const usage = storeUsage(snapshot);
        const limit = backup === undefined ? undefined : await storeBytesLimit(backup, usage.usedBytes);
        const rate = rates.observe(snapshot, usage.usedBytes, nowMs, storeStart(snapshot));
        status.clustersCopied = snapshot.stats().copiedClusters;
        status.storeBytesUsed = usage.usedBytes;
        if (limit !== undefined) status.storeBytesLimit = limit;
        status.storeBytesMax = usage.maxBytes;
        status.writeRate = rate;
        status.secondsToFull = snapshot.valid
          ? secondsToFull(usage.usedBytes, limit, usage.maxBytes, rate)
          : null;
        return status;
      }),
    );
  }

  /** Samples every active unit's store use into `rates` (fssd's periodic sampler). */
  sampleRates(rates: RateMeters<Snapshot>, nowMs = Date.now()): void {
    for (const unit of this.units) {
      if (unit.state === 'active' && unit.snapshot !== undefined) {
        rates.observe(unit.snapshot, storeUsage(unit.snapshot).usedBytes, nowMs, storeStart(unit.snapshot));
      }
    }
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
  private async create(unit: Unit, set: FssSet, options: SetOptions): Promise<SetResult> {
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
    const rolling = this.units.find((each) => each.rollback?.running === true && each.origin === existing);
    if (existing !== undefined && rolling !== undefined) {
      throw new FssError(
        'EBUSY',
        `origin ${existing.name} is being rolled back to ${unitName(rolling.index)}: snapshot it once that completes`,
        { syscall: 'FSSIOCSET' },
      );
    }
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
        sizeBytes: options.backupSize ?? originBytes,
        mountPoint,
        onFull: options.onFull ?? 'invalidate',
        onFullTimeoutMs: options.onFullTimeoutMs ?? ON_FULL_TIMEOUT_MS_DEFAULT,
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
      /** The store-full policy (FSSIOCSET's on_full). */
      onFull: 'invalidate' | 'block';
      onFullTimeoutMs: number;
    },
  ): Promise<SetResult> {
    const { origins, backends, log, state } = this.options;
    const name = unitName(unit.index);
    const unlink = (set.fss_flags & FSS_UNLINK_ON_CREATE) !== 0;
    const durability = this.options.durability ?? 'process';
    const persistent =
      state !== undefined &&
      durability !== 'none' &&
      (prepared.plan.kind === 'raw' || (prepared.plan.kind === 'file' && !unlink));
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
        { sizeBytes: prepared.sizeBytes, unlink },
        backends,
      );
      // Leased before the snapshot exists: every origin write after its moment is covered.
      if (persistent) await origin.lease.enable();
      const id = newUnitId();
      let baselines = new Map<number, Baseline>();
      const take = () =>
        origin.engine.createSnapshot((backup as OpenedBackup).store, {
          name,
          clusterSize: set.fss_csize,
          mount: set.fss_mount,
          originIdentity: origin.path,
          logger: log,
          durability: persistent ? durability : 'none',
          // A file fssd just created or truncated reads as zero where never written.
          tableZeroed: prepared.plan.kind === 'file',
          // At the snapshot moment: what every older unit of the origin had copied so far.
          onActivate: () => {
            baselines = recordBaselines(this.unitsOf(origin, unit));
          },
          onFull: prepared.onFull,
          onFullTimeoutMs: prepared.onFullTimeoutMs,
        });
      // A mounted filesystem is frozen (its dirty data written, new writes held) for the
      // snapshot moment, and thawed in every outcome; the freeze runs off this event loop,
      // which serves the filesystem's writes.
      const { mountPoint } = prepared;
      snapshot = mountPoint === undefined ? await take() : await backends.frozen(mountPoint, take);
      const served = await this.exportUnit(unit, snapshot, origin);
      exported = served;
      device = await this.options.devices?.attach('unit', name, snapshot, true);
      let record: UnitRecord | undefined;
      if (persistent) {
        record = {
          version: 1,
          unit: unit.index,
          mount: set.fss_mount,
          clusterSize: set.fss_csize,
          flags: set.fss_flags,
          durability: durability as Exclude<Durability, 'none'>,
          onFull: { policy: prepared.onFull, timeoutMs: prepared.onFullTimeoutMs },
          origin: {
            name: origin.name,
            path: origin.path,
            explicit: origin.explicit,
            attach: origin.device !== undefined,
          },
          store: {
            path: backup.path,
            kind: prepared.plan.kind === 'raw' ? 'raw' : 'file',
            identity: [...backup.identity].sort(),
          },
          createdAt: new Date().toISOString(),
          id,
          baselines: [...baselines.values()].map(encodeBaseline),
        };
        await (state as StateDir).writeUnit(record);
      }
      assert(unit.state === 'creating', 'nothing else changes a creating unit');
      Object.assign(unit, {
        state: 'active',
        flags: set.fss_flags,
        snapshot,
        origin,
        backup,
        export: served,
        device,
        persistent,
        id,
        baselines,
        record,
      });
      this.rollbacks.delete(unit.index); // a new snapshot: the last rollback was another's
      origin.units.add(unit.index);
      const info = snapshot.info();
      log(
        `${name}: configured on ${origin.name} (${set.fss_mount}), backup ${backup.path}` +
          `${backup.linked ? '' : ' (unlinked)'}: ${info.fsg_mount_size} clusters of ${info.fsg_csize}` +
          `${persistent ? `, persistent (${durability})` : ''}` +
          `${prepared.onFull === 'block' ? `, on full: block (${prepared.onFullTimeoutMs / 1000} s)` : ''}`,
      );
      return {
        unit: name,
        bstore: backup.path,
        export: served.socketPath,
        origin: origin.name,
        ...(device === undefined ? {} : { device: device.linkPath }),
      };
    } catch (error) {
      await device?.close().catch(() => undefined);
      await exported?.close().catch(() => undefined);
      if (snapshot !== undefined) await snapshot.close().catch(() => undefined);
      if (backup !== undefined) await discardBackup(backup);
      if (persistent) await this.forgetIfLast(unit, origin);
      if (prepared.existing === undefined) await origins.releaseIfUnused(origin);
      throw error;
    }
  }

  /** The unit's NBD export (read-only), whose last client leaving may unconfigure it. */
  /**
   * Serves unit `index`'s export over TCP too (tcp-exports.ts): ENXIO when it is not
   * configured, EBUSY when it already has a listener; the credentials' and listen(2)'s errors
   * as they are. Under the mutex, so a listener never outlives its unit.
   */
  tcpExport(index: number, request: TcpExportRequest): Promise<TcpExportInfo> {
    return this.options.mutex.run(async () => {
      const unit = this.configured(index, 'tcp-export');
      const name = unitName(index);
      if (unit.tcp !== undefined) {
        throw new FssError(
          'EBUSY',
          `${name} is already exported on ${unit.tcp.info().url}; stop it first (fss export --stop ${name})`,
          { syscall: 'tcp-export' },
        );
      }
      const snapshot = unit.snapshot!;
      unit.tcp = await startTcpExport(request, snapshot, {
        name,
        description: `fss snapshot ${name} of ${unit.origin?.path ?? 'an origin'}`,
        log: this.options.log,
        // Its last TCP client gone: an FSS_UNCONFIG_ON_CLOSE unit nobody else holds goes.
        onClientsChanged: (clients) => {
          if (clients > 0 || unit.snapshot !== snapshot) return;
          this.unconfigureIfUnused(unit).catch((error: unknown) =>
            this.options.log(`${name}: ${String(error)}`),
          );
        },
      });
      return unit.tcp.info();
    });
  }

  /** Stops unit `index`'s TCP listener: ENXIO when not configured, ENOENT when it has none. */
  tcpUnexport(index: number): Promise<void> {
    return this.options.mutex.run(async () => {
      const unit = this.configured(index, 'tcp-unexport');
      const tcp = unit.tcp;
      if (tcp === undefined) {
        throw new FssError('ENOENT', `${unitName(index)} has no TCP export`, { syscall: 'tcp-unexport' });
      }
      unit.tcp = undefined;
      await tcp.close();
      this.options.log(`${unitName(index)}: tcp: stopped`);
    });
  }

  /** The active unit numbered `index`; ENXIO when there is none or it is not configured. */
  private configured(index: number, syscall: string): Unit {
    const unit = this.units[index];
    if (unit === undefined) {
      throw new FssError('ENXIO', `fss${index}: no such unit (this daemon has ${this.units.length})`, {
        syscall,
      });
    }
    if (unit.state !== 'active' || unit.snapshot === undefined) {
      throw new FssError('ENXIO', `${unitName(index)} is not configured`, { syscall });
    }
    return unit;
  }

  private exportUnit(unit: Unit, snapshot: Snapshot, origin: OriginEntry): Promise<Export> {
    const { exporter, paths, log } = this.options;
    const name = unitName(unit.index);
    return exporter(paths.unit(unit.index), snapshot, {
      name,
      readOnly: true,
      description: `fss snapshot ${name} of ${origin.path}`,
      // qemu:dirty-bitmap:fssM for each older unit, as they are when a client asks.
      metaContexts: () => this.unitDirtyBitmaps(unit),
      // Its last NBD client gone: an FSS_UNCONFIG_ON_CLOSE unit nobody else holds goes.
      onClientsChanged: (clients) => {
        if (clients > 0 || unit.snapshot !== snapshot) return;
        this.unconfigureIfUnused(unit).catch((error: unknown) => log(`${name}: ${String(error)}`));
      },
    });
  }

  /**
   * A persistent unit is gone for good: its record goes, and when it was the origin's last
   * persistent unit, the origin's lease and record too.
   */
  private async forgetIfLast(unit: Unit, origin: OriginEntry): Promise<void> {
    const { state, log } = this.options;
    if (state === undefined) return;
    await state
      .removeUnit(unit.index)
      .catch((error: unknown) => log(`${unitName(unit.index)}: record: ${String(error)}`));
    const others = [...origin.units].some(
      (index) => index !== unit.index && this.units[index]?.persistent === true,
    );
    if (!others && origin.lease.isEnabled) {
      origin.lease.disable();
      await state
        .removeOrigin(origin.name)
        .catch((error: unknown) => log(`origin ${origin.name}: record: ${String(error)}`));
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
    await unit.tcp?.close().catch((error: unknown) => log(`${name}: tcp: ${String(error)}`));
    await unit.export?.close().catch((error: unknown) => log(`${name}: export: ${String(error)}`));
    await unit.snapshot?.close().catch((error: unknown) => log(`${name}: close: ${String(error)}`));
    const origin = unit.origin;
    // Unconfigured for good: no record. A stop keeps it, and the unit comes back at start.
    if (unit.persistent && !atShutdown && origin !== undefined) await this.forgetIfLast(unit, origin);
    Object.assign(unit, {
      state: 'idle',
      flags: 0,
      snapshot: undefined,
      origin: undefined,
      backup: undefined,
      export: undefined,
      tcp: undefined,
      persistent: false,
      id: '',
      baselines: new Map<number, Baseline>(),
      record: undefined,
      rollback: undefined,
    });
    log(`${name}: ${why}`);
    if (origin !== undefined) {
      origin.units.delete(unit.index);
      await origins.releaseIfUnused(origin, { atShutdown });
    }
  }

  private async unconfigureIfUnused(unit: Unit): Promise<void> {
    if (unit.state !== 'active' || (unit.flags & FSS_UNCONFIG_ON_CLOSE) === 0) return;
    if (unit.rollback?.running === true) return; // it is unconfigured when the rollback completes
    if (unit.openers.size > 0 || (unit.export?.clients() ?? 0) > 0) return;
    if ((unit.tcp?.clients() ?? 0) > 0) return;
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
   * Brings the recorded persistent units back (at start, before the control socket answers,
   * so no client sees a half-restored table). Each is re-claimed, resumed and exported under
   * its own number; one whose origin may have been written while no daemon ran comes back
   * invalid with the reason; one whose origin or store is gone is logged and forgotten.
   */
  async reattach(): Promise<void> {
    const { state, log } = this.options;
    if (state === undefined) return;
    const records = await state.readUnits((path, why) =>
      log(`state: ${path}: unreadable record (${why}); ignored`),
    );
    // Every origin's record is judged before any unit comes back: reattaching renews leases.
    const changed = new Map<UnitRecord, string | undefined>();
    for (const record of records) changed.set(record, await this.originChangedSince(record));
    for (const record of records) {
      const unit = this.units[record.unit];
      const name = unitName(record.unit);
      if (unit === undefined) {
        log(`${name}: not reattached: this daemon has ${this.units.length} units; record kept`);
        continue;
      }
      unit.state = 'creating';
      try {
        await this.options.mutex.run(() => this.reattachUnit(unit, record, changed.get(record)));
      } catch (error) {
        unit.state = 'idle';
        log(`${name}: not reattached: ${toFssError(error).message}; record removed`);
        await state.removeUnit(record.unit).catch(() => undefined);
      }
    }
    // Every unit of each origin is back (copy-on-write for all of them): rollbacks resume.
    for (const { unit, writer, fromCluster } of this.resumes.splice(0)) {
      this.startRollback(unit, writer, fromCluster);
    }
  }

  /** One recorded unit back; caller holds the mutex; `unit` is `creating`. */
  private async reattachUnit(unit: Unit, record: UnitRecord, changed: string | undefined): Promise<void> {
    const { origins, backends, log } = this.options;
    const name = unitName(unit.index);
    let origin = await origins.find(record.origin.path).catch(() => undefined);
    if (origin === undefined) {
      const add = (attach: boolean) =>
        origins.add(record.origin.path, {
          name: record.origin.name,
          explicit: record.origin.explicit,
          attach,
        });
      origin = await add(record.origin.attach).catch(async (error: unknown) => {
        if (!record.origin.attach) throw error;
        log(`origin ${record.origin.name}: not attached again: ${toFssError(error).description}`);
        return add(false);
      });
    }
    let snapshot: Snapshot | undefined;
    let exported: Export | undefined;
    let device: KernelDevice | undefined;
    try {
      const raw =
        record.store.kind === 'raw' ? await backends.openRawStore(record.store.path, origin.path) : undefined;
      const store =
        raw?.store ??
        (await backends.openFileStore(record.store.path, { create: 'existing', unlinkOnOpen: false }));
      const identity = await storageIdentity(record.store.path).catch(() => new Set<string>());
      if (!record.store.identity.every((token) => identity.has(token))) {
        await store.close().catch(() => undefined);
        throw new FssError('ENOENT', `backup ${record.store.path} is not the store it was (replaced)`);
      }
      await origin.lease.enable();
      snapshot = await origin.engine.resumeSnapshot(store, {
        name,
        mount: record.mount,
        originIdentity: origin.path,
        logger: log,
        durability: record.durability,
        // Records older than the policy have none: NetBSD's invalidate.
        onFull: record.onFull?.policy ?? 'invalidate',
        onFullTimeoutMs: record.onFull?.timeoutMs,
      });
      if (changed !== undefined) snapshot.invalidate(changed);
      exported = await this.exportUnit(unit, snapshot, origin);
      device = await this.options.devices?.attach('unit', name, snapshot, true);
      const backup: OpenedBackup = {
        store,
        path: record.store.path,
        identity,
        created: false,
        linked: true,
        capacityBytes: raw?.sizeBytes,
      };
      Object.assign(unit, {
        state: 'active',
        flags: record.flags,
        snapshot,
        origin,
        backup,
        export: exported,
        device,
        persistent: true,
        // A record from before changed-block tracking has no id: no later unit can name it.
        id: record.id ?? newUnitId(),
        baselines: new Map(
          (record.baselines ?? []).map((each) => [each.unit, decodeBaseline(each)] as const),
        ),
        record,
      });
      origin.units.add(unit.index);
      if (record.rollback !== undefined)
        await this.reserveForResume(unit, origin, record.rollback.nextCluster);
      const info = snapshot.info();
      log(
        `${name}: reattached on ${origin.name} (${record.mount}), backup ${record.store.path}: ` +
          `${snapshot.stats().copiedClusters} of ${info.fsg_mount_size} clusters copied` +
          `${snapshot.valid ? '' : `, invalid: ${snapshot.invalidReason}`}`,
      );
    } catch (error) {
      await device?.close().catch(() => undefined);
      await exported?.close().catch(() => undefined);
      await snapshot?.close().catch(() => undefined);
      await this.forgetIfLast(unit, origin); // its record, and the origin's when it was the last
      await origins.releaseIfUnused(origin);
      throw error;
    }
  }

  /**
   * Why the origin of `record` cannot be trusted to be untouched since the daemon stopped, or
   * undefined: its identity or size changed, or (an image) it was modified after the lease.
   * The origin record is read before the origin is claimed again (which renews the lease).
   */
  private async originChangedSince(record: UnitRecord): Promise<string | undefined> {
    const state = this.options.state as StateDir;
    const lease = await state.readOrigin(record.origin.name);
    if (lease === undefined)
      return 'the origin record is missing: writes while fssd was not running cannot be ruled out';
    const identity = await storageIdentity(record.origin.path).catch(() => undefined);
    if (identity === undefined) return undefined; // claiming it will fail and say why
    if (!lease.identity.every((token) => identity.has(token))) {
      return `origin ${record.origin.path} is not the device or file it was (its identity changed)`;
    }
    const info = await stat(record.origin.path);
    if (info.isFile()) {
      if (info.size !== lease.sizeBytes) {
        return `origin ${record.origin.path} changed size while fssd was not running (${lease.sizeBytes} -> ${info.size} bytes)`;
      }
      if (info.mtimeMs > lease.writesUntilMs) {
        return (
          `origin ${record.origin.path} was modified while fssd was not running ` +
          `(mtime ${new Date(info.mtimeMs).toISOString()}, after ${new Date(lease.writesUntilMs).toISOString()})`
        );
      }
    }
    return undefined;
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
