/**
 * Benchmark (not a test): O_DIRECT sequential throughput of LinuxBlockDevice beside fio, on the
 * same loop device in the same run, 1 MiB requests at queue depths 1 and 8.
 *
 *   pnpm bench                         # as root; needs fio and losetup
 *   FSS_BENCH_SECONDS=5 FSS_BENCH_MIB=2048 FSS_BENCH_DIR=/var/tmp pnpm bench
 *   FSS_BENCH_ONLY=read:8 FSS_BENCH_VERBOSE=1 pnpm bench   # one row, every run printed
 *
 * fio runs with ioengine=libaio, direct=1, iodepth=QD. Ours keeps QD requests in flight
 * through the device's public read()/write() with buffers from allocateBuffer() (so the
 * zero-copy O_DIRECT path is what is measured). The loop device is backed by a file on
 * FSS_BENCH_DIR and attached with --direct-io=on when the backing filesystem allows it.
 *
 * The default backing directory is /dev/shm: a memory-backed loop device makes the run
 * CPU-bound, so the ratio measures our per-request overhead rather than the noise of a shared
 * virtual disk (on this machine the disk's throughput varied by 2x between back-to-back fio
 * runs). FSS_BENCH_DIR=/var/tmp measures on the disk instead. fio and ours alternate for
 * FSS_BENCH_ROUNDS rounds (default 5) and the table shows each side's median.
 * The target is a ratio ≥ 0.8 for reads at QD 8.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type LinuxBlockDevice, openBlockDevice } from '../src';

const MiB = 1024 * 1024;
const REQUEST_BYTES = MiB;
const SECONDS = Number(process.env.FSS_BENCH_SECONDS ?? 3);
const DEVICE_MIB = Number(process.env.FSS_BENCH_MIB ?? 1024);
const ROUNDS = Number(process.env.FSS_BENCH_ROUNDS ?? 5);
const QUEUE_DEPTHS = [1, 8];
/** e.g. FSS_BENCH_ONLY=read:8,write:1 runs just those rows. */
const ONLY = process.env.FSS_BENCH_ONLY?.split(',');

type Direction = 'read' | 'write';

function run(command: string, args: string[]): string {
  return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

/** fio's bandwidth in MiB/s for one job on `device`. */
function fio(device: string, direction: Direction, queueDepth: number): number {
  const output = run('fio', [
    '--name=fss-bench',
    `--filename=${device}`,
    '--direct=1',
    '--ioengine=libaio',
    `--rw=${direction}`,
    `--bs=${REQUEST_BYTES}`,
    `--iodepth=${queueDepth}`,
    '--time_based',
    `--runtime=${SECONDS}`,
    '--ramp_time=0.5',
    '--output-format=json',
  ]);
  const job = JSON.parse(output.slice(output.indexOf('{'))).jobs[0];
  return job[direction].bw_bytes / MiB;
}

/** Our bandwidth in MiB/s: `queueDepth` loops, each keeping one 1 MiB request in flight. */
async function ours(device: LinuxBlockDevice, direction: Direction, queueDepth: number): Promise<number> {
  const requestCount = Math.floor(device.size / REQUEST_BYTES);
  const buffers = Array.from({ length: queueDepth }, (_, index) => {
    const buffer = device.allocateBuffer(REQUEST_BYTES);
    buffer.fill(index + 1);
    return buffer;
  });
  let next = 0;
  let bytes = 0;
  let measuring = false;
  const rampUntil = performance.now() + 500;
  let start = 0;
  const stopAt = rampUntil + SECONDS * 1000;
  await Promise.all(
    buffers.map(async (buffer) => {
      for (;;) {
        const now = performance.now();
        if (now >= stopAt) return;
        if (!measuring && now >= rampUntil) {
          measuring = true;
          start = now;
          bytes = 0;
        }
        const offset = (next++ % requestCount) * REQUEST_BYTES;
        if (direction === 'read') await device.read(buffer, offset);
        else await device.write(buffer, offset);
        bytes += REQUEST_BYTES;
      }
    }),
  );
  return bytes / MiB / ((performance.now() - start) / 1000);
}

function attach(image: string): string {
  try {
    return run('losetup', ['--show', '-f', '--direct-io=on', image]);
  } catch {
    return run('losetup', ['--show', '-f', image]);
  }
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the benchmark needs root (losetup)');
  const base = process.env.FSS_BENCH_DIR ?? (existsSync('/dev/shm') ? '/dev/shm' : tmpdir());
  const dir = mkdtempSync(join(base, 'fss-bench-'));
  const image = join(dir, 'bench.img');
  let device: string | undefined;
  try {
    run('fallocate', ['-l', `${DEVICE_MIB}M`, image]);
    device = attach(image);
    const directIo = run('losetup', ['--list', '--noheadings', '--output', 'DIO', device]);
    console.log(
      `device ${device}: ${DEVICE_MIB} MiB on ${dir}, loop direct-io=${directIo === '1' ? 'on' : 'off'}, ` +
        `${REQUEST_BYTES / MiB} MiB requests, ${SECONDS} s per run, median of ${ROUNDS}, UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE ?? '4 (default)'}`,
    );
    // Fill the device once so reads return real data, not holes.
    run('fio', [
      '--name=fill',
      `--filename=${device}`,
      '--direct=1',
      '--rw=write',
      '--bs=1M',
      '--ioengine=libaio',
      '--iodepth=8',
    ]);
    const rows: string[][] = [];
    for (const direction of ['write', 'read'] as const) {
      for (const queueDepth of QUEUE_DEPTHS) {
        if (ONLY !== undefined && !ONLY.includes(`${direction}:${queueDepth}`)) continue;
        const fioRuns: number[] = [];
        const ourRuns: number[] = [];
        for (let round = 0; round < ROUNDS; round++) {
          fioRuns.push(fio(device, direction, queueDepth));
          const opened = await openBlockDevice(device);
          try {
            if (opened.ioMode !== 'direct') throw new Error(`${device} opened ${opened.ioMode}`);
            ourRuns.push(await ours(opened, direction, queueDepth));
          } finally {
            await opened.close();
          }
        }
        if (process.env.FSS_BENCH_VERBOSE) console.log(direction, queueDepth, { fioRuns, ourRuns });
        const fioMiBs = median(fioRuns);
        const oursMiBs = median(ourRuns);
        rows.push([
          direction,
          String(queueDepth),
          fioMiBs.toFixed(0),
          oursMiBs.toFixed(0),
          (oursMiBs / fioMiBs).toFixed(2),
        ]);
      }
    }
    printTable(['op', 'QD', 'fio MiB/s', 'fss MiB/s', 'fss/fio'], rows);
  } finally {
    if (device !== undefined) run('losetup', ['-d', device]);
    rmSync(dir, { recursive: true, force: true });
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

function printTable(header: string[], rows: string[][]): void {
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => row[column]!.length)),
  );
  const line = (cells: string[]) =>
    `| ${cells.map((cell, column) => cell.padStart(widths[column]!)).join(' | ')} |`;
  console.log(line(header));
  console.log(`|${widths.map((width) => '-'.repeat(width + 2)).join('|')}|`);
  for (const row of rows) console.log(line(row));
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
