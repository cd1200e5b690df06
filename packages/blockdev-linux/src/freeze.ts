/**
 * FIFREEZE / FITHAW, off the main thread, with a watchdog that always thaws.
 *
 * Why a worker. FIFREEZE first syncs the filesystem. If that filesystem's writes flow
 * through this process (an ext4 mounted on a device fss serves), a FIFREEZE issued on the
 * main thread blocks the very event loop that has to serve those writes: a deadlock. And
 * once frozen, any write to the filesystem blocks uninterruptibly (a `timeout 2` could not
 * end it in node-ecosystem.md §3.5), so if the thread that is supposed to thaw is the one
 * stuck, nothing ever thaws.
 *
 * So a worker thread owns both ioctls:
 *
 *   main                                 worker
 *   open(mount point, O_RDONLY) → fd
 *   start worker(fd, timeout) ─────────▶ ioctl(fd, FIFREEZE)      (may take long: sync)
 *                             ◀───────── "frozen"
 *   ... caller's work ...                Atomics.wait(state, timeout)   ← the watchdog
 *   thaw(): state = 1, notify ─────────▶ wakes (or times out)
 *                                        ioctl(fd, FITHAW)
 *                             ◀───────── "thawed" {by: caller | watchdog | abandoned}
 *   close(fd)
 *
 * The watchdog is `Atomics.wait` with a timeout inside the worker: it runs on the worker's
 * own thread, so it thaws even when the main thread is blocked, inside a syscall on the frozen
 * filesystem or anywhere else. If FIFREEZE itself takes longer than `freezeTimeoutMs`, the
 * caller gets ETIMEDOUT and the state is marked abandoned; the worker then thaws as soon as
 * the freeze returns. If the process exits while frozen, an `exit` hook thaws synchronously
 * (FITHAW never blocks). The one case nothing can cover is the process being killed by
 * SIGKILL while frozen; `fsfreeze -u MOUNTPOINT` is the manual way out.
 *
 * The freezing process must still never write the frozen filesystem itself (logs, the COW
 * store, sockets): the watchdog bounds such a stall, it does not make it harmless.
 */
import { open } from 'node:fs/promises';
import { Worker } from 'node:worker_threads';
import { FssError, toFssError } from '@fss/core';
import { errnoError } from './errors';
import { FIFREEZE, FITHAW } from './ioctl';
import { koffiEntryPath, libc } from './libc';

export interface FreezeOptions {
  /** The watchdog: thaw this many milliseconds after the freeze, whatever happens (default 30 000). */
  timeoutMs?: number;
  /** Give up waiting for FIFREEZE itself after this long (default 60 000); the worker thaws once it returns. */
  freezeTimeoutMs?: number;
}

export type ThawedBy = 'caller' | 'watchdog' | 'abandoned' | 'exit';

export interface ThawResult {
  by: ThawedBy;
  /** How long the filesystem stayed frozen. */
  frozenMs: number;
}

export interface FrozenFilesystem {
  readonly mountPoint: string;
  /** Asks the worker to thaw (idempotent); resolves once FITHAW returned. */
  thaw(): Promise<ThawResult>;
  /** Settles when the filesystem is thawed, whoever thawed it. */
  readonly thawed: Promise<ThawResult>;
}

const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_FREEZE_TIMEOUT_MS = 60_000;

/** State word shared with the worker. */
const RUNNING = 0;
const THAW_REQUESTED = 1;
const ABANDONED = 2;

// Plain CommonJS, evaluated in the worker: no file to locate next to the built output.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
(function main() {
  const koffi = require(workerData.koffiPath);
  const ioctl = koffi.load('libc.so.6').func('int ioctl(int fd, unsigned long req, int arg)');
  const state = new Int32Array(workerData.state);
  if (ioctl(workerData.fd, workerData.FIFREEZE, 0) < 0) {
    parentPort.postMessage({ type: 'error', errno: koffi.errno(), syscall: 'ioctl(FIFREEZE)' });
    return;
  }
  const frozenAt = Date.now();
  parentPort.postMessage({ type: 'frozen' });
  const waited = Atomics.wait(state, 0, ${RUNNING}, workerData.timeoutMs);
  const by = waited === 'timed-out' ? 'watchdog' : Atomics.load(state, 0) === ${ABANDONED} ? 'abandoned' : 'caller';
  const result = ioctl(workerData.fd, workerData.FITHAW, 0);
  const errno = result < 0 ? koffi.errno() : 0;
  parentPort.postMessage({ type: 'thawed', by, errno, frozenMs: Date.now() - frozenAt });
})();
`;

type WorkerMessage =
  | { type: 'error'; errno: number; syscall: string }
  | { type: 'frozen' }
  | { type: 'thawed'; by: ThawedBy; errno: number; frozenMs: number };

/**
 * Freezes the filesystem mounted at `mountPoint` (needs CAP_SYS_ADMIN). Resolves once it is
 * frozen; the caller must call `thaw()`, and the watchdog thaws after `timeoutMs` if not.
 */
export async function freezeFilesystem(
  mountPoint: string,
  options: FreezeOptions = {},
): Promise<FrozenFilesystem> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const freezeTimeoutMs = options.freezeTimeoutMs ?? DEFAULT_FREEZE_TIMEOUT_MS;
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(mountPoint, 'r');
  } catch (error) {
    throw toFssError(error, { syscall: 'open', path: mountPoint });
  }
  const fd = handle.fd;
  const state = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(WORKER_SOURCE, {
    eval: true,
    workerData: { koffiPath: koffiEntryPath(), fd, state: state.buffer, timeoutMs, FIFREEZE, FITHAW },
  });

  // Last resort if the process exits while frozen: FITHAW from this thread (it never blocks).
  let frozen = false;
  const thawOnExit = () => {
    if (!frozen) return;
    Atomics.store(state, 0, ABANDONED);
    libc().ioctlIntArg(fd, FITHAW, 0);
  };
  process.on('exit', thawOnExit);

  let resolveFrozen!: () => void;
  let rejectFrozen!: (error: unknown) => void;
  const frozenPromise = new Promise<void>((resolve, reject) => {
    resolveFrozen = resolve;
    rejectFrozen = reject;
  });
  const thawed = new Promise<ThawResult>((resolve, reject) => {
    const finish = () => {
      process.off('exit', thawOnExit);
      handle.close().catch(() => undefined);
    };
    worker.on('message', (message: WorkerMessage) => {
      if (message.type === 'frozen') {
        frozen = true;
        resolveFrozen();
      } else if (message.type === 'error') {
        finish();
        const error = errnoError(message.errno, message.syscall, mountPoint);
        rejectFrozen(error);
        reject(error);
      } else {
        frozen = false;
        finish();
        if (message.errno !== 0) reject(errnoError(message.errno, 'ioctl(FITHAW)', mountPoint));
        else resolve({ by: message.by, frozenMs: message.frozenMs });
      }
    });
    worker.on('error', (error) => {
      finish();
      rejectFrozen(error);
      reject(error);
    });
  });
  thawed.catch(() => undefined); // observed through thaw() or `thawed`; never unhandled

  const timer = setTimeout(() => {
    Atomics.store(state, 0, ABANDONED);
    Atomics.notify(state, 0);
    rejectFrozen(
      new FssError('ETIMEDOUT', `FIFREEZE did not finish within ${freezeTimeoutMs} ms; it will be thawed`, {
        syscall: 'ioctl(FIFREEZE)',
        path: mountPoint,
      }),
    );
  }, freezeTimeoutMs);
  try {
    await frozenPromise;
  } finally {
    clearTimeout(timer);
  }

  return {
    mountPoint,
    thawed,
    thaw() {
      Atomics.compareExchange(state, 0, RUNNING, THAW_REQUESTED);
      Atomics.notify(state, 0);
      return thawed;
    },
  };
}

/**
 * Runs `work` with the filesystem at `mountPoint` frozen and thaws it in every outcome.
 * `work` must not touch the frozen filesystem (see the file comment).
 */
export async function withFrozenFilesystem<T>(
  mountPoint: string,
  work: () => Promise<T>,
  options: FreezeOptions = {},
): Promise<T> {
  const frozen = await freezeFilesystem(mountPoint, options);
  try {
    return await work();
  } finally {
    await frozen.thaw();
  }
}
