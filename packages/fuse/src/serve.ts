/**
 * serveFuse: one BlockDevice as one regular file in a FUSE mount of our own.
 *
 * Lifecycle:
 *
 *   serveFuse   open /dev/fuse, mount(2) on the caller's directory, start the readers,
 *               wait for the kernel's INIT and answer it; the file is then usable
 *   (serving)   requests flow reader → main thread → device → reply (session.ts)
 *   close()     umount2 (retried while busy, then MNT_DETACH), wait for the device calls in
 *               flight, stop the readers, close /dev/fuse (which aborts whatever is left of
 *               the connection: a holder of the file then gets ENOTCONN, never a hang)
 *
 * close() does not close the device: the caller owns it, and may serve it again.
 *
 * If the process exits without close(), an exit hook closes the /dev/fuse descriptors (the
 * kernel aborts the connection) and lazily unmounts the mount point; both never wait. After
 * SIGKILL no hook runs: the connection still aborts as the descriptors close, but the mount
 * point stays mounted until `removeStaleMount` (mount.ts) or `umount -l`.
 */
import { closeSync } from 'node:fs';
import { join } from 'node:path';
import { libc } from '@fss/blockdev-linux';
import { assert, type BlockDevice, FssError, WorkerIoWord } from '@fss/core';
import { FuseChannel } from './channel';
import { onProcessExit } from './exit-hooks';
import { mountFuse, type UnmountResult, unmountFuse } from './mount';
import { FuseSession, type FuseSessionStats } from './session';

const MiB = 1024 * 1024;
const MNT_DETACH = 2;
const DEFAULT_INIT_TIMEOUT_MS = 10_000;

export interface ServeFuseOptions {
  /** An existing directory to mount on. */
  mountPoint: string;
  /** The file's name inside the mount (default `device`). */
  fileName?: string;
  /** Serve read-only (default: the device's own `readOnly`); the mount is then MS_RDONLY too. */
  readOnly?: boolean;
  /**
   * Reader threads (default 1, or READER_THREADS_WITH_IO when they serve the device's I/O
   * themselves; see the README for the measurements).
   */
  readerThreads?: number;
  /**
   * Let the reader threads serve READ and WRITE themselves when the device offers its
   * descriptor (BlockDevice.workerIo; default true). False: every READ and WRITE goes through
   * the device's `read` and `write` on the main thread.
   */
  workerIo?: boolean;
  /** Requests in flight at most: reader slots of `maxWriteBytes` each (default 64). */
  slotCount?: number;
  /** Largest READ/WRITE the kernel may send: 4 KiB to 1 MiB, whole pages (default 1 MiB). */
  maxWriteBytes?: number;
  /** FOPEN_* flags for every OPEN (default DEFAULT_OPEN_FLAGS: DIRECT_IO | PARALLEL_DIRECT_WRITES). */
  openFlags?: number;
  /** INIT max_background (default 128). */
  maxBackground?: number;
  /** How long to wait for the kernel's INIT (default 10 s). */
  initTimeoutMs?: number;
  /** Messages about failures that have no caller to go to. */
  log?: (message: string) => void;
}

/**
 * The session's statistics, plus the requests the reader threads answered themselves: the
 * fixed replies (`readerAnswers`) and the READs and WRITEs they served on the device's
 * descriptor (`workerReads`, `workerWrites`; not in the session's byte counts).
 */
export type FuseFileStats = FuseSessionStats & {
  readerAnswers: number;
  workerReads: number;
  workerWrites: number;
};

/**
 * Readers when they serve I/O themselves: each holds one request while its pread/pwrite
 * blocks, so this many device requests can be in flight without the main thread.
 */
export const READER_THREADS_WITH_IO = 4;
const PAGE_BYTES = 4096;

export interface FuseFile {
  /** The file: `<mountPoint>/<fileName>`. */
  readonly path: string;
  readonly mountPoint: string;
  readonly readOnly: boolean;
  readonly stats: Readonly<FuseFileStats>;
  /** Settles when the kernel ended the connection (unmounted, by us or anyone). */
  readonly ended: Promise<void>;
  /** Unmounts and stops serving; idempotent. Resolves with how the unmount went. */
  close(): Promise<UnmountResult>;
}

/** Serves `device` as a file on a new FUSE mount at `options.mountPoint`. */
export async function serveFuse(device: BlockDevice, options: ServeFuseOptions): Promise<FuseFile> {
  const fileName = options.fileName ?? 'device';
  const readOnly = options.readOnly ?? device.readOnly;
  const maxWriteBytes = options.maxWriteBytes ?? MiB;
  assert(
    maxWriteBytes >= 4096 && maxWriteBytes <= MiB && maxWriteBytes % 4096 === 0,
    'max write 4 KiB..1 MiB',
  );
  if (device.readOnly && options.readOnly === false) {
    throw new FssError('EROFS', 'the device is read-only', { path: options.mountPoint });
  }
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  const fd = await mountFuse(options.mountPoint, { readOnly, maxReadBytes: maxWriteBytes, uid, gid });
  const session = new FuseSession({
    device,
    fileName,
    readOnly,
    maxWriteBytes,
    uid,
    gid,
    openFlags: options.openFlags,
    maxBackground: options.maxBackground,
    log: options.log,
  });
  let endConnection!: () => void;
  const ended = new Promise<void>((resolve) => {
    endConnection = resolve;
  });
  const deviceIo = options.workerIo === false ? undefined : device.workerIo?.();
  const io =
    deviceIo === undefined || deviceIo.memoryAlignment > PAGE_BYTES
      ? undefined
      : {
          fd: deviceIo.fd,
          offsetAlignment: deviceIo.offsetAlignment,
          size: Math.min(deviceIo.size, device.size),
          words: deviceIo.words,
          writable: !readOnly,
        };
  let channel: FuseChannel;
  try {
    channel = new FuseChannel({
      fuseFd: fd,
      readerCount: options.readerThreads ?? (io === undefined ? 1 : READER_THREADS_WITH_IO),
      io,
      slotCount: options.slotCount ?? 64,
      maxWriteBytes,
      readerReplies: session.readerReplies(),
      onRequest: (request) => session.handle(request),
      onEnd: (reason) => {
        if (reason !== undefined) options.log?.(`fuse: ${reason.message}`);
        endConnection();
      },
    });
  } catch (error) {
    closeSync(fd);
    await unmountFuse(options.mountPoint).catch(() => undefined);
    throw error;
  }
  const served = new ServedFile(
    options.mountPoint,
    join(options.mountPoint, fileName),
    readOnly,
    fd,
    session,
    channel,
    ended,
    deviceIo?.words,
  );
  try {
    await withTimeout(
      session.whenInitialized(),
      options.initTimeoutMs ?? DEFAULT_INIT_TIMEOUT_MS,
      options.mountPoint,
    );
  } catch (error) {
    await served.close().catch(() => undefined);
    throw error;
  }
  return served;
}

class ServedFile implements FuseFile {
  readonly path: string;
  readonly mountPoint: string;
  readonly readOnly: boolean;
  readonly ended: Promise<void>;
  private readonly fd: number;
  private readonly session: FuseSession;
  private readonly channel: FuseChannel;
  private closing: Promise<UnmountResult> | undefined;
  private fdOpen = true;
  private readonly removeExitHook: () => void;

  constructor(
    mountPoint: string,
    path: string,
    readOnly: boolean,
    fd: number,
    session: FuseSession,
    channel: FuseChannel,
    ended: Promise<void>,
    private readonly ioWords: Int32Array | undefined,
  ) {
    this.mountPoint = mountPoint;
    this.path = path;
    this.readOnly = readOnly;
    this.fd = fd;
    this.session = session;
    this.channel = channel;
    this.ended = ended;
    this.removeExitHook = onProcessExit(() => this.abortOnExit());
  }

  get stats(): Readonly<FuseFileStats> {
    const words = this.ioWords;
    return {
      ...this.session.stats,
      readerAnswers: this.channel.readerAnswers,
      workerReads: words === undefined ? 0 : Atomics.load(words, WorkerIoWord.READS),
      workerWrites: words === undefined ? 0 : Atomics.load(words, WorkerIoWord.WRITES),
    };
  }

  close(): Promise<UnmountResult> {
    this.closing ??= (async () => {
      const unmounted = await unmountFuse(this.mountPoint);
      await this.session.whenIdle();
      await this.channel.stop();
      this.closeFd();
      this.removeExitHook();
      return unmounted;
    })();
    return this.closing;
  }

  private closeFd(): void {
    if (!this.fdOpen) return;
    this.fdOpen = false;
    closeSync(this.fd);
  }

  /** The exit hook: abort the connection (close every /dev/fuse fd), then unmount lazily. */
  private abortOnExit(): void {
    this.channel.abortNow();
    this.closeFd();
    libc().umount2(this.mountPoint, MNT_DETACH);
  }
}

async function withTimeout(promise: Promise<void>, timeoutMs: number, mountPoint: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new FssError('ETIMEDOUT', `the kernel sent no FUSE INIT within ${timeoutMs} ms`, {
            path: mountPoint,
          }),
        ),
      timeoutMs,
    );
  });
  try {
    await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
