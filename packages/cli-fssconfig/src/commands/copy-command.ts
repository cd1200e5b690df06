/**
 * What `fss dump` and `fss backup` share around the copy itself: their option syntax
 * (`--progress=MODE`, `--opt VALUE` or `--opt=VALUE`), the connection to fssd and the unit's
 * export, the progress reporter on stderr, SIGINT/SIGTERM (the copy stops, its partial file is
 * removed, the exit status is 128 + the signal's number), and the error lines
 * (`fss: dump fss0: strerror`, then fssd's or the copy's detail), exit 1.
 */
import { type ConnectOptions, FssClient } from '@fss/control';
import { FssError, strerror, toFssError } from '@fss/core';
import { createProgress, PROGRESS_MODES, type Progress, type ProgressMode } from '../copy/progress';
import { openSnapshot, type SnapshotSource } from '../copy/snapshot-source';
import { type CommandIo, Exit, errorDetail } from './io';

export interface ParsedArgs {
  readonly operands: string[];
  readonly values: Map<string, string>;
  readonly flags: Set<string>;
}

/**
 * Splits `args` into operands, `--name VALUE`/`--name=VALUE` options (those in `valued`) and
 * `--flag`s (those in `flags`); anything else starting with `-` (but `-` itself) is a usage
 * error, as is a repeated option.
 */
export function parseCopyArgs(
  args: readonly string[],
  valued: readonly string[],
  flags: readonly string[],
): ParsedArgs | undefined {
  const parsed: ParsedArgs = { operands: [], values: new Map(), flags: new Set() };
  for (let index = 0; index < args.length; index += 1) {
    const arg = args[index] as string;
    if (arg === '-' || !arg.startsWith('-')) {
      parsed.operands.push(arg);
      continue;
    }
    const equals = arg.indexOf('=');
    const name = equals < 0 ? arg : arg.slice(0, equals);
    if (flags.includes(name) && equals < 0 && !parsed.flags.has(name)) parsed.flags.add(name);
    else if (valued.includes(name) && !parsed.values.has(name)) {
      const value = equals < 0 ? args[++index] : arg.slice(equals + 1);
      if (value === undefined || value === '') return undefined;
      parsed.values.set(name, value);
    } else return undefined;
  }
  return parsed;
}

export function progressModeOf(value: string | undefined): ProgressMode | undefined {
  if (value === undefined) return 'auto';
  return PROGRESS_MODES.find((mode) => mode === value);
}

export interface CopyContext {
  readonly control: FssClient;
  readonly source: SnapshotSource;
  readonly progress: Progress;
  readonly signal: AbortSignal;
}

const SIGNAL_NUMBERS: Readonly<Record<string, number>> = { SIGINT: 2, SIGTERM: 15, SIGHUP: 1 };

/**
 * Runs `body` with a connection to fssd, the unit opened and a progress reporter; turns every
 * failure into the error lines and exit 1, a signal into 128 + its number.
 */
export async function runCopyCommand(
  what: string,
  unit: string,
  io: CommandIo,
  connect: ConnectOptions,
  options: { readonly op: string; readonly progress: ProgressMode },
  body: (context: CopyContext) => Promise<void>,
): Promise<number> {
  const controller = new AbortController();
  let caught: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals): void => {
    caught = signal;
    controller.abort(new Error(signal));
  };
  const signals: NodeJS.Signals[] = io.streams?.handleSignals === true ? ['SIGINT', 'SIGTERM', 'SIGHUP'] : [];
  for (const signal of signals) process.on(signal, onSignal);
  let control: FssClient | undefined;
  let source: SnapshotSource | undefined;
  try {
    control = await FssClient.connect(connect);
    source = await openSnapshot(control, unit);
    const opened = source;
    controller.signal.addEventListener('abort', () => opened.reader.destroy(), { once: true });
    const progress = createProgress({
      mode: options.progress,
      op: options.op,
      unit: source.unit,
      stream: io.streams?.stderr ?? lineStream(io),
      isTTY: io.streams?.stderrIsTTY ?? false,
      intervalMs: intervalFromEnvironment(),
    });
    await body({ control, source, progress, signal: controller.signal });
    return 0;
  } catch (error) {
    if (caught !== undefined) {
      io.err(`fss: ${what}: stopped by ${caught}`);
      return 128 + (SIGNAL_NUMBERS[caught] ?? 0);
    }
    if (error instanceof Exit) return error.status;
    // A read that failed because the snapshot turned invalid: say so, with fssd's reason.
    const invalidity = await source?.checkStillValid().then(
      () => undefined,
      (why: unknown) => why,
    );
    const failure = toFssError(invalidity ?? error);
    io.err(`fss: ${what}: ${strerror(failure.code)}`);
    const detail = errorDetail(failure);
    if (detail !== undefined) io.err(`fss: ${what}: ${detail}`);
    return 1;
  } finally {
    for (const signal of signals) process.off(signal, onSignal);
    source?.close();
    control?.close();
  }
}

/** A usage error's exit, after the usage text. */
export function usageExit(io: CommandIo, usage: string): never {
  io.err(usage);
  throw new Exit(1);
}

/** Refuses an operand combination with EINVAL and a message naming it. */
export function invalid(message: string): never {
  throw new FssError('EINVAL', message);
}

/** In-process, progress lines go to the command's err() one by one. */
function lineStream(io: CommandIo): NodeJS.WritableStream {
  return {
    write(text: string | Uint8Array): boolean {
      for (const line of String(text).split('\n')) if (line !== '') io.err(line);
      return true;
    },
  } as NodeJS.WritableStream;
}

function intervalFromEnvironment(): number | undefined {
  const value = process.env['FSS_PROGRESS_INTERVAL_MS'];
  if (value === undefined || value === '') return undefined;
  const interval = Number(value);
  return Number.isSafeInteger(interval) && interval >= 0 ? interval : undefined;
}
