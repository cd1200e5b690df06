/**
 * Shared test helpers: an in-process server on a unix socket, running real client programs,
 * and a BlockDevice wrapper that counts and delays calls (temporary directories and byte
 * patterns come from @fss/test-utils).
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import type { BlockDevice } from '@fss/core';
import type { NbdExportOptions } from '../src/export';
import { NbdServer, type NbdServerOptions } from '../src/server';

export interface RunningServer {
  server: NbdServer;
  socketPath: string;
  /** The NBD URI of an export on this server (default: the default export). */
  uri: (name?: string) => string;
  close: () => Promise<void>;
}

/** Starts a server with `exports` on `dir/name.sock`. */
export async function startServer(
  dir: string,
  exports: NbdExportOptions[],
  options: Partial<NbdServerOptions> & { socketName?: string } = {},
): Promise<RunningServer> {
  const socketPath = join(dir, options.socketName ?? 'nbd.sock');
  const server = new NbdServer({ log: () => {}, ...options, exports });
  await server.listen({ path: socketPath });
  return {
    server,
    socketPath,
    uri: (name = '') => `nbd+unix:///${encodeURIComponent(name)}?socket=${socketPath}`,
    close: () => server.close(),
  };
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program to completion; never rejects on a non-zero exit. */
export function run(
  command: string,
  args: string[],
  options: { timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(
      command,
      args,
      { timeout: options.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : 1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/**
 * Wraps a device: counts calls, tracks the most requests running at once, and can delay
 * every call (to hold requests in flight while a test looks). Its capabilities are the inner
 * device's: `discard`, `writeZeroes` and `allocateBuffer` exist exactly when the inner
 * device has them, so the export advertises what it would without the wrapper.
 */
export class InstrumentedDevice implements BlockDevice {
  calls: Record<string, number> = {};
  running = 0;
  runningMax = 0;
  delayMs = 0;
  readonly discard?: (offset: number, length: number) => Promise<void>;
  readonly writeZeroes?: (offset: number, length: number) => Promise<void>;
  readonly allocateBuffer?: (length: number) => Uint8Array;

  constructor(private readonly inner: BlockDevice) {
    const { discard, writeZeroes, allocateBuffer } = inner;
    if (discard !== undefined) {
      this.discard = (offset, length) => this.track('discard', () => discard.call(inner, offset, length));
    }
    if (writeZeroes !== undefined) {
      this.writeZeroes = (offset, length) =>
        this.track('writeZeroes', () => writeZeroes.call(inner, offset, length));
    }
    if (allocateBuffer !== undefined) this.allocateBuffer = (length) => allocateBuffer.call(inner, length);
  }

  get size(): number {
    return this.inner.size;
  }
  get logicalSectorSize(): number {
    return this.inner.logicalSectorSize;
  }
  get readOnly(): boolean {
    return this.inner.readOnly;
  }
  get preferredIoSize(): number | undefined {
    return this.inner.preferredIoSize;
  }

  read(target: Uint8Array, offset: number): Promise<number> {
    return this.track('read', () => this.inner.read(target, offset));
  }
  write(source: Uint8Array, offset: number): Promise<void> {
    return this.track('write', () => this.inner.write(source, offset));
  }
  flush(): Promise<void> {
    return this.track('flush', () => this.inner.flush());
  }
  close(): Promise<void> {
    return this.inner.close();
  }

  private async track<T>(name: string, call: () => Promise<T>): Promise<T> {
    this.calls[name] = (this.calls[name] ?? 0) + 1;
    this.running++;
    this.runningMax = Math.max(this.runningMax, this.running);
    try {
      if (this.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.delayMs));
      return await call();
    } finally {
      this.running--;
    }
  }
}

/**
 * `inner` with only the methods every BlockDevice has: no discard, writeZeroes,
 * allocateBuffer or preferredIoSize, as a device that cannot do them looks.
 */
export function bareDevice(inner: BlockDevice): BlockDevice {
  return {
    size: inner.size,
    logicalSectorSize: inner.logicalSectorSize,
    readOnly: inner.readOnly,
    read: (target, offset) => inner.read(target, offset),
    write: (source, offset) => inner.write(source, offset),
    flush: () => inner.flush(),
    close: () => inner.close(),
  };
}
