/**
 * Starting fssd on demand, as the clients do when nothing answers on the control socket.
 *
 * The daemon is spawned detached (its own session, so a terminal's ^C does not reach it),
 * with stdin and stdout closed and stderr piped to us only until it is ready: whatever it
 * says before that is the reason it could not start, and is what we report. Ready means the
 * control socket accepts a connection. Several clients may start daemons at once: the run
 * directory lock lets one win, the others exit with EXIT_ALREADY_RUNNING, and their clients
 * simply keep waiting for the winner's socket.
 *
 * Which program to run: next to this module, `fssd.js` in a build (the bins are siblings of
 * the library in dist/), or `../bin/fssd.ts` when running from sources, with the same Node
 * flags (`--import tsx`, conditions) this process was started with.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FssError } from '@fss/core';

/** fssd's exit status when another daemon already serves the run directory. */
export const EXIT_ALREADY_RUNNING = 3;

export interface DaemonCommand {
  command: string;
  args: string[];
}

export function defaultDaemonCommand(): DaemonCommand {
  const here = fileURLToPath(import.meta.url);
  const source = join(dirname(here), '..', 'bin', 'fssd.ts');
  if (here.endsWith('.ts') && existsSync(source)) {
    return { command: process.execPath, args: [...process.execArgv, source] };
  }
  return { command: process.execPath, args: [join(dirname(here), 'fssd.js')] };
}

export interface StartOptions {
  runDir: string;
  command?: DaemonCommand;
  /** How long to wait for the control socket (default 30 s). */
  timeoutMs?: number;
  /** Resolves true once the daemon answers. */
  probe: () => Promise<boolean>;
}

/** Starts fssd for `runDir` and waits until `probe` succeeds; throws a clear error otherwise. */
export async function startDaemon(options: StartOptions): Promise<void> {
  const { command, args } = options.command ?? defaultDaemonCommand();
  const child = spawn(command, [...args, '--rundir', options.runDir], {
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, FSS_RUNDIR: options.runDir },
  });
  let stderr = '';
  let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  let spawnError: Error | undefined;
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (text: string) => {
    if (stderr.length < 8192) stderr += text;
  });
  child.on('error', (error) => {
    spawnError = error;
  });
  child.on('exit', (code, signal) => {
    exit = { code, signal };
  });
  const deadline = Date.now() + (options.timeoutMs ?? 30_000);
  try {
    for (;;) {
      if (await options.probe()) return;
      if (spawnError !== undefined) {
        throw new FssError('ENOENT', `cannot start fssd (${command}): ${spawnError.message}`, {
          syscall: 'spawn',
        });
      }
      if (exit !== undefined && exit.code !== EXIT_ALREADY_RUNNING) {
        const why = stderr.trim().split('\n').pop() ?? '';
        throw new FssError(
          'ECONNREFUSED',
          `fssd exited (${exit.signal ?? `status ${exit.code}`}) before it was ready${why ? `: ${why}` : ''}`,
          { syscall: 'start', path: options.runDir },
        );
      }
      if (Date.now() > deadline) {
        throw new FssError('ETIMEDOUT', 'fssd did not become ready in time', {
          syscall: 'start',
          path: options.runDir,
        });
      }
      await new Promise((resolve) => setTimeout(resolve, 40));
    }
  } finally {
    child.stderr?.destroy();
    child.unref();
  }
}
