/**
 * What a run leaves behind: a Markdown table on stdout (the same one the README's Performance
 * section shows) and `bench/results/latest.json`:
 *
 *   { machine, date, durationSeconds, config, scenarios: [{ name, ours, baseline, unit, ratio,
 *     target, met, better, baselineName, group, rounds, error? }] }
 *
 * `ratio` is the median of the per-round ratios (measure.ts), `target` the ratio the issue
 * asks for (≥ when `better` is "higher", ≤ when "lower") or null, `met` null when there is no
 * target. `rounds` keeps every round's figures so a reader can judge the spread.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, hostname, release, totalmem } from 'node:os';
import { dirname } from 'node:path';
import type { Row } from './measure';

export interface Machine {
  hostname: string;
  cpu: string;
  cpuCount: number;
  memoryGiB: number;
  kernel: string;
  node: string;
  tools: Record<string, string>;
  medium: string;
  scratchDir: string;
  commit: string;
}

export interface ResultsDocument {
  machine: Machine;
  date: string;
  durationSeconds: number;
  config: Record<string, unknown>;
  scenarios: {
    group: string;
    name: string;
    ours: number;
    baseline: number;
    baselineName: string;
    unit: string;
    ratio: number;
    target: number | null;
    better: string;
    met: boolean | null;
    rounds: Row['rounds'];
    error?: string;
  }[];
}

/** A number with a precision that suits its size: 1234, 123, 12.3, 1.23. */
export function formatValue(value: number): string {
  if (!Number.isFinite(value)) return '–';
  const magnitude = Math.abs(value);
  if (magnitude >= 100) return value.toFixed(0);
  if (magnitude >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

export function formatRatio(ratio: number): string {
  return Number.isFinite(ratio) ? `${ratio.toFixed(2)}×` : '–';
}

export function formatTarget(row: Pick<Row, 'target' | 'better'>): string {
  if (row.target === null) return '';
  return `${row.better === 'higher' ? '≥' : '≤'} ${row.target.toFixed(2)}×`;
}

export function formatMet(row: Pick<Row, 'met' | 'error'>): string {
  if (row.error !== undefined) return 'failed';
  if (row.met === null) return '';
  return row.met ? 'yes' : '**no**';
}

/** The results as one Markdown table. */
export function formatTable(rows: readonly Row[]): string {
  const header = ['group', 'scenario', 'fss', 'baseline', 'baseline is', 'unit', 'ratio', 'target', 'met'];
  const lines = [
    `| ${header.join(' | ')} |`,
    `|${header.map((_, index) => (index >= 2 && index !== 4 ? '---:' : '---')).join('|')}|`,
  ];
  for (const row of rows) {
    const cells = [
      row.group,
      row.name,
      formatValue(row.ours),
      formatValue(row.baseline),
      row.baselineLabel,
      row.unit,
      formatRatio(row.ratio),
      formatTarget(row),
      formatMet(row),
    ];
    lines.push(`| ${cells.map((cell) => cell.replaceAll('|', '\\|')).join(' | ')} |`);
  }
  return lines.join('\n');
}

/** One line per failed row, with its error. */
export function formatErrors(rows: readonly Row[]): string[] {
  return rows
    .filter((row) => row.error !== undefined)
    .map((row) => `${row.group}: ${row.name}: ${row.error}`);
}

export function toDocument(options: {
  machine: Machine;
  date: Date;
  durationSeconds: number;
  config: Record<string, unknown>;
  rows: readonly Row[];
}): ResultsDocument {
  return {
    machine: options.machine,
    date: options.date.toISOString(),
    durationSeconds: Math.round(options.durationSeconds),
    config: options.config,
    scenarios: options.rows.map((row) => ({
      group: row.group,
      name: row.name,
      ours: round(row.ours),
      baseline: round(row.baseline),
      baselineName: row.baselineLabel,
      unit: row.unit,
      ratio: round(row.ratio, 3),
      target: row.target,
      better: row.better,
      met: row.met,
      rounds: row.rounds.map((sample) => ({
        ours: round(sample.ours),
        baseline: round(sample.baseline),
        baselineLabel: sample.baselineLabel,
        ratio: round(sample.ratio, 3),
      })),
      ...(row.error === undefined ? {} : { error: row.error }),
    })),
  };
}

/** JSON has no NaN: a failed figure is null. */
function round(value: number, digits = 2): number {
  if (!Number.isFinite(value)) return null as unknown as number;
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

export function writeDocument(path: string, document: ResultsDocument): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${JSON.stringify(document, null, 2)}\n`);
}

function firstLine(command: string, args: string[]): string {
  try {
    return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
      .trim()
      .split('\n')[0]!;
  } catch {
    return 'unavailable';
  }
}

/** What the numbers were measured on. */
export function describeMachine(medium: string, scratchDir: string, repoDir: string): Machine {
  const cpuList = cpus();
  return {
    hostname: hostname(),
    cpu: cpuList[0]?.model ?? 'unknown',
    cpuCount: cpuList.length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    node: process.version,
    tools: {
      fio: firstLine('fio', ['--version']),
      nbdkit: firstLine('nbdkit', ['--version']),
      'qemu-nbd': firstLine('qemu-nbd', ['--version']),
      nbdcopy: firstLine('nbdcopy', ['--version']),
    },
    medium,
    scratchDir,
    // FSS_BENCH_COMMIT names what was measured when the tree is not a git checkout (an export).
    commit:
      process.env['FSS_BENCH_COMMIT'] ?? firstLine('git', ['-C', repoDir, 'describe', '--always', '--dirty']),
  };
}
