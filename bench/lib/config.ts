/**
 * The bench's knobs, read once from the environment so every module sees the same values and
 * the results file can record what was run. Defaults are sized so that `pnpm bench` stays well
 * under 15 minutes on a shared 2-core machine; each variable scales one dimension up.
 *
 *   FSS_BENCH_ROUNDS       interleaved rounds per comparison (default 3; the issue asks ≥ 3)
 *   FSS_BENCH_SIZE         size of each image (default 1G; suffixes K M G T, base 1024)
 *   FSS_BENCH_WRITE_SIZE   bytes written per write measurement (default SIZE / 4)
 *   FSS_BENCH_SECONDS      run time of each time-based fio job (default 1), after a 0.5 s ramp
 *   FSS_BENCH_SCALE_SIZE   the sparse origin of the scale scenario (default 1T)
 *   FSS_BENCH_SCALE_COPY   bytes of random clusters copied in the scale scenario (default 1G)
 *   FSS_BENCH_DIR          scratch directory (default /dev/shm when it has room, else /var/tmp)
 *   FSS_BENCH_MEDIUM       `loop` (images attached as loop devices; default as root) or `file`
 *   FSS_BENCH_ONLY         comma-separated scenario groups to run (default all), see run.ts
 *   FSS_BENCH_OUT          results file (default bench/results/latest.json)
 *   FSS_BENCH_CPU_PROF     a directory: start fssd with --cpu-prof writing profiles there
 */
import { fileURLToPath } from 'node:url';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;

export type Medium = 'loop' | 'file';

export interface BenchConfig {
  rounds: number;
  imageBytes: number;
  writeBytes: number;
  fioSeconds: number;
  scaleOriginBytes: number;
  scaleCopyBytes: number;
  /** undefined: choose (see sandbox.ts). */
  dir: string | undefined;
  /** undefined: choose (see sandbox.ts). */
  medium: Medium | undefined;
  /** undefined: every group. */
  only: readonly string[] | undefined;
  resultsPath: string;
  cpuProfileDir: string | undefined;
}

const SUFFIX_SHIFT: Readonly<Record<string, number>> = { '': 0, K: 10, M: 20, G: 30, T: 40 };

/** Parses `1G`, `256M`, `4096` (bytes, base 1024). Throws on anything else. */
export function parseSizeBytes(text: string, what: string): number {
  const match = /^([0-9]+)([KMGT]?)(i?B)?$/i.exec(text.trim());
  if (match === null) throw new Error(`${what}: "${text}" is not a size (e.g. 4096, 256M, 1G, 1T)`);
  const shift = SUFFIX_SHIFT[match[2]!.toUpperCase()]!;
  const bytes = Number(match[1]) * 2 ** shift;
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new Error(`${what}: "${text}" is out of range`);
  return bytes;
}

function positiveNumber(text: string, what: string, integer: boolean): number {
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0 || (integer && !Number.isInteger(value))) {
    throw new Error(`${what}: "${text}" must be a positive ${integer ? 'integer' : 'number'}`);
  }
  return value;
}

export function readConfig(env: NodeJS.ProcessEnv): BenchConfig {
  const imageBytes = parseSizeBytes(env['FSS_BENCH_SIZE'] ?? '1G', 'FSS_BENCH_SIZE');
  if (imageBytes % MiB !== 0) throw new Error('FSS_BENCH_SIZE: must be a whole number of MiB');
  const writeBytes =
    env['FSS_BENCH_WRITE_SIZE'] === undefined
      ? Math.max(MiB, imageBytes / 4)
      : parseSizeBytes(env['FSS_BENCH_WRITE_SIZE'], 'FSS_BENCH_WRITE_SIZE');
  if (writeBytes > imageBytes || writeBytes % MiB !== 0) {
    throw new Error('FSS_BENCH_WRITE_SIZE: must be whole MiB and at most FSS_BENCH_SIZE');
  }
  const medium = env['FSS_BENCH_MEDIUM'];
  if (medium !== undefined && medium !== 'loop' && medium !== 'file') {
    throw new Error(`FSS_BENCH_MEDIUM: "${medium}" must be loop or file`);
  }
  return {
    rounds: positiveNumber(env['FSS_BENCH_ROUNDS'] ?? '3', 'FSS_BENCH_ROUNDS', true),
    imageBytes,
    writeBytes,
    fioSeconds: positiveNumber(env['FSS_BENCH_SECONDS'] ?? '1', 'FSS_BENCH_SECONDS', false),
    scaleOriginBytes: parseSizeBytes(env['FSS_BENCH_SCALE_SIZE'] ?? '1T', 'FSS_BENCH_SCALE_SIZE'),
    scaleCopyBytes: parseSizeBytes(env['FSS_BENCH_SCALE_COPY'] ?? '1G', 'FSS_BENCH_SCALE_COPY'),
    dir: env['FSS_BENCH_DIR'] || undefined,
    medium,
    only: env['FSS_BENCH_ONLY']
      ?.split(',')
      .map((group) => group.trim())
      .filter((group) => group !== ''),
    resultsPath: env['FSS_BENCH_OUT'] ?? fileURLToPath(new URL('../results/latest.json', import.meta.url)),
    cpuProfileDir: env['FSS_BENCH_CPU_PROF'] || undefined,
  };
}
