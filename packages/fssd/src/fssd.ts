/**
 * fssd: the daemon that owns origins and snapshot units, as the kernel owns fss's units.
 *
 * Start: make the run directory (0700, ours, not a symlink), take the run-directory lock
 * (lock.ts), write fssd.pid, remove stale sockets (the lock proves nobody serves them),
 * listen on fssd.sock (0600). Only then is the daemon ready: clients that started us wait
 * for the control socket to answer. A start that fails part-way undoes what it did (no pid
 * file, no socket, no lock is left).
 *
 * Stop (SIGTERM, SIGINT, or `stop()`): stop accepting control connections, unconfigure every
 * unit (exports closed, snapshots closed, stores closed), release every origin (exports
 * closed, claims dropped), remove the control socket and the pid file, release the lock.
 * A stop requested while the daemon is still starting waits for the start to finish, then
 * releases what it made; after a failed start there is nothing of ours to release (the pid
 * file and socket may be another daemon's). The log file stays: it is the record of what
 * happened.
 */
import { existsSync, type FSWatcher, watch } from 'node:fs';
import { chmod, lstat, mkdir, readdir, realpath, rm, writeFile } from 'node:fs/promises';
import type { DaemonStatus } from '@fss/control';
import { checkSocketPath, type RunPaths, runPaths, UNIT_COUNT_DEFAULT, UNIT_COUNT_MAX } from '@fss/control';
import { FssError, Mutex, toFssError } from '@fss/core';
import type { Durability, Origin, Snapshot } from '@fss/engine';
import fssdPackage from '../package.json' with { type: 'json' };
import { type Backends, linuxBackends } from './backends';
import { BypassWatch } from './bypass-watch';
import { ControlServer } from './control-server';
import { KernelDevices } from './devices';
import { type Exporter, nbdExporter } from './exports';
import { lockRunDir, type RunDirLock } from './lock';
import { createLog, type Log, type StderrStyle } from './log';
import { type OriginEntry, OriginTable } from './origins';
import { RateMeters } from './rate-meter';
import { StateDir } from './state-dir';
import { UnitTable } from './units';

export interface FssdOptions {
  runDir: string;
  unitCount?: number;
  log?: Log;
  backends?: Backends;
  exporter?: Exporter;
  /**
   * Called when the control socket disappeared from the run directory (someone removed the
   * directory): nobody can reach this daemon any more, so it should stop. Default: nothing.
   */
  onUnreachable?: () => void;
  /**
   * Kernel block devices for units (/dev/fssN) and attached origins (/dev/fss/NAME): `auto`
   * (default) makes them where possible (root, /dev/fuse, the loop driver), `off` never.
   */
  devices?: 'auto' | 'off';
  /** Where the device links go (default /dev). */
  devDir?: string;
  /**
   * The state directory (state-dir.ts): persistent units are recorded there and come back at
   * start. Undefined (the default for the library): no unit is persistent. The fssd program
   * passes `defaultStateDir`.
   */
  stateDir?: string;
  /** Durability of persistent units (default 'process'; 'none': no unit is persistent). */
  durability?: Durability;
  /**
   * How often origins with valid snapshots are checked for writes outside fss (loop devices
   * over them, other processes' writable descriptors; bypass-watch.ts), in ms. Default
   * BYPASS_CHECK_MS (1000); 0: never.
   */
  bypassCheckMs?: number;
  /** A rollback writes at most this many bytes a second (default 0: as fast as it can). */
  rollbackBytesPerSecond?: number;
  /** How the default log writes stderr (log.ts): stamped unless fssd runs under a service manager. */
  stderrStyle?: StderrStyle;
}

/** How often the write rates are sampled between status requests. */
const RATE_SAMPLE_MS = 1000;

export class Fssd {
  readonly paths: RunPaths;
  readonly unitCount: number;
  private log: Log;
  private lock: RunDirLock | undefined;
  private control: ControlServer | undefined;
  private units: UnitTable | undefined;
  private origins: OriginTable | undefined;
  private runDirWatcher: FSWatcher | undefined;
  private kernelDevices: KernelDevices | undefined;
  private bypass: BypassWatch<OriginEntry> | undefined;
  private state: StateDir | undefined;
  private starting: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;
  /** Moving averages of each store's growth and each origin's writes (fss status). */
  private readonly storeRates = new RateMeters<Snapshot>();
  private readonly originRates = new RateMeters<Origin>();
  private rateSampler: NodeJS.Timeout | undefined;

  constructor(private readonly options: FssdOptions) {
    this.paths = runPaths(options.runDir);
    this.unitCount = options.unitCount ?? UNIT_COUNT_DEFAULT;
    if (!Number.isInteger(this.unitCount) || this.unitCount < 1 || this.unitCount > UNIT_COUNT_MAX) {
      throw new FssError('EINVAL', `unit count ${this.unitCount} out of range (1..${UNIT_COUNT_MAX})`);
    }
    this.log = options.log ?? createLog(undefined, true, options.stderrStyle);
  }

  /** Starts the daemon once; later calls return the same start. */
  start(): Promise<void> {
    this.starting ??= this.startOnce();
    return this.starting;
  }

  private async startOnce(): Promise<void> {
    const { paths } = this;
    checkSocketPath(paths.control);
    checkSocketPath(paths.unit(this.unitCount - 1));
    await prepareRunDir(paths.dir);
    const lock = await lockRunDir(await realpath(paths.dir));
    // What start-up made, undone in reverse order if a later step fails.
    const undo: Array<() => Promise<unknown>> = [() => lock.release()];
    try {
      if (this.options.log === undefined) this.log = createLog(paths.log, true, this.options.stderrStyle);
      await writeFile(paths.pid, `${process.pid}\n`, { mode: 0o644 });
      undo.push(() => rm(paths.pid, { force: true }));
      await mkdir(paths.originDir, { mode: 0o700, recursive: true }).catch((error: unknown) => {
        throw toFssError(error, { syscall: 'mkdir', path: paths.originDir });
      });
      // A directory left by an earlier daemon keeps its mode: tighten it like the run directory.
      await chmod(paths.originDir, 0o700);
      await removeLeftovers(paths);
      if (this.options.stateDir !== undefined) {
        this.state = new StateDir(this.options.stateDir);
        await this.state.prepare();
      }
      this.serve(paths);
      await this.kernelDevices?.removeStale();
      // Persistent units come back before anyone can ask for them.
      await this.units?.reattach();
      undo.push(async () => {
        await this.units?.clearAll();
        for (const entry of this.origins?.entries ?? []) {
          await this.origins?.release(entry, { atShutdown: true }).catch(() => undefined);
        }
      });
      const control = this.control as ControlServer;
      await control.listen(paths.control);
      undo.push(async () => {
        await control.close();
        await rm(paths.control, { force: true });
      });
      this.lock = lock;
      this.watchRunDir();
      const devices = this.kernelDevices === undefined ? 'no kernel devices' : 'kernel devices on';
      const state = this.state === undefined ? 'no persistent units' : `state in ${this.state.dir}`;
      this.log(`started: ${this.unitCount} units, ${devices}, ${state}, control socket ${paths.control}`);
    } catch (error) {
      for (const step of undo.reverse()) await step().catch(() => undefined);
      this.control = undefined;
      throw error;
    }
  }

  /** Builds the tables and the control server (nothing listens yet). */
  private serve(paths: RunPaths): void {
    // One state change at a time (configure, unconfigure, origin add/remove, releases on the
    // last close), as NetBSD serialises snapshot creation (fss_creating); it also makes the
    // "is this backup in use?" checks race-free.
    const mutex = new Mutex();
    const exporter = this.options.exporter ?? nbdExporter(this.log);
    const backends = this.options.backends ?? linuxBackends;
    const attacher = this.options.devices === 'off' ? undefined : backends.attacher;
    const devices =
      attacher === undefined
        ? undefined
        : new KernelDevices({ paths, devDir: this.options.devDir ?? '/dev', attacher, log: this.log });
    this.kernelDevices = devices;
    // A write outside fss invalidates every snapshot of the origin (each logs it once).
    const bypass =
      this.options.bypassCheckMs === 0
        ? undefined
        : new BypassWatch<OriginEntry>({
            intervalMs: this.options.bypassCheckMs,
            wanted: (entry) => entry.engine.snapshots.some((snapshot) => snapshot.valid),
            onBypass: (entry, reason) => {
              for (const snapshot of entry.engine.snapshots) snapshot.invalidate(reason);
            },
            log: this.log,
          });
    this.bypass = bypass;
    const origins = new OriginTable({
      paths,
      mutex,
      backends,
      exporter,
      log: this.log,
      storeUser: (identity) => units.unitUsing(identity),
      metaContexts: (entry) => units.originDirtyBitmaps(entry),
      devices,
      state: this.state,
      ...(bypass === undefined ? {} : { bypass }),
    });
    const units: UnitTable = new UnitTable({
      count: this.unitCount,
      paths,
      origins,
      backends,
      exporter,
      mutex,
      log: this.log,
      devices,
      state: this.state,
      ...(this.options.durability === undefined ? {} : { durability: this.options.durability }),
      rollbackBytesPerSecond: this.options.rollbackBytesPerSecond ?? 0,
    });
    this.origins = origins;
    this.units = units;
    this.control = new ControlServer({
      units,
      origins,
      mutex,
      log: this.log,
      runDir: paths.dir,
      status: () => this.status(),
    });
    // Status requests sample too; this keeps the averages moving between them, so a rate
    // seen after a quiet minute reflects that minute. Unref'd: it keeps nothing alive.
    this.rateSampler = setInterval(() => this.sampleRates(), RATE_SAMPLE_MS).unref();
  }

  private sampleRates(nowMs = Date.now()): void {
    this.units?.sampleRates(this.storeRates, nowMs);
    for (const entry of this.origins?.entries ?? []) {
      this.originRates.observe(entry.engine, entry.engine.bytesWritten, nowMs);
    }
  }

  /**
   * Notices the control socket disappearing (someone removed the run directory): nobody can
   * reach this daemon any more. An inotify watch on the run directory, no polling.
   */
  private watchRunDir(): void {
    const { paths } = this;
    const check = (): void => {
      if (existsSync(paths.control) || this.stopping !== undefined) return;
      this.log(`control socket ${paths.control} is gone; nobody can reach this daemon`);
      this.runDirWatcher?.close();
      this.runDirWatcher = undefined;
      this.options.onUnreachable?.();
    };
    const watcher = watch(paths.dir, { persistent: false }, check);
    watcher.on('error', check);
    this.runDirWatcher = watcher;
  }

  /**
   * Writes a line to the daemon's log: stderr until the run directory is ours, then fssd.log
   * as well (a client that started us closes our stderr once we answer, so only the file
   * keeps what is said later).
   */
  logLine(line: string): void {
    this.log(line);
  }

  /** What `fss status` shows; every request also takes a sample of the rates. */
  async status(): Promise<DaemonStatus> {
    const origins = this.origins;
    const nowMs = Date.now();
    return {
      pid: process.pid,
      runDir: this.paths.dir,
      version: fssdPackage.version,
      unitCount: this.unitCount,
      units: (await this.units?.status(this.storeRates, nowMs)) ?? [],
      origins:
        origins === undefined
          ? []
          : origins.entries.map((entry) => ({
              ...origins.info(entry),
              writeRate: this.originRates.observe(entry.engine, entry.engine.bytesWritten, nowMs),
            })),
    };
  }

  /** Releases everything; safe to call more than once, and while still starting. */
  stop(): Promise<void> {
    this.stopping ??= this.stopAfterStart();
    return this.stopping;
  }

  private async stopAfterStart(): Promise<void> {
    const started = await (this.starting ?? Promise.reject(new Error('not started'))).then(
      () => true,
      () => false,
    );
    if (started) await this.release();
  }

  private async release(): Promise<void> {
    this.log('stopping: releasing every unit and origin');
    this.runDirWatcher?.close();
    clearInterval(this.rateSampler);
    this.bypass?.stop();
    await this.control?.close();
    // A rollback stops after its chunk in flight (its progress is recorded; it resumes at start).
    await this.units?.stopRollbacks();
    // No origin write may pass once units start closing: a persistent unit closed while its
    // origin still took writes would miss them (they would land after its copy-on-write ended).
    for (const entry of this.origins?.entries ?? []) await entry.engine.stopWrites();
    await this.units?.clearAll();
    for (const entry of this.origins?.entries ?? []) {
      await this.origins
        ?.release(entry, { atShutdown: true })
        .catch((error: unknown) => this.log(`origin ${entry.name}: ${String(error)}`));
    }
    await this.kernelDevices?.tidy();
    await rm(this.paths.control, { force: true });
    await rm(this.paths.pid, { force: true });
    await this.lock?.release();
    this.lock = undefined;
    this.log('stopped');
  }
}

/**
 * Makes the run directory: created 0700 when missing; when present it must be a real
 * directory (not a symlink) owned by us, and is tightened to 0700. Anything else is refused:
 * a directory someone else prepared in /tmp could let them reach our sockets.
 */
export async function prepareRunDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { mode: 0o700, recursive: true });
  } catch (error) {
    throw toFssError(error, { syscall: 'mkdir', path: dir });
  }
  const info = await lstat(dir);
  if (!info.isDirectory()) throw new FssError('ENOTDIR', 'run directory is not a directory', { path: dir });
  const uid = process.getuid?.();
  if (uid !== undefined && info.uid !== uid) {
    throw new FssError('EPERM', `run directory is owned by uid ${info.uid}, not ${uid}`, { path: dir });
  }
  if ((info.mode & 0o777) !== 0o700) {
    await chmod(dir, 0o700);
  }
}

/** Sockets a killed daemon left behind; safe to remove because we hold the lock. */
async function removeLeftovers(paths: RunPaths): Promise<void> {
  for (const name of await readdir(paths.dir)) {
    if (name === 'fssd.sock' || /^fss\d+\.sock$/.test(name))
      await rm(`${paths.dir}/${name}`, { force: true });
  }
  for (const name of await readdir(paths.originDir)) {
    if (name.endsWith('.sock')) await rm(`${paths.originDir}/${name}`, { force: true });
  }
}
