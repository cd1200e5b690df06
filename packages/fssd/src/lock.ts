/**
 * One daemon per run directory. The lock is a listening socket in Linux's abstract
 * namespace, named after the run directory's real path: binding it is atomic, a second
 * daemon gets EADDRINUSE, and the kernel drops it the moment the holder dies (even by
 * SIGKILL), so there is never a stale lock to guess about. The pid file is only information.
 */
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:net';
import { FssError } from '@fss/core';

export interface RunDirLock {
  release(): Promise<void>;
}

export function lockName(realRunDir: string): string {
  const digest = createHash('sha256').update(realRunDir).digest('hex').slice(0, 32);
  return `\0fssd-${digest}`;
}

/** Takes the lock of `realRunDir`, or throws EADDRINUSE when another daemon holds it. */
export async function lockRunDir(realRunDir: string): Promise<RunDirLock> {
  const server: Server = createServer((socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => {
      reject(
        error.code === 'EADDRINUSE'
          ? new FssError('EADDRINUSE', `another fssd is running for ${realRunDir}`, { syscall: 'lock' })
          : error,
      );
    });
    server.listen({ path: lockName(realRunDir) }, () => resolve());
  });
  // The lock must not keep the event loop alive on its own.
  server.unref();
  return {
    release: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
