/**
 * Daemon sandboxes for the fssd and CLI tests: a temporary directory (short, so socket paths
 * fit) with its own run directory, and the real programs run from sources through tsx, so the
 * tests need no build. Clients in the sandbox find the daemon through FSS_FSSD (the fssd
 * source), as an installed fssconfig finds an installed fssd. Every daemon a sandbox started
 * is stopped in cleanup(), in every outcome: by SIGTERM, then SIGKILL if it does not go
 * within a few seconds.
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const REPO_DIR = fileURLToPath(new URL('../../..', import.meta.url));
const require = createRequire(import.meta.url);
const TSX_LOADER = pathToFileURL(
  join(dirname(require.resolve('tsx/package.json')), 'dist', 'loader.mjs'),
).href;

export type Bin = 'fssconfig' | 'fssd' | 'fss' | 'fssck';

/** The source of each program, in the package that owns it. */
export function binSource(bin: Bin): string {
  const owner = bin === 'fssd' ? 'fssd' : 'cli-fssconfig';
  return join(REPO_DIR, 'packages', owner, 'src', 'bin', `${bin}.ts`);
}

/** Node arguments that run a program from its TypeScript source. */
export function binArgs(bin: Bin): string[] {
  return ['--conditions=@fss/source', '--import', TSX_LOADER, binSource(bin)];
}

export interface RunResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function waitFor(check: () => boolean, timeoutMs = 10_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (check()) return true;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return check();
}

export class Sandbox {
  readonly pids = new Set<number>();

  private constructor(readonly dir: string) {}

  static async create(): Promise<Sandbox> {
    return new Sandbox(await mkdtemp('/tmp/fss-t-'));
  }

  get runDir(): string {
    return join(this.dir, 'run');
  }

  /** Where the sandbox's daemon links its kernel devices (/dev/fssN elsewhere). */
  get devDir(): string {
    return join(this.dir, 'dev');
  }

  /** The sandbox daemon's state directory (persistent unit records; /var/lib/fss as root elsewhere). */
  get stateDir(): string {
    return join(this.dir, 'state');
  }

  get env(): NodeJS.ProcessEnv {
    return {
      ...process.env,
      FSS_RUNDIR: this.runDir,
      // Records of persistent units stay in the sandbox: never /var/lib/fss, never shared.
      FSS_STATEDIR: this.stateDir,
      // Each sandbox's /dev/fssN links apart from every other's (tests run in parallel).
      FSS_DEVDIR: this.devDir,
      FSS_FSSD: binSource('fssd'),
      TZ: 'UTC',
    };
  }

  path(name: string): string {
    return join(this.dir, name);
  }

  /** Runs a binary with the sandbox's run directory, in the sandbox directory. */
  run(bin: Bin, args: readonly string[], options: { env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [...binArgs(bin), ...args], {
        cwd: this.dir,
        env: options.env ?? this.env,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (text: string) => {
        stdout += text;
      });
      child.stderr.setEncoding('utf8').on('data', (text: string) => {
        stderr += text;
      });
      child.on('error', reject);
      child.on('close', (status, signal) => {
        this.notePid();
        resolve({ status, signal, stdout, stderr });
      });
    });
  }

  /** The running daemon's pid, from its pid file. */
  daemonPid(): number | undefined {
    const file = join(this.runDir, 'fssd.pid');
    if (!existsSync(file)) return undefined;
    const pid = Number(readFileSync(file, 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 0) return undefined;
    this.pids.add(pid);
    return pid;
  }

  notePid(): void {
    this.daemonPid();
  }

  /** SIGTERM to the daemon; resolves once it exited. */
  async stopDaemon(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    this.notePid();
    for (const pid of this.pids) {
      if (!isAlive(pid)) continue;
      process.kill(pid, signal);
      if (!(await waitFor(() => !isAlive(pid), 8000))) process.kill(pid, 'SIGKILL');
      await waitFor(() => !isAlive(pid), 2000);
    }
    this.pids.clear();
  }

  /**
   * Daemons started for this sandbox that never wrote a pid file (killed mid-start): found by
   * the unique run directory on their command line, each ended by its pid.
   */
  strayDaemons(): number[] {
    const found: number[] = [];
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
        const at = argv.indexOf('--rundir');
        if (at >= 0 && argv[at + 1] === this.runDir) found.push(Number(entry));
      } catch {
        // Gone already.
      }
    }
    return found;
  }

  async cleanup(): Promise<void> {
    await this.stopDaemon().catch(() => undefined);
    for (const pid of this.strayDaemons()) {
      process.kill(pid, 'SIGKILL');
      await waitFor(() => !isAlive(pid), 2000);
    }
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** Replaces the sandbox directory and the time of day with stable placeholders. */
export function normalize(text: string, sandbox: Sandbox): string {
  return text
    .replaceAll(sandbox.dir, '$DIR')
    .replace(/taken \d{4}-\d\d-\d\d \d\d:\d\d:\d\d/g, 'taken <time>')
    .replace(/pid \d+/g, 'pid <pid>');
}
