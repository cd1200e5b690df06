/**
 * The fssd command line:
 *
 *   fssd [--rundir DIR] [--units N] [--devices auto|off] [--devdir DIR] [--statedir DIR]
 *        [--durability process|power|none] [--bypass-check-ms MS] [--foreground]
 *
 * fssd always runs in the foreground (the clients detach it themselves when they start it
 * on demand); `--foreground` makes its stderr journald's kind of log (log.ts). Under
 * systemd's Type=notify it sends READY=1 to $NOTIFY_SOCKET once it serves, STOPPING=1 when
 * it stops (blockdev-linux's sdNotify). `--help` prints the manual (manual.ts). DIR defaults to $FSS_RUNDIR, then SPEC §4's
 * defaults; N to $FSS_UNITS, then 16. `--devices` (default $FSS_DEVICES, else auto): kernel
 * block devices for units and attached origins where possible (root, /dev/fuse, loop);
 * `--devdir` (default $FSS_DEVDIR, else /dev): where their links go. `--statedir` (default
 * state-dir.ts's defaultStateDir: $FSS_STATEDIR, /var/lib/fss as root, else the XDG state
 * home): where persistent units are recorded. `--durability` (default $FSS_DURABILITY, else
 * process): what a persistent unit survives, `process` (fssd's death), `power` (power loss
 * too: the store is fdatasynced in every commit), `none` (no unit is persistent, NetBSD).
 * `--bypass-check-ms` (default $FSS_BYPASS_CHECK_MS, else 1000; 0: never): how often origins
 * with valid snapshots are checked for writes outside fss (bypass-watch.ts). Exit status: 0 after SIGTERM/SIGINT released
 * everything, 1 when it cannot start, 2 on bad usage, 3 when another fssd already serves
 * the run directory.
 */

import { sdNotify } from '@fss/blockdev-linux';
import { defaultRunDir, EXIT_ALREADY_RUNNING, UNIT_COUNT_DEFAULT, UNIT_COUNT_MAX } from '@fss/control';
import { FssError, isFssError } from '@fss/core';
import type { Durability } from '@fss/engine';
import { helpText, usageText } from '@fss/manual';
import { BYPASS_CHECK_MS } from './bypass-watch';
import { Fssd } from './fssd';
import { foregroundStyle } from './log';
import { FSSD_MANUAL } from './manual';
import { defaultStateDir } from './state-dir';

/** The usage line bad usage prints, from the manual (manual.ts). */
export const FSSD_USAGE = usageText(FSSD_MANUAL);
const USAGE = FSSD_USAGE;

export interface FssdArgs {
  runDir: string;
  unitCount: number;
  devices: 'auto' | 'off';
  devDir: string;
  stateDir: string;
  durability: Durability;
  bypassCheckMs: number;
  /** $FSS_ROLLBACK_RATE: a rollback writes at most this many bytes a second; 0: no limit. */
  rollbackBytesPerSecond: number;
  /** --foreground: log for a service manager (log.ts's foregroundStyle). */
  foreground: boolean;
}

export function parseFssdArgs(argv: readonly string[], env: NodeJS.ProcessEnv): FssdArgs | string {
  let runDir = defaultRunDir(env);
  let units = env['FSS_UNITS'] ?? String(UNIT_COUNT_DEFAULT);
  let devices = env['FSS_DEVICES'] || 'auto';
  let devDir = env['FSS_DEVDIR'] || '/dev';
  let stateDir = defaultStateDir(env);
  let durability = env['FSS_DURABILITY'] || 'process';
  let bypassCheckMs = env['FSS_BYPASS_CHECK_MS'] || String(BYPASS_CHECK_MS);
  let foreground = false;
  for (let index = 0; index < argv.length; index += 1) {
    const arg = argv[index] as string;
    const [flag, inline] = arg.includes('=')
      ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)]
      : [arg];
    const value = (): string | undefined => inline ?? argv[++index];
    if (flag === '--rundir') {
      const dir = value();
      if (dir === undefined || dir === '') return USAGE;
      runDir = defaultRunDir({ FSS_RUNDIR: dir });
    } else if (flag === '--units') {
      const text = value();
      if (text === undefined) return USAGE;
      units = text;
    } else if (flag === '--devices') {
      const text = value();
      if (text === undefined) return USAGE;
      devices = text;
    } else if (flag === '--devdir') {
      const dir = value();
      if (dir === undefined || !dir.startsWith('/')) return USAGE;
      devDir = dir;
    } else if (flag === '--statedir') {
      const dir = value();
      if (dir === undefined || !dir.startsWith('/')) return USAGE;
      stateDir = dir;
    } else if (flag === '--durability') {
      const text = value();
      if (text === undefined) return USAGE;
      durability = text;
    } else if (flag === '--bypass-check-ms') {
      const text = value();
      if (text === undefined) return USAGE;
      bypassCheckMs = text;
    } else if ((flag === '-f' || flag === '--foreground') && inline === undefined) {
      // fssd never forks; this only changes how stderr lines look (for journald).
      foreground = true;
    } else {
      return USAGE;
    }
  }
  if (!/^[1-9][0-9]*$/.test(units) || Number(units) > UNIT_COUNT_MAX) {
    return `fssd: units: ${units}: not a number in 1..${UNIT_COUNT_MAX}`;
  }
  if (devices !== 'auto' && devices !== 'off') return `fssd: devices: ${devices}: not auto or off`;
  if (!devDir.startsWith('/')) return `fssd: devdir: ${devDir}: not an absolute path`;
  if (!stateDir.startsWith('/')) return `fssd: statedir: ${stateDir}: not an absolute path`;
  if (durability !== 'process' && durability !== 'power' && durability !== 'none') {
    return `fssd: durability: ${durability}: not process, power or none`;
  }
  if (!/^(0|[1-9][0-9]{0,6})$/.test(bypassCheckMs)) {
    return `fssd: bypass-check-ms: ${bypassCheckMs}: not a number of milliseconds (0: never)`;
  }
  const rollbackRate = env['FSS_ROLLBACK_RATE'] || '0';
  if (!/^(0|[1-9][0-9]{0,14})$/.test(rollbackRate)) {
    return `fssd: FSS_ROLLBACK_RATE: ${rollbackRate}: not a number of bytes a second (0: no limit)`;
  }
  return {
    rollbackBytesPerSecond: Number(rollbackRate),
    runDir,
    unitCount: Number(units),
    devices,
    devDir,
    stateDir,
    durability,
    bypassCheckMs: Number(bypassCheckMs),
    foreground,
  };
}

export async function runFssd(argv: readonly string[]): Promise<void> {
  if (argv.includes('--help')) {
    process.stdout.write(`${helpText(FSSD_MANUAL)}\n`);
    process.exit(0);
  }
  const args = parseFssdArgs(argv, process.env);
  if (typeof args === 'string') {
    process.stderr.write(`${args}\n`);
    process.exit(2);
  }
  const daemon: Fssd = new Fssd({
    runDir: args.runDir,
    devices: args.devices,
    devDir: args.devDir,
    stateDir: args.stateDir,
    durability: args.durability,
    bypassCheckMs: args.bypassCheckMs,
    rollbackBytesPerSecond: args.rollbackBytesPerSecond,
    unitCount: args.unitCount,
    stderrStyle: args.foreground ? foregroundStyle(process.env) : 'stamped',
    onUnreachable: () => stop('run directory removed'),
  });
  // Through the daemon's log, so these reach fssd.log (stderr is gone when a client started us).
  const log = (line: string): void => daemon.logLine(line);
  process.on('uncaughtException', (error) =>
    log(`uncaught exception (kept running): ${error.stack ?? error}`),
  );
  process.on('unhandledRejection', (error) => log(`unhandled rejection (kept running): ${String(error)}`));
  // Before start: a SIGTERM that arrives while starting must still release what start made.
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => undefined);
  try {
    await daemon.start();
  } catch (error) {
    if (isFssError(error, 'EADDRINUSE') && error.syscall === 'lock') {
      process.stderr.write(`fssd: ${error.description}\n`);
      process.exit(EXIT_ALREADY_RUNNING);
    }
    const text = error instanceof FssError ? error.message : String(error);
    process.stderr.write(`fssd: cannot start: ${text}\n`);
    process.exit(1);
  }
  // systemd's Type=notify: ready once the control socket answers (start resolved).
  notify(`READY=1\nMAINPID=${process.pid}\nSTATUS=serving ${daemon.paths.dir}`);
  function notify(state: string): void {
    try {
      if (sdNotify(state)) log(`told the service manager: ${state.split('\n')[0]}`);
    } catch (error) {
      log(`cannot notify the service manager (NOTIFY_SOCKET): ${String(error)}`);
    }
  }
  function stop(signal: string): void {
    log(`${signal} received`);
    notify('STOPPING=1');
    daemon.stop().then(
      () => process.exit(0),
      (error: unknown) => {
        log(`stopping failed: ${String(error)}`);
        process.exit(1);
      },
    );
  }
  // Keep the process alive: the control server is ref'd, but be explicit about it.
  setInterval(() => undefined, 1 << 30);
}
