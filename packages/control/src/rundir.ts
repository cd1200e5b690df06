/**
 * Where fssd lives: the run directory and the names inside it (SPEC §4).
 *
 *   $FSS_RUNDIR, else /run/fss as root, else $XDG_RUNTIME_DIR/fss, else /tmp/fss-$UID
 *     fssd.sock        the control socket (0600)
 *     fssd.pid         the daemon's pid
 *     fssd.log         the daemon's log
 *     fssN.sock        unit N's NBD export (read-only)
 *     origin/NAME.sock an origin's NBD export (read-write, copy-on-write)
 *
 * Unix socket paths are limited to 107 bytes by the kernel; a run directory too deep for
 * that is refused up front with ENAMETOOLONG instead of failing half-way.
 */
import { join, resolve } from 'node:path';
import { FssError } from '@fss/core';

export const SOCKET_PATH_BYTES_MAX = 107;

export function defaultRunDir(env: NodeJS.ProcessEnv = process.env, uid = process.getuid?.() ?? 0): string {
  const configured = env['FSS_RUNDIR'];
  if (configured !== undefined && configured !== '') return resolve(configured);
  if (uid === 0) return '/run/fss';
  const runtime = env['XDG_RUNTIME_DIR'];
  if (runtime !== undefined && runtime !== '') return join(resolve(runtime), 'fss');
  return `/tmp/fss-${uid}`;
}

export interface RunPaths {
  dir: string;
  control: string;
  pid: string;
  log: string;
  originDir: string;
  unit(unit: number): string;
  origin(name: string): string;
}

export function runPaths(dir: string): RunPaths {
  const originDir = join(dir, 'origin');
  return {
    dir,
    control: join(dir, 'fssd.sock'),
    pid: join(dir, 'fssd.pid'),
    log: join(dir, 'fssd.log'),
    originDir,
    unit: (unit) => join(dir, `fss${unit}.sock`),
    origin: (name) => join(originDir, `${name}.sock`),
  };
}

/**
 * Throws ENAMETOOLONG when `socketPath` does not fit in sun_path. The daemon checks its
 * control and unit sockets at start and each origin's socket when the origin is added.
 */
export function checkSocketPath(socketPath: string): void {
  if (Buffer.byteLength(socketPath) > SOCKET_PATH_BYTES_MAX) {
    throw new FssError('ENAMETOOLONG', `socket path longer than ${SOCKET_PATH_BYTES_MAX} bytes`, {
      syscall: 'bind',
      path: socketPath,
    });
  }
}
