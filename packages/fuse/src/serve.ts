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
import { assert, type BlockDevice, FssError } from '@fss/core';
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
  /** Reader threads (default 1; see the README for the measurements). */
  readerThreads?: number;
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

/** The session's statistics, plus the requests the reader threads answered themselves. */
export type FuseFileStats = FuseSessionStats & { readerAnswers: number };

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
  let channel: FuseChannel;
  try {
    channel = new FuseChannel({
      fuseFd: fd,
      readerCount: options.readerThreads ?? 1,
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
    return { ...this.session.stats, readerAnswers: this.channel.readerAnswers };
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
