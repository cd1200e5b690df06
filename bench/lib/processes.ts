/**
 * Child processes: one-shot commands whose output we parse (fio, nbdcopy, losetup), and
 * long-running servers (nbdkit, qemu-nbd, fssd) that we start, wait for, and stop. A server is
 * registered with the Cleanup the moment it is spawned and is stopped by its pid: SIGTERM, then
 * SIGKILL if it has not exited within a few seconds.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { createConnection } from 'node:net';
import type { Cleanup } from './cleanup';

export interface CommandOutput {
  stdout: string;
  stderr: string;
}

/** Runs `command` to completion; rejects with its stderr when it fails. */
export function runCommand(
  command: string,
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<CommandOutput> {
  return new Promise((resolve, reject) => {
    execFile(
      command,
      args,
      { env: options.env ?? process.env, maxBuffer: 64 * 1024 * 1024, timeout: options.timeoutMs ?? 600_000 },
      (error, stdout, stderr) => {
        if (error !== null) {
          reject(new Error(`${command} ${args.join(' ')}: ${error.message.trim()}\n${stderr.trim()}`));
          return;
        }
        resolve({ stdout, stderr });
      },
    );
  });
}

/** Wall-clock milliseconds `command` takes, start-up included. */
export async function timeCommandMs(command: string, args: readonly string[]): Promise<number> {
  const startMs = performance.now();
  await runCommand(command, args);
  return performance.now() - startMs;
}

export interface Server {
  readonly name: string;
  readonly pid: number;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
  stop(): Promise<void>;
}

/** True once something accepts a connection on the unix socket at `path`. */
function canConnect(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    if (!existsSync(path)) return resolve(false);
    const socket = createConnection(path);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

export function sleepMs(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

function waitForExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (exited(child)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(exited(child)), timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/**
 * Spawns a server and waits until its unix socket accepts connections. Its stderr is kept
 * (the last 4 KiB) so that a server that dies says why.
 */
export async function startServer(
  cleanup: Cleanup,
  options: {
    name: string;
    command: string;
    args: readonly string[];
    socketPath: string;
    env?: NodeJS.ProcessEnv;
    graceMs?: number;
    /** Where the server's stdout goes (default: nowhere), e.g. Node's --trace-gc lines. */
    stdoutPath?: string;
  },
): Promise<Server> {
  const stdoutFd = options.stdoutPath === undefined ? undefined : openSync(options.stdoutPath, 'a');
  const child = spawn(options.command, options.args, {
    stdio: ['ignore', stdoutFd ?? 'ignore', 'pipe'],
    env: options.env ?? process.env,
  });
  if (stdoutFd !== undefined) closeSync(stdoutFd); // the child has its own copy
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (text: string) => {
    stderr = (stderr + text).slice(-4096);
  });
  const spawnFailure = new Promise<Error>((resolve) => child.once('error', resolve));
  const pid = child.pid;
  if (pid === undefined) throw new Error(`${options.name}: cannot start: ${String(await spawnFailure)}`);
  const stop = cleanup.defer(`stop ${options.name} (pid ${pid})`, async () => {
    if (exited(child)) return;
    process.kill(pid, 'SIGTERM');
    if (!(await waitForExit(child, options.graceMs ?? 10_000))) {
      process.kill(pid, 'SIGKILL');
      await waitForExit(child, 5000);
    }
  });
  const deadlineMs = performance.now() + 30_000;
  while (!(await canConnect(options.socketPath))) {
    if (exited(child)) {
      await stop();
      throw new Error(`${options.name} exited (${child.exitCode ?? child.signalCode}): ${stderr.trim()}`);
    }
    if (performance.now() > deadlineMs) {
      await stop();
      throw new Error(`${options.name}: no socket at ${options.socketPath} after 30 s: ${stderr.trim()}`);
    }
    await sleepMs(20);
  }
  return { name: options.name, pid, stop };
}
