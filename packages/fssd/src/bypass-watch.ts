/**
 * Writes that bypass fss (issue 11): the claim (origins.ts, @fss/blockdev-linux's claim.ts)
 * keeps other claimers out, but not everyone. After it, someone can still attach a loop
 * device to an origin image (`losetup -f image`: the loop driver takes no lock) or open the
 * image, or a block-device origin without O_EXCL, for writing in another process and write.
 * Every snapshot of that origin would then silently miss those writes. This watch finds such
 * writers and reports them (`onBypass`); fssd then invalidates every snapshot of the origin,
 * saying why (`fss0: snapshot invalid: origin /x/image is written outside fss: loop device
 * /dev/loop7 is backed by it`).
 *
 * One timer for all origins, every `intervalMs` (BYPASS_CHECK_MS), unref'd; it runs while an
 * origin is claimed, a tick reads nothing while no origin has a valid snapshot (`wanted`),
 * and ticks never overlap (one still running after STALLED_MS is logged). A check looks for:
 *
 *   loop devices  every check. The attached ones are those /proc/partitions lists (a loop
 *                 device without a backing file has no size and is not listed); each one's
 *                 loop/backing_file is compared by storage identity (inode, or device number
 *                 for a block device, off the main thread), skipping read-only loops and the
 *                 loop device that is itself the origin. The backing files are read again
 *                 when /proc/partitions changed and with every process scan (a loop device
 *                 detached and attached again at the same size within one period is seen at
 *                 the next scan).
 *   processes     /proc/[pid]/fd/N of every process but fssd. lstat of the magic link says how
 *                 the file is open (its owner write bit is FMODE_WRITE: fs/proc/fd.c), so only
 *                 descriptors open for writing are followed (stat: dev/ino of a file; the
 *                 storage identity of a block device, so a writer on a partition or on the
 *                 whole disk of an origin counts); a match is confirmed by
 *                 /proc/[pid]/fdinfo/N `flags:` (octal, O_WRONLY 01 or O_RDWR 02) and named by
 *                 /proc/[pid]/comm.
 *
 * The process scan is the expensive part (one lstat per descriptor on the machine; about
 * 20 ms of CPU for 80 processes and 250 descriptors on a small VM), so it runs only when the
 * origin may have been written since the last scan: its first check while wanted, then when
 * its write signature changed (an image's ctime and size, which every write moves, fssd's
 * own included; a block device's write and discard counters in /sys/dev/block/M:m/stat, its
 * disk's too for a partition), and at least every FULL_SCAN_EVERY checks (timestamps are
 * coarse on kernels without multigrain timestamps: a write right after the signature was
 * read may not move it). A writer that has the file open but has not written yet is found
 * when it writes.
 *
 * All of it is asynchronous (libuv's pool, through fs/promises or, on the per-descriptor
 * path, fs callbacks, a third cheaper; koffi's worker pool): fssd serves FUSE files from its
 * main thread, so a synchronous stat of one of them there would deadlock. (claim.ts's
 * loopDevicesBackedBy is not used for that reason: it statx()es the image synchronously, and
 * needs a descriptor of it.)
 *
 * What it cannot see: a writer that opens, writes and closes between two checks; a shared
 * writable mmap whose descriptor was closed; processes in other PID namespaces or, when fssd
 * is not root, of other users; a filesystem mounted on a partition of a block-device origin
 * (the kernel writes it, no descriptor). inotify (fs.watch on the image) cannot tell who
 * writes: fssd's own writes raise the same events, Node's watch has no open events, and
 * inotify_add_watch resolves the path synchronously on the main thread.
 */
import { lstat as lstatCallback, readdir as readdirCallback, type Stats } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import {
  identitiesOverlap,
  loopBackingFile,
  type StorageIdentity,
  storageIdentity,
} from '@fss/blockdev-linux';
import type { Log } from './log';

/** How often the watch checks, by default (fssd --bypass-check-ms, FSS_BYPASS_CHECK_MS). */
export const BYPASS_CHECK_MS = 1000;

/** The process scan runs at least every this many checks of a wanted origin. */
export const FULL_SCAN_EVERY = 30;

/** A check still running after this long is logged (once): detection has stalled. */
const STALLED_MS = 30_000;

/** Processes scanned at once (each one's descriptors in parallel): bounds the libuv queue. */
const PROCESS_CONCURRENCY = 4;

export interface WatchedOrigin {
  readonly name: string;
  readonly path: string;
  readonly identity: StorageIdentity;
}

export interface BypassWatchOptions<T extends WatchedOrigin> {
  /** Period of the checks in ms (default BYPASS_CHECK_MS). */
  intervalMs?: number;
  /** Whether `origin` needs checking now: it has a valid snapshot. */
  wanted(origin: T): boolean;
  /** `origin` is written outside fss; `reason` says by whom. Called at every check that finds it. */
  onBypass(origin: T, reason: string): void;
  log: Log;
}

/** What one check did. */
export interface CheckResult {
  /** Origins checked (wanted). */
  origins: number;
  /** Whether it scanned the processes. */
  scanned: boolean;
  /** Origins reported to onBypass. */
  bypassed: number;
}

/** Something that can write storage without fss seeing it. */
interface Writer {
  readonly identity: StorageIdentity;
  /** The loop device's own identity token (`dev:7:3`): the origin may be that very device. */
  readonly self?: string;
  readonly describe: () => Promise<string | undefined>;
}

interface Watched {
  /** The write signature when the processes were last scanned; undefined: never scanned. */
  scannedAt: string | undefined;
  checksSinceScan: number;
}

export class BypassWatch<T extends WatchedOrigin> {
  private readonly origins = new Map<T, Watched>();
  private readonly intervalMs: number;
  private timer: NodeJS.Timeout | undefined;
  private running: { since: number; warned: boolean } | undefined;
  private stopped = false;
  /** The loop devices as last read, and the /proc/partitions they were read for. */
  private loops: { partitions: string; writers: Writer[] } | undefined;

  constructor(private readonly options: BypassWatchOptions<T>) {
    this.intervalMs = options.intervalMs ?? BYPASS_CHECK_MS;
  }

  /** Watches `origin` from now on (a claimed origin). */
  add(origin: T): void {
    if (this.stopped) return;
    this.origins.set(origin, { scannedAt: undefined, checksSinceScan: 0 });
    if (this.timer === undefined) {
      this.timer = setInterval(() => this.tick(), this.intervalMs);
      this.timer.unref(); // never what keeps fssd alive
    }
  }

  /** Stops watching `origin` (released); the timer stops with the last one. */
  remove(origin: T): void {
    this.origins.delete(origin);
    if (this.origins.size === 0) this.clearTimer();
  }

  /** Stops every check (fssd's stop); a check under way finishes without reporting. */
  stop(): void {
    this.stopped = true;
    this.origins.clear();
    this.clearTimer();
  }

  /** One check of every wanted origin; reports each one written outside fss. */
  async check(): Promise<CheckResult> {
    const targets: Array<[T, Watched]> = [];
    for (const [origin, watched] of this.origins) {
      if (this.options.wanted(origin)) targets.push([origin, watched]);
      else watched.scannedAt = undefined; // a new snapshot gets a full scan first
    }
    if (targets.length === 0) return { origins: 0, scanned: false, bypassed: 0 };
    // Signatures before the scan: a write during it moves them, and the next check scans.
    const signatures = await Promise.all(
      targets.map(([origin]) => writeSignature(origin.identity, origin.path)),
    );
    const scan = targets.some(
      ([, watched], index) =>
        watched.scannedAt === undefined ||
        signatures[index] !== watched.scannedAt ||
        watched.checksSinceScan + 1 >= FULL_SCAN_EVERY,
    );
    const writers = [...(await this.loopWriters(scan)), ...(scan ? await processWriters(process.pid) : [])];
    let bypassed = 0;
    for (const [index, [origin, watched]] of targets.entries()) {
      if (scan) {
        watched.scannedAt = signatures[index];
        watched.checksSinceScan = 0;
      } else {
        watched.checksSinceScan += 1;
      }
      const found = writers.filter(
        (writer) =>
          identitiesOverlap(origin.identity, writer.identity) &&
          (writer.self === undefined || !origin.identity.has(writer.self)),
      );
      if (found.length === 0) continue;
      const described = (await Promise.all(found.map((writer) => writer.describe()))).filter(
        (text): text is string => text !== undefined,
      );
      // Released, stopped or invalid meanwhile: nothing to report.
      if (described.length === 0 || !this.origins.has(origin) || !this.options.wanted(origin)) continue;
      bypassed += 1;
      this.options.onBypass(origin, `origin ${origin.path} is written outside fss: ${described.join('; ')}`);
    }
    return { origins: targets.length, scanned: scan, bypassed };
  }

  /** The attached loop devices: read again when /proc/partitions changed, or `refresh`. */
  private async loopWriters(refresh: boolean): Promise<Writer[]> {
    const partitions = await readFile('/proc/partitions', 'utf8').catch(() => undefined);
    const cached = this.loops;
    if (!refresh && partitions !== undefined && cached?.partitions === partitions) return cached.writers;
    const writers = await loopWriters(partitions);
    this.loops = partitions === undefined ? undefined : { partitions, writers };
    return writers;
  }

  private tick(): void {
    const { running } = this;
    if (running !== undefined) {
      if (!running.warned && Date.now() - running.since > STALLED_MS) {
        running.warned = true;
        this.options.log(
          `bypass check: still running after ${STALLED_MS / 1000} s (a hung filesystem?); ` +
            'writes outside fss are not detected meanwhile',
        );
      }
      return;
    }
    const current = { since: Date.now(), warned: false };
    this.running = current;
    this.check()
      .catch((error: unknown) => this.options.log(`bypass check failed: ${String(error)}`))
      .finally(() => {
        if (current.warned) this.options.log('bypass check: running again');
        this.running = undefined;
      });
  }

  private clearTimer(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }
}

/**
 * What every write to the origin changes: a block device's write and discard counts (its
 * disk's too, for a partition), an image's ctime and size; undefined when unreadable.
 */
async function writeSignature(identity: StorageIdentity, path: string): Promise<string | undefined> {
  const devices = [...identity]
    .filter((token) => token.startsWith('dev:') || token.startsWith('disk:'))
    .map((token) => token.slice(token.indexOf(':') + 1));
  if (devices.length > 0) {
    const counts = await Promise.all(
      devices.map(async (device) => {
        const fields = (await readFile(`/sys/dev/block/${device}/stat`, 'utf8')).trim().split(/\s+/);
        // write I/Os, write sectors, discard I/Os, discard sectors (Documentation/block/stat.rst)
        return [4, 6, 11, 13].map((field) => fields[field] ?? '').join(',');
      }),
    ).catch(() => undefined);
    return counts?.join(' ');
  }
  const info = await stat(path, { bigint: true }).catch(() => undefined);
  return info === undefined ? undefined : `${info.dev}:${info.ino}:${info.ctimeNs}:${info.size}`;
}

/**
 * Attached loop devices, with their backing file's (or device's) identity: the loop devices
 * `partitions` (/proc/partitions) lists, or every one in /sys/block when it is unreadable.
 */
async function loopWriters(partitions: string | undefined): Promise<Writer[]> {
  const loops =
    partitions === undefined
      ? (await readdir('/sys/block').catch(() => [] as string[]))
          .filter((name) => /^loop\d+$/.test(name))
          .map((name) => ({ name, dev: undefined as string | undefined }))
      : partitions.split('\n').flatMap((line) => {
          const [major, minor, , name] = line.trim().split(/\s+/);
          return name !== undefined && /^loop\d+$/.test(name) ? [{ name, dev: `${major}:${minor}` }] : [];
        });
  const found = await Promise.all(
    loops.map(async ({ name, dev }): Promise<Writer | undefined> => {
      const backing = await loopBackingFile(name);
      if (backing === undefined) return undefined; // not attached
      // Off the main thread: the backing file may be a FUSE file this process serves.
      const identity = await storageIdentity(backing).catch(() => undefined);
      if (identity === undefined) return undefined; // deleted or renamed: nothing to compare
      const self = dev ?? (await readFile(`/sys/block/${name}/dev`, 'utf8').catch(() => undefined))?.trim();
      return {
        identity,
        ...(self === undefined ? {} : { self: `dev:${self}` }),
        describe: async () => {
          const readOnly = await readFile(`/sys/block/${name}/ro`, 'utf8').catch(() => '0');
          return readOnly.trim() === '1' ? undefined : `loop device /dev/${name} is backed by it`;
        },
      };
    }),
  );
  return found.filter((writer): writer is Writer => writer !== undefined);
}

/** Descriptors open for writing in every process but `self`, on files or block devices. */
async function processWriters(self: number): Promise<Writer[]> {
  const pids = (await readdir('/proc')).filter((name) => /^\d+$/.test(name) && Number(name) !== self);
  const writers: Writer[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < pids.length) {
      const pid = pids[next++] as string;
      writers.push(...(await writersOf(pid)));
    }
  };
  await Promise.all(Array.from({ length: PROCESS_CONCURRENCY }, worker));
  return writers;
}

async function writersOf(pid: string): Promise<Writer[]> {
  const fds = await quickReaddir(`/proc/${pid}/fd`); // [] when gone, or not ours
  const found = await Promise.all(
    fds.map(async (fd): Promise<Writer | undefined> => {
      const link = `/proc/${pid}/fd/${fd}`;
      try {
        // The magic link's mode is how the file is open: follow only writable descriptors.
        if ((((await quickLstat(link))?.mode ?? 0) & 0o200) === 0) return undefined;
        const target = await stat(link, { bigint: true });
        let identity: StorageIdentity;
        if (target.isFile()) identity = new Set([`file:${deviceName(target.dev)}:${target.ino}`]);
        else if (target.isBlockDevice()) identity = await storageIdentity(link);
        else return undefined; // a pipe, socket, terminal…
        return { identity, describe: () => describeProcess(pid, fd) };
      } catch {
        return undefined; // closed or exited meanwhile
      }
    }),
  );
  return found.filter((writer): writer is Writer => writer !== undefined);
}

// The per-descriptor path in callback form: a third less CPU than fs/promises' versions.
function quickReaddir(path: string): Promise<string[]> {
  return new Promise((resolve) => readdirCallback(path, (error, names) => resolve(error ? [] : names)));
}

function quickLstat(path: string): Promise<Stats | undefined> {
  return new Promise((resolve) => lstatCallback(path, (error, stats) => resolve(error ? undefined : stats)));
}

/** `process 1234 (dd) has it open for writing`, once fdinfo confirms the access mode. */
async function describeProcess(pid: string, fd: string): Promise<string | undefined> {
  const fdinfo = await readFile(`/proc/${pid}/fdinfo/${fd}`, 'utf8').catch(() => undefined);
  const flags = fdinfo === undefined ? undefined : /^flags:\s*([0-7]+)/m.exec(fdinfo)?.[1];
  if (flags !== undefined && (Number.parseInt(flags, 8) & 0o3) === 0) return undefined; // O_RDONLY
  const comm = await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => undefined);
  return `process ${pid}${comm === undefined ? '' : ` (${comm.trim()})`} has it open for writing`;
}

/** "major:minor" of a dev_t as libuv reports it (glibc's encoding), as statx names it. */
function deviceName(dev: bigint): string {
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}
