/**
 * fss as the user runs it: fssd in a private run directory inside the sandbox, the origin
 * claimed with `fss origin add` (the CLI, once per session), and units configured and
 * unconfigured per measurement through the control socket (see fss-bins.ts for why). Each
 * unit's backup is a named file in the sandbox, tracked for cache dropping and removed after
 * the unit is unconfigured, so a fresh unit always starts with an empty store.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Cleanup } from './cleanup';
import { MiB } from './config';
import { FssControl, originSocketPath, runFssCli, startFssd, unitSocketPath } from './fss-bins';
import type { Server } from './processes';
import type { Sandbox } from './sandbox';

export interface OursOrigin {
  readonly name: string;
  /** The device or file fssd claimed. */
  readonly path: string;
  readonly socketPath: string;
  /** Its kernel block device (`$FSS_DEVDIR/fss/NAME`), when added with `--attach`. */
  readonly devicePath?: string;
}

export interface Unit {
  readonly unit: number;
  readonly socketPath: string;
  readonly backupPath: string;
}

export class FssdSession {
  private constructor(
    readonly runDir: string,
    private readonly server: Server,
    private readonly control: FssControl,
    private readonly sandbox: Sandbox,
  ) {}

  get pid(): number {
    return this.server.pid;
  }

  static async start(
    cleanup: Cleanup,
    sandbox: Sandbox,
    options: {
      name: string;
      cpuProfileDir?: string | undefined;
      nodeFlags?: readonly string[];
      env?: NodeJS.ProcessEnv;
      stdoutPath?: string;
      /** A built fssd program to run instead of the sources (fss-bins.ts freshBuiltFssd). */
      builtPath?: string | undefined;
      /** Another checkout whose fssd sources to run (ab.ts trees). */
      sourceTree?: string | undefined;
      /** More fssd arguments, e.g. `--devices auto --devdir DIR` (the attached group). */
      fssdArgs?: readonly string[] | undefined;
    },
  ): Promise<FssdSession> {
    const runDir = sandbox.path(`${options.name}-run`);
    const server = await startFssd(cleanup, {
      runDir,
      cpuProfileDir: options.cpuProfileDir,
      nodeFlags: options.nodeFlags ?? [],
      env: options.env ?? process.env,
      stdoutPath: options.stdoutPath,
      builtPath: options.builtPath,
      sourceTree: options.sourceTree,
      fssdArgs: options.fssdArgs,
    });
    const control = await FssControl.connect(runDir);
    cleanup.defer(`close fssd control connection ${runDir}`, () => control.close());
    return new FssdSession(runDir, server, control, sandbox);
  }

  /**
   * `fss origin add PATH --name NAME`, the user's command; with `attach`, `--attach` too (the
   * daemon must make devices: fssdArgs), and the origin's devicePath is the link fssd made.
   */
  async addOrigin(path: string, name: string, options: { attach?: boolean } = {}): Promise<OursOrigin> {
    const attach = options.attach === true;
    await runFssCli(
      'fss',
      ['origin', 'add', path, '--name', name, ...(attach ? ['--attach'] : [])],
      this.runDir,
    );
    const origin = { name, path, socketPath: originSocketPath(this.runDir, name) };
    if (!attach) return origin;
    const listed = (await this.control.request('origin-ls')) as { name: string; device?: string }[];
    const devicePath = listed.find((entry) => entry.name === name)?.device;
    if (devicePath === undefined)
      throw new Error(`fss origin add --attach: fssd lists no device for ${name}`);
    return { ...origin, devicePath };
  }

  /** The same through the control socket (no CLI start-up), for the scale scenario. */
  async addOriginDirect(path: string, name: string): Promise<OursOrigin> {
    await this.control.request('origin-add', { path, name });
    return { name, path, socketPath: originSocketPath(this.runDir, name) };
  }

  /** Configures fss`unit` on `origin` with a fresh backup file; `clusterBytes` 0 = default. */
  async configure(unit: number, origin: OursOrigin, clusterBytes = 0): Promise<Unit> {
    const backupPath = this.sandbox.path(`fss${unit}.backup`);
    this.sandbox.forget(backupPath);
    await this.control.configure(unit, origin.path, backupPath, clusterBytes);
    this.sandbox.track(backupPath);
    return { unit, socketPath: unitSocketPath(this.runDir, unit), backupPath };
  }

  async unconfigure(unit: Unit): Promise<void> {
    await this.control.unconfigure(unit.unit);
    this.sandbox.forget(unit.backupPath);
  }

  /** FSSIOCGET: the unit's cluster size and store use. */
  async info(unit: number): Promise<{ fsg_csize: number; fsg_mount_size: number; fsg_bs_size: number }> {
    return (await this.control.request('FSSIOCGET', { unit: `fss${unit}`, mode: 'ro' })) as {
      fsg_csize: number;
      fsg_mount_size: number;
      fsg_bs_size: number;
    };
  }

  /** Sends one raw request (timed by the scale scenario). */
  request(op: string, fields: Record<string, unknown>): Promise<unknown> {
    return this.control.request(op, fields);
  }

  /** VmRSS and VmHWM of the daemon, in MiB, from /proc/PID/status. */
  memoryMiB(): ProcessMemory {
    return readProcessMemoryMiB(this.pid);
  }

  async stop(): Promise<void> {
    this.control.close();
    await this.server.stop();
  }
}

export interface ProcessMemory {
  /** VmRSS: resident now. */
  rssMiB: number;
  /** VmHWM: the most ever resident. */
  peakMiB: number;
  /** RssAnon: heap, stacks, malloc arenas (where a daemon's growth shows). */
  anonMiB: number;
  /** RssFile: mapped files (node, libraries). */
  fileMiB: number;
}

export function readProcessMemoryMiB(pid: number): ProcessMemory {
  const status = readFileSync(join('/proc', String(pid), 'status'), 'utf8');
  const kib = (field: string): number => {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status);
    if (match === null) throw new Error(`/proc/${pid}/status has no ${field}`);
    return (Number(match[1]) * 1024) / MiB;
  };
  return { rssMiB: kib('VmRSS'), peakMiB: kib('VmHWM'), anonMiB: kib('RssAnon'), fileMiB: kib('RssFile') };
}
