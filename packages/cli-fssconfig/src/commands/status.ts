/**
 * `fss status`: what fssd holds, as text (the default), as the versioned JSON document
 * (`--json`, status/document.ts), or redrawn every interval (`--watch`).
 *
 *   fss status [--json] [--watch [--interval SECONDS] [--count N]]
 *
 * `--watch` asks fssd again every SECONDS (default 2, like watch(1)) until interrupted
 * (SIGINT, SIGTERM: exit 0) or N frames were shown. On a terminal each text frame replaces
 * the last (cursor home, clear screen); elsewhere frames follow each other, separated by an
 * empty line. With `--json` every frame is one document on one line (JSON Lines), so a
 * pipe reads a stream of complete documents. A daemon that goes away ends it with exit 1.
 */
import type { DaemonStatus, FssClient } from '@fss/control';
import { humanizeNumber } from '../cli/humanize';
import { formatClusterUse, formatLocalTime } from '../cli/list-format';
import { formatOrigin, formatTcpExport } from '../cli/origin-format';
import { statusDocument } from '../status/document';
import type { CommandIo } from './io';

/** Cursor home, then clear the screen: a terminal's redraw. */
export const CLEAR_SCREEN = '\u001b[H\u001b[2J';
const INTERVAL_DEFAULT_S = 2;
const INTERVAL_MAX_S = 86_400;

export interface StatusOptions {
  json: boolean;
  watch: boolean;
  intervalMs: number;
  /** Frames to show before exiting; undefined: until interrupted. */
  count: number | undefined;
}

/** Parses status's arguments; a string is what is wrong with them (EINVAL's detail), null is bad usage. */
export function parseStatusArgs(args: readonly string[]): StatusOptions | string | null {
  const options: StatusOptions = {
    json: false,
    watch: false,
    intervalMs: INTERVAL_DEFAULT_S * 1000,
    count: undefined,
  };
  let timing = false;
  for (let index = 0; index < args.length; index += 1) {
    const arg = args[index] as string;
    const [flag, inline] = arg.includes('=')
      ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)]
      : [arg];
    if (flag === '--json' && inline === undefined) options.json = true;
    else if (flag === '--watch' && inline === undefined) options.watch = true;
    else if (flag === '--interval' || flag === '--count') {
      const value = inline ?? args[++index];
      if (value === undefined) return null;
      timing = true;
      if (flag === '--interval') {
        const seconds = /^[0-9]+(\.[0-9]+)?$/.test(value) ? Number(value) : Number.NaN;
        if (!(seconds >= 0.1 && seconds <= INTERVAL_MAX_S)) {
          return `--interval ${value}: not a number of seconds in 0.1..${INTERVAL_MAX_S}`;
        }
        options.intervalMs = Math.round(seconds * 1000);
      } else {
        if (!/^[1-9][0-9]{0,8}$/.test(value)) return `--count ${value}: not a number of frames (1 or more)`;
        options.count = Number(value);
      }
    } else return null;
  }
  if (timing && !options.watch) return '--interval and --count go with --watch';
  return options;
}

/** Prints one frame, or keeps printing them (--watch); the exit status. */
export async function runStatus(
  options: StatusOptions,
  io: CommandIo,
  client: FssClient,
  fail: (what: string, error: unknown) => never,
): Promise<number> {
  const ask = (): Promise<DaemonStatus> => client.status().catch((error: unknown) => fail('status', error));
  if (!options.watch) {
    const status = await ask();
    if (options.json) io.out(JSON.stringify(statusDocument(status), null, 2));
    else for (const line of formatStatus(status)) io.out(line);
    return 0;
  }
  const stop = interruption();
  try {
    for (let frame = 1; ; frame += 1) {
      const status = await ask();
      if (options.json) io.out(JSON.stringify(statusDocument(status)));
      else {
        const lines = formatStatus(status);
        if (io.isTTY === true) lines[0] = `${CLEAR_SCREEN}${lines[0]}`;
        else if (frame > 1) lines.unshift('');
        for (const line of lines) io.out(line);
      }
      if (options.count !== undefined && frame >= options.count) return 0;
      if (await stop.within(options.intervalMs)) return 0;
    }
  } finally {
    stop.dispose();
  }
}

/** SIGINT/SIGTERM end a watch cleanly; `within` waits, true when interrupted meanwhile. */
function interruption(): { within(ms: number): Promise<boolean>; dispose(): void } {
  let interrupted = false;
  let wake: (() => void) | undefined;
  const onSignal = (): void => {
    interrupted = true;
    wake?.();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    within: (ms) =>
      new Promise<boolean>((resolve) => {
        if (interrupted) return resolve(true);
        const timer = setTimeout(() => resolve(interrupted), ms);
        wake = () => {
          clearTimeout(timer);
          resolve(true);
        };
      }),
    dispose: () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

/** The text form: a line for fssd, three per configured unit, one per origin. */
export function formatStatus(status: DaemonStatus): string[] {
  // No version here: the JSON document has it, and this line is in golden transcripts.
  const lines = [`fssd: pid ${status.pid}, run directory ${status.runDir}, ${status.unitCount} units`];
  for (const unit of status.units) {
    if (unit.state === 'idle') continue;
    if (unit.info === undefined) {
      lines.push(`${unit.unit}: ${unit.state}`);
      continue;
    }
    const info = unit.info;
    const validity = unit.valid ? 'valid' : `invalid (${unit.invalidReason ?? 'unknown'})`;
    lines.push(
      `${unit.unit}: ${info.fsg_mount}, taken ${formatLocalTime(info.fsg_time.tv_sec)}, ${validity}, ` +
        formatClusterUse(info) +
        (unit.persistent === true ? `, persistent (${unit.durability ?? 'process'})` : ', not persistent'),
    );
    const device = unit.device === undefined ? '' : `, device ${unit.device} (${unit.loop})`;
    lines.push(
      `    origin ${unit.origin}, backup ${unit.bstore}, export ${unit.export} (${unit.exportClients} clients)${device}`,
    );
    if (unit.storeBytesUsed !== undefined) lines.push(`    ${formatStoreUse(unit)}`);
    if (unit.tcp !== undefined)
      lines.push(`    tcp ${formatTcpExport(unit.tcp).slice(unit.unit.length + 2)}`);
  }
  for (const origin of status.origins) {
    const rate = origin.writeRate === undefined ? '' : `, writing ${formatRate(origin.writeRate)}`;
    lines.push(`origin ${formatOrigin(origin)}${rate}`);
  }
  return lines;
}

/** "store 1M of 9G used (64M at most), 512K/s copied, full in 2h 5m" */
function formatStoreUse(unit: DaemonStatus['units'][number]): string {
  const used = humanizeNumber(unit.storeBytesUsed ?? 0);
  const limit = unit.storeBytesLimit === undefined ? 'unknown' : humanizeNumber(unit.storeBytesLimit);
  const most = unit.storeBytesMax === undefined ? '' : ` (${humanizeNumber(unit.storeBytesMax)} at most)`;
  const full =
    unit.secondsToFull === null || unit.secondsToFull === undefined
      ? ''
      : `, full in ${formatDuration(unit.secondsToFull)}`;
  return `store ${used} of ${limit} used${most}, ${formatRate(unit.writeRate ?? 0)} copied${full}`;
}

function formatRate(bytesPerSecond: number): string {
  return `${humanizeNumber(Math.round(bytesPerSecond))}/s`;
}

/** 45s, 12m 5s, 3h 20m, 4d 2h: the two largest units, rounded down. */
export function formatDuration(seconds: number): string {
  const whole = Math.floor(seconds);
  if (whole < 60) return `${whole}s`;
  const parts: Array<[number, string]> = [
    [Math.floor(whole / 86_400), 'd'],
    [Math.floor(whole / 3600) % 24, 'h'],
    [Math.floor(whole / 60) % 60, 'm'],
    [whole % 60, 's'],
  ];
  const first = parts.findIndex(([value]) => value > 0);
  return parts
    .slice(first, first + 2)
    .map(([value, unit]) => `${value}${unit}`)
    .join(' ');
}
