/**
 * The one place that knows where fss's programs live and how to talk to the daemon, so that
 * moving the bins (fssd to packages/fssd, the CLIs staying in packages/cli-fssconfig) is a
 * change to this file only.
 *
 * The bins run from sources, as the package tests run them: `node --conditions=@fss/source
 * --import <tsx loader> <package>/src/bin/<bin>.ts` (BIN_CANDIDATES). fssd is started here, in
 * the foreground, as our child (not on demand by a client), so the bench knows its pid (for
 * VmRSS) and can stop it; `startFssd` is the only function that starts it, and it can add
 * Node flags such as `--cpu-prof`.
 *
 * The control socket speaks one JSON request per line and answers one line per request, in
 * order (the control protocol's protocol/messages.ts, in @fss/control). Units are configured with the
 * FSSIOCSET request fssconfig -c sends, straight on the socket: the CLI from sources spends
 * about a second starting Node per command, which would dominate a run that configures a fresh
 * unit every round. The scale scenario also times the whole `fssconfig -c` command.
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { createConnection, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { THREAD_POOL_SIZE_DEFAULT } from '../../packages/fssd/src/bin/thread-pool';
import type { Cleanup } from './cleanup';
import { type CommandOutput, runCommand, type Server, sleepMs, startServer } from './processes';

const REPO_DIR = fileURLToPath(new URL('../..', import.meta.url));
/**
 * Where each bin's source lives, newest layout first: fssd is moving from cli-fssconfig to its
 * own package. The first candidate that exists wins.
 */
const BIN_CANDIDATES: Readonly<Record<FssBin, readonly string[]>> = {
  fssd: ['packages/fssd/src/bin/fssd.ts', 'packages/cli-fssconfig/src/bin/fssd.ts'],
  fssconfig: ['packages/cli-fssconfig/src/bin/fssconfig.ts'],
  fss: ['packages/cli-fssconfig/src/bin/fss.ts'],
};
export type FssBin = 'fssd' | 'fssconfig' | 'fss';

const require = createRequire(import.meta.url);
const TSX_LOADER = pathToFileURL(
  join(dirname(require.resolve('tsx/package.json')), 'dist', 'loader.mjs'),
).href;

/**
 * The built daemon (`pnpm build`), what users run: the CommonJS program, which sizes libuv's
 * thread pool itself (packages/fssd/src/bin/thread-pool.ts).
 */
const BUILT_FSSD = ['packages/fssd/dist/fssd.cjs'];

/** Newest modification time (ms) of any file under packages/NAME/src. */
function newestSourceMs(): number {
  let newestMs = 0;
  const visit = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) visit(path);
      else newestMs = Math.max(newestMs, statSync(path).mtimeMs);
    }
  };
  const packagesDir = join(REPO_DIR, 'packages');
  for (const name of readdirSync(packagesDir)) {
    const src = join(packagesDir, name, 'src');
    if (existsSync(src)) visit(src);
  }
  return newestMs;
}

/**
 * The built fssd when it exists and is newer than every source file (so it runs the code
 * being measured), else undefined. The scale group measures memory with it when it can:
 * from sources the daemon also carries the tsx loader and its transform caches.
 */
export function freshBuiltFssd(): string | undefined {
  const path = BUILT_FSSD.map((each) => join(REPO_DIR, each)).find((each) => existsSync(each));
  if (path === undefined) return undefined;
  return statSync(path).mtimeMs > newestSourceMs() ? path : undefined;
}

/** The source file of `bin` in this checkout. */
export function fssBinPath(bin: FssBin): string {
  const candidates = BIN_CANDIDATES[bin].map((path) => join(REPO_DIR, path));
  const found = candidates.find((path) => existsSync(path));
  if (found === undefined) throw new Error(`cannot find ${bin}: none of ${candidates.join(', ')} exists`);
  return found;
}

/** Node arguments that run `bin` from sources. */
export function fssBinArgs(bin: FssBin): string[] {
  return ['--conditions=@fss/source', '--import', TSX_LOADER, fssBinPath(bin)];
}

/**
 * Node arguments that run fssd from the sources of another checkout at `treeDir` (for A/B
 * runs of two versions: ab.ts trees). The tree needs its own node_modules links, as
 * `git archive` plus copies of this checkout's package node_modules folders give it.
 */
export function fssdArgsInTree(treeDir: string): string[] {
  const path = join(treeDir, BIN_CANDIDATES.fssd[0]!);
  if (!existsSync(path)) throw new Error(`cannot find fssd in ${treeDir}: ${path} does not exist`);
  return ['--conditions=@fss/source', '--import', TSX_LOADER, path];
}

export function controlSocketPath(runDir: string): string {
  return join(runDir, 'fssd.sock');
}

export function unitSocketPath(runDir: string, unit: number): string {
  return join(runDir, `fss${unit}.sock`);
}

export function originSocketPath(runDir: string, originName: string): string {
  return join(runDir, 'origin', `${originName}.sock`);
}

export interface FssdOptions {
  runDir: string;
  /** Run this built fssd program (see freshBuiltFssd) instead of the sources. */
  builtPath?: string | undefined;
  /** Run fssd from the sources of this other checkout instead (fssdArgsInTree). */
  sourceTree?: string | undefined;
  /** Start with `--cpu-prof --cpu-prof-dir=DIR`: a .cpuprofile is written there when it stops. */
  cpuProfileDir?: string | undefined;
  /** Extra Node flags, e.g. `--max-semi-space-size=16`. */
  nodeFlags?: readonly string[];
  env?: NodeJS.ProcessEnv;
  /** A file for the daemon's stdout (it prints nothing there itself; Node's --trace-gc does). */
  stdoutPath?: string | undefined;
  /** More fssd arguments after `--rundir DIR`, e.g. `--devices auto --devdir DIR`. */
  fssdArgs?: readonly string[] | undefined;
}

/** Starts fssd for `runDir` and resolves once its control socket accepts connections. */
export function startFssd(cleanup: Cleanup, options: FssdOptions): Promise<Server> {
  const profiling =
    options.cpuProfileDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${options.cpuProfileDir}`];
  const program =
    options.builtPath !== undefined
      ? [options.builtPath]
      : options.sourceTree !== undefined
        ? fssdArgsInTree(options.sourceTree)
        : fssBinArgs('fssd');
  return startServer(cleanup, {
    name: 'fssd',
    command: process.execPath,
    args: [
      ...profiling,
      ...(options.nodeFlags ?? []),
      ...program,
      '--rundir',
      options.runDir,
      ...(options.fssdArgs ?? []),
    ],
    socketPath: controlSocketPath(options.runDir),
    // From sources fssd is an ES module, whose pool exists before it can size it: give it the
    // size its built program sets itself, unless the caller's environment chose one.
    env: {
      UV_THREADPOOL_SIZE: String(THREAD_POOL_SIZE_DEFAULT),
      ...(options.env ?? process.env),
      FSS_RUNDIR: options.runDir,
      // Persistent unit records beside the run dir, never in /var/lib/fss: a bench that dies
      // must not leave units for the next real fssd to bring back.
      FSS_STATEDIR: `${options.runDir}.state`,
    },
    graceMs: 20_000,
    ...(options.stdoutPath === undefined ? {} : { stdoutPath: options.stdoutPath }),
  });
}

/** Runs `fss` or `fssconfig` against the daemon of `runDir`. */
export function runFssCli(
  bin: 'fss' | 'fssconfig',
  args: readonly string[],
  runDir: string,
): Promise<CommandOutput> {
  return runCommand(process.execPath, [...fssBinArgs(bin), ...args], {
    env: { ...process.env, FSS_RUNDIR: runDir },
  });
}

export interface WireError {
  code: string;
  message: string;
  detail?: string;
}

/** A connection to fssd's control socket; requests are answered in order. */
export class FssControl {
  private buffered = '';
  private readonly waiting: {
    resolve: (value: unknown) => void;
    reject: (error: Error) => void;
    op: string;
  }[] = [];
  private nextId = 1;
  /** Set once the connection is gone: later requests fail at once instead of never settling. */
  private closedBecause: string | undefined;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => this.receive(text));
    socket.on('error', (error) => {
      this.closedBecause ??= error.message;
    });
    socket.on('close', () => {
      this.closedBecause ??= 'fssd closed';
      for (const pending of this.waiting.splice(0))
        pending.reject(new Error(`${pending.op}: ${this.closedBecause}`));
    });
  }

  static connect(runDir: string): Promise<FssControl> {
    return new Promise((resolve, reject) => {
      const socket = createConnection(controlSocketPath(runDir));
      socket.once('connect', () => resolve(new FssControl(socket)));
      socket.once('error', reject);
    });
  }

  /** Sends `{op, ...fields}`; resolves with `result`, rejects with the daemon's error. */
  request(op: string, fields: Record<string, unknown> = {}): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      if (this.closedBecause !== undefined) {
        reject(new Error(`${op}: ${this.closedBecause}`));
        return;
      }
      this.waiting.push({ resolve, reject, op });
      this.socket.write(`${JSON.stringify({ id, op, ...fields })}\n`);
    });
  }

  /** FSSIOCSET on `unit` (rw), as `fssconfig -c fssN mount bstore csize` sends it. */
  configure(unit: number, mount: string, bstore: string, clusterBytes = 0): Promise<unknown> {
    return this.request('FSSIOCSET', {
      unit: `fss${unit}`,
      mode: 'rw',
      arg: { fss_mount: mount, fss_bstore: bstore, fss_csize: clusterBytes, fss_flags: 0 },
    });
  }

  /** FSSIOCCLR on `unit` (rw), as `fssconfig -u fssN` sends it. */
  unconfigure(unit: number): Promise<unknown> {
    return this.request('FSSIOCCLR', { unit: `fss${unit}`, mode: 'rw' });
  }

  close(): void {
    this.closedBecause ??= 'connection closed';
    this.socket.end();
  }

  private receive(text: string): void {
    this.buffered += text;
    for (let newline = this.buffered.indexOf('\n'); newline >= 0; newline = this.buffered.indexOf('\n')) {
      const line = this.buffered.slice(0, newline);
      this.buffered = this.buffered.slice(newline + 1);
      const pending = this.waiting.shift();
      if (pending === undefined) continue;
      const answer = JSON.parse(line) as { ok: boolean; result?: unknown; error?: WireError };
      if (answer.ok) pending.resolve(answer.result);
      else {
        const error = answer.error;
        pending.reject(new Error(`${pending.op}: ${error?.code}: ${error?.detail ?? error?.message}`));
      }
    }
  }
}

/**
 * VmRSS (MiB) of an idle Node process started like the bins (`withLoader`: with the
 * conditions and the tsx loader; else bare `node`), two seconds after it started. The scale
 * scenario subtracts the difference from fssd's RSS: running from sources loads tsx into the
 * daemon, memory that a built fssd does not carry.
 */
export async function idleNodeRssMiB(
  cleanup: Cleanup,
  scriptPath: string,
  withLoader: boolean,
): Promise<number> {
  await writeFile(scriptPath, 'setInterval(() => undefined, 1000);\n');
  const args = withLoader ? ['--conditions=@fss/source', '--import', TSX_LOADER, scriptPath] : [scriptPath];
  const child = spawn(process.execPath, args, { stdio: 'ignore' });
  const pid = child.pid;
  if (pid === undefined) throw new Error('cannot start node');
  const stop = cleanup.defer(`stop idle node (pid ${pid})`, () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  try {
    await sleepMs(2000);
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const match = /^VmRSS:\s+(\d+) kB$/m.exec(status);
    if (match === null) throw new Error(`no VmRSS for pid ${pid}`);
    return Number(match[1]) / 1024;
  } finally {
    await stop();
  }
}
