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
 * Which program to run (the first that applies): the caller's `daemonCommand`; `$FSS_FSSD`,
 * the path of an fssd program (a `.ts` source runs with this process's Node flags, so tests
 * and development work from sources; `.js`/`.mjs`/`.cjs` runs with this Node; anything else
 * is executed); an `fssd` beside the running program (npm puts bins of one prefix together);
 * `fssd` on PATH. @fss/control does not depend on @fss/fssd (a client installs no daemon and
 * no native code), so when none is found the error says to install it.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { FssError } from '@fss/core';

/** fssd's exit status when another daemon already serves the run directory. */
export const EXIT_ALREADY_RUNNING = 3;

export interface DaemonCommand {
  command: string;
  args: string[];
}

/** How to run the fssd program at `path`. */
export function daemonCommandFor(path: string): DaemonCommand {
  if (path.endsWith('.ts')) return { command: process.execPath, args: [...process.execArgv, path] };
  if (/\.[cm]?js$/.test(path)) return { command: process.execPath, args: [path] };
  return { command: path, args: [] };
}

/** The fssd to start on demand (see the file comment), or ENOENT saying how to get one. */
export function defaultDaemonCommand(env: NodeJS.ProcessEnv = process.env): DaemonCommand {
  const configured = env['FSS_FSSD'];
  if (configured !== undefined && configured !== '') return daemonCommandFor(configured);
  const beside = process.argv[1] === undefined ? [] : [dirname(process.argv[1])];
  const onPath = (env['PATH'] ?? '').split(delimiter).filter((dir) => dir !== '');
  for (const dir of [...beside, ...onPath]) {
    const candidate = join(dir, 'fssd');
    if (isExecutable(candidate)) return daemonCommandFor(candidate);
  }
  throw new FssError(
    'ENOENT',
    'cannot find the fssd program: install @fss/fssd (npm i -g @fss/fssd), put fssd on PATH, or set FSS_FSSD',
    { syscall: 'spawn' },
  );
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
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
