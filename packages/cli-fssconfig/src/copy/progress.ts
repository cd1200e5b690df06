/**
 * The progress reporter `fss dump` and `fss backup` share. One interface, three forms:
 *
 *   bar   a progress bar on stderr (cli-progress): bytes done of the total, rate, ETA;
 *   json  one JSON object per line on stderr, at most every `intervalMs` and always at the
 *         end of a phase: {"op","unit","phase","bytes","totalBytes","bytesPerSecond",
 *         "secondsLeft","done"}; bytes never decrease within a phase and the last line of a
 *         phase has done: true and bytes = totalBytes;
 *   none  nothing.
 *
 * `auto` (the default) is the bar when stderr is a terminal and JSON lines otherwise, so a
 * script or a service log gets something it can parse. A command runs one or two phases
 * (`copy`, then `verify` with --verify); each starts from zero.
 */
import { assert } from '@fss/core';
import { SingleBar } from 'cli-progress';
import { humanizeNumber } from '../cli/humanize';

export type ProgressMode = 'auto' | 'bar' | 'json' | 'none';
export const PROGRESS_MODES: readonly ProgressMode[] = ['auto', 'bar', 'json', 'none'];

/** Default gap between two JSON lines (FSS_PROGRESS_INTERVAL_MS overrides it). */
export const PROGRESS_INTERVAL_MS_DEFAULT = 1000;

export interface Progress {
  /** Starts a phase of `totalBytes` (prints the first JSON line, draws the bar). */
  begin(phase: string, totalBytes: number): void;
  /** `bytes` more are done. */
  advance(bytes: number): void;
  /** The phase finished: the final line (done: true), the bar at 100%. */
  end(): void;
  /** The command failed: the bar is removed, no final line. Idempotent. */
  stop(): void;
}

export interface ProgressOptions {
  readonly mode: ProgressMode;
  /** What is copied: `dump` or `backup`, and the unit. */
  readonly op: string;
  readonly unit: string;
  /** Where progress goes (stderr) and whether it is a terminal. */
  readonly stream: NodeJS.WritableStream;
  readonly isTTY: boolean;
  readonly intervalMs?: number;
  /** The clock (tests pass their own). */
  readonly now?: () => number;
}

/** A JSON progress line, as documented above. */
export interface ProgressLine {
  op: string;
  unit: string;
  phase: string;
  bytes: number;
  totalBytes: number;
  bytesPerSecond: number;
  secondsLeft: number | null;
  done: boolean;
}

export function createProgress(options: ProgressOptions): Progress {
  const mode = options.mode === 'auto' ? (options.isTTY ? 'bar' : 'json') : options.mode;
  if (mode === 'none') return { begin() {}, advance() {}, end() {}, stop() {} };
  const meter = new RateMeter(options.now ?? Date.now);
  return mode === 'bar' ? new BarProgress(options, meter) : new JsonProgress(options, meter);
}

/** Bytes done in the current phase, the average rate since it began, and the ETA. */
class RateMeter {
  phase = '';
  totalBytes = 0;
  bytes = 0;
  private startedMs = 0;

  constructor(readonly now: () => number) {}

  begin(phase: string, totalBytes: number): void {
    assert(Number.isSafeInteger(totalBytes) && totalBytes >= 0, 'a phase needs a byte total');
    this.phase = phase;
    this.totalBytes = totalBytes;
    this.bytes = 0;
    this.startedMs = this.now();
  }

  advance(bytes: number): void {
    assert(bytes >= 0, 'progress never goes backwards');
    this.bytes = Math.min(this.totalBytes, this.bytes + bytes);
  }

  get bytesPerSecond(): number {
    const seconds = (this.now() - this.startedMs) / 1000;
    return seconds > 0 ? Math.round(this.bytes / seconds) : 0;
  }

  get secondsLeft(): number | null {
    const rate = this.bytesPerSecond;
    if (this.bytes === this.totalBytes) return 0;
    return rate > 0 ? Math.ceil((this.totalBytes - this.bytes) / rate) : null;
  }
}

class JsonProgress implements Progress {
  private lastMs = Number.NEGATIVE_INFINITY;
  private readonly intervalMs: number;

  constructor(
    private readonly options: ProgressOptions,
    private readonly meter: RateMeter,
  ) {
    this.intervalMs = options.intervalMs ?? PROGRESS_INTERVAL_MS_DEFAULT;
  }

  begin(phase: string, totalBytes: number): void {
    this.meter.begin(phase, totalBytes);
    this.print(false);
  }

  advance(bytes: number): void {
    this.meter.advance(bytes);
    if (this.meter.now() - this.lastMs >= this.intervalMs && this.meter.bytes < this.meter.totalBytes) {
      this.print(false);
    }
  }

  end(): void {
    this.meter.advance(this.meter.totalBytes - this.meter.bytes);
    this.print(true);
  }

  stop(): void {}

  private print(done: boolean): void {
    this.lastMs = this.meter.now();
    const line: ProgressLine = {
      op: this.options.op,
      unit: this.options.unit,
      phase: this.meter.phase,
      bytes: this.meter.bytes,
      totalBytes: this.meter.totalBytes,
      bytesPerSecond: this.meter.bytesPerSecond,
      secondsLeft: this.meter.secondsLeft,
      done,
    };
    this.options.stream.write(`${JSON.stringify(line)}\n`);
  }
}

class BarProgress implements Progress {
  private bar: SingleBar | undefined;

  constructor(
    private readonly options: ProgressOptions,
    private readonly meter: RateMeter,
  ) {}

  begin(phase: string, totalBytes: number): void {
    this.stop();
    this.meter.begin(phase, totalBytes);
    this.bar = new SingleBar({
      format: `${this.options.unit} ${phase} [{bar}] {percentage}% {done}/{size} {rate}/s ETA {left}`,
      stream: this.options.stream as NodeJS.WriteStream,
      // We decide it is a terminal (auto, or --progress=bar); cli-progress must not second-guess.
      noTTYOutput: true,
      hideCursor: true,
      clearOnComplete: false,
      barsize: 30,
      etaBuffer: 50,
      fps: 5,
    });
    this.bar.start(Math.max(totalBytes, 1), 0, this.payload());
  }

  advance(bytes: number): void {
    this.meter.advance(bytes);
    this.bar?.update(this.meter.bytes, this.payload());
  }

  end(): void {
    this.meter.advance(this.meter.totalBytes - this.meter.bytes);
    this.bar?.update(Math.max(this.meter.totalBytes, 1), this.payload());
    this.bar?.stop();
    this.bar = undefined;
  }

  stop(): void {
    this.bar?.stop();
    this.bar = undefined;
  }

  private payload(): Record<string, string> {
    return {
      done: humanizeNumber(this.meter.bytes),
      size: humanizeNumber(this.meter.totalBytes),
      rate: humanizeNumber(this.meter.bytesPerSecond),
      left: formatSeconds(this.meter.secondsLeft),
    };
  }
}

/** `1h02m`, `3m05s`, `42s`; `--` while the rate is not known yet. */
export function formatSeconds(seconds: number | null): string {
  if (seconds === null) return '--';
  const hours = Math.floor(seconds / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  const rest = seconds % 60;
  const two = (value: number): string => String(value).padStart(2, '0');
  if (hours > 0) return `${hours}h${two(minutes)}m`;
  if (minutes > 0) return `${minutes}m${two(rest)}s`;
  return `${rest}s`;
}
