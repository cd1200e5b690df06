/**
 * Benchmark (not a test): the kernel-visible path, fio on /dev/loopN, as ratios to a plain loop
 * device within one run.
 *
 *   node --conditions=@fss/source --import tsx packages/fuse/bench/attach.ts      # as root
 *   FSS_BENCH_SECONDS=5 FSS_BENCH_ROUNDS=5 FSS_BENCH_MIB=1024 FSS_BENCH_DIR=/var/tmp ...
 *   FSS_BENCH_ONLY=randwrite FSS_BENCH_VARIANTS=1 ...     # one test; the design variants too
 *
 * What is compared, all on one image of random data in FSS_BENCH_DIR (default /var/tmp, a
 * real disk; /dev/shm makes the run CPU-bound and measures our overhead alone):
 *
 *   baseline        losetup-style loop device (direct I/O) over a copy of the image
 *   fss fuse        attachBlockDevice(openBlockDevice(image)): our FUSE file + loop
 *   fss fuse+Origin the same over an Origin (@fss/engine) wrapping the device, no snapshot
 *   fss fuse no dio our FUSE file + loop without LO_FLAGS_DIRECT_IO
 *   nbdfuse         NbdServer (@fss/nbd) over the same device, `nbdfuse FILE --unix SOCK`,
 *                   loop over nbdfuse's file (direct I/O when it allows it)
 *   with FSS_BENCH_VARIANTS=1 also: 2 reader threads, and OPEN answered without FOPEN_DIRECT_IO
 *
 * Tests: 1 MiB sequential read and write at queue depth FSS_BENCH_SEQ_QD (default 4), 4 KiB
 * random write at queue depth 16; fio with --direct=1 --ioengine=libaio --time_based. Rounds
 * are interleaved: every candidate run follows a baseline run, its ratio is to that baseline,
 * and the table shows the median of the per-round ratios (and of the rates). The machine is
 * shared and its disk's speed drifts, so only ratios taken side by side mean anything.
 *
 * The CPU phase (FSS_BENCH_CPU=0 skips it): each candidate once more per round at a fixed
 * rate every candidate sustains (2000 IOPS for 4 KiB, 150 for 1 MiB), and the CPU time the
 * serving processes spent per I/O. Unlike throughput it hardly depends on what the machine's
 * other tenants do, so it is what tells the design variants apart.
 *
 * A reference row, "device in-process": the same workload on the BlockDevice itself, from
 * this process (QD concurrent device.read/write calls, no kernel path at all). What our FUSE
 * path can reach is bounded by it.
 *
 * libuv's pool keeps its default 4 threads unless UV_THREADPOOL_SIZE is set (it must be set
 * before node starts: the ESM loader sizes the pool first). 16 threads measured no faster
 * for queue depth 16 on 2 cores and cost more CPU per I/O.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomFillSync, randomInt } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, writeSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { attachLoop, detachLoop, type LoopDevice, openBlockDevice } from '@fss/blockdev-linux';
import type { BlockDevice } from '@fss/core';
import { Origin } from '@fss/engine';
import { NbdServer } from '@fss/nbd';
import { type AttachBlockDeviceOptions, attachBlockDevice, OpenFlag } from '../src';

const MiB = 1024 * 1024;
const execFileAsync = promisify(execFile);

interface Test {
  name: string;
  rw: 'read' | 'write' | 'randwrite';
  blockBytes: number;
  queueDepth: number;
  /** Report IOPS rather than MiB/s. */
  iops: boolean;
  target: number;
  /** The fixed rate of the CPU phase: low enough for every candidate to sustain. */
  cpuRateIops: number;
}

interface Candidate {
  name: string;
  loop: LoopDevice;
  close: () => Promise<void>;
  /** Another process serving it (nbdfuse), whose CPU counts as the candidate's too. */
  helperPid?: number;
}

interface Sample {
  baseline: number;
  candidate: number;
  cpuBusyPercent: number;
  /** CPU time of the serving processes per fio I/O, at the fixed rate of the CPU phase. */
  serverMicrosPerIo: number | undefined;
}

async function main(): Promise<void> {
  const seconds = Number(process.env.FSS_BENCH_SECONDS ?? 5);
  const rounds = Number(process.env.FSS_BENCH_ROUNDS ?? 3);
  const imageMiB = Number(process.env.FSS_BENCH_MIB ?? 512);
  const seqQueueDepth = Number(process.env.FSS_BENCH_SEQ_QD ?? 4);
  const measureCpu = process.env.FSS_BENCH_CPU !== '0';
  const only = process.env.FSS_BENCH_ONLY?.split(',');
  const all: Test[] = [
    {
      name: '1 MiB seq read',
      rw: 'read',
      blockBytes: MiB,
      queueDepth: seqQueueDepth,
      iops: false,
      target: 0.5,
      cpuRateIops: 150,
    },
    {
      name: '1 MiB seq write',
      rw: 'write',
      blockBytes: MiB,
      queueDepth: seqQueueDepth,
      iops: false,
      target: 0.5,
      cpuRateIops: 150,
    },
    {
      name: '4 KiB randwrite QD16',
      rw: 'randwrite',
      blockBytes: 4096,
      queueDepth: 16,
      iops: true,
      target: 0.3,
      cpuRateIops: 2000,
    },
  ];
  const tests = all.filter(
    (test) => only === undefined || only.some((word) => test.rw === word || test.name.includes(word)),
  );

  const dir = mkdtempSync(join(process.env.FSS_BENCH_DIR ?? '/var/tmp', 'fss-fuse-bench-'));
  const cleanups: Array<() => Promise<void>> = [];
  try {
    const image = join(dir, 'image.raw');
    const copy = join(dir, 'copy.raw');
    writeRandomImage(image, imageMiB * MiB);
    await execFileAsync('cp', ['--sparse=never', image, copy]);
    const baseline = await attachLoop(copy, { directIo: true });
    cleanups.push(() => detachLoop(baseline.path));
    const device = await openBlockDevice(image);
    // The Origin closes the device it wraps; it is closed last, after everything over it.
    const origin = new Origin(device, { name: 'bench', logger: () => undefined });
    cleanups.push(() => origin.close());
    const candidates: Candidate[] = [];
    const ours = async (name: string, over: BlockDevice, options: Partial<AttachBlockDeviceOptions> = {}) => {
      const mountPoint = join(dir, `fuse-${candidates.length}`);
      mkdirSync(mountPoint);
      const attached = await attachBlockDevice(over, { mountPoint, ...options });
      const candidate = { name, loop: attached.loop, close: async () => void (await attached.close()) };
      cleanups.push(candidate.close);
      candidates.push(candidate);
    };
    await ours('fss fuse', device);
    await ours('fss fuse+Origin', origin);
    await ours('fss fuse no dio', device, { directIo: false });
    if (process.env.FSS_BENCH_VARIANTS === '1') {
      await ours('fss fuse 2 readers', device, { readerThreads: 2 });
      await ours('fss fuse no FOPEN_DIRECT_IO', device, { openFlags: OpenFlag.PARALLEL_DIRECT_WRITES });
    }
    candidates.push(await nbdfuse(device, dir, cleanups));

    console.log(
      `fio --direct=1 --ioengine=libaio, ${seconds} s per run, ${rounds} rounds, ${imageMiB} MiB image in ${dir}, ` +
        `UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE}`,
    );
    for (const candidate of candidates) {
      console.log(
        `  ${candidate.name}: ${candidate.loop.path}, loop direct I/O ${candidate.loop.directIo ? 'on' : 'off'}`,
      );
    }
    const results = new Map<string, Sample[]>();
    const inProcessName = 'device in-process';
    for (let round = 0; round < rounds; round++) {
      for (const test of tests) {
        const base = await fio(baseline.path, test, seconds);
        const direct = await inProcess(device, test, seconds);
        const inProcessKey = `${test.name}\u0000${inProcessName}`;
        const inProcessSamples = results.get(inProcessKey) ?? [];
        inProcessSamples.push({
          baseline: base.rate,
          candidate: direct,
          cpuBusyPercent: 0,
          serverMicrosPerIo: undefined,
        });
        results.set(inProcessKey, inProcessSamples);
        for (const candidate of candidates) {
          const base = await fio(baseline.path, test, seconds);
          const measured = await fio(candidate.loop.path, test, seconds);
          const atRate = measureCpu ? await fio(candidate.loop.path, test, seconds, candidate) : undefined;
          const key = `${test.name}\u0000${candidate.name}`;
          const samples = results.get(key) ?? [];
          samples.push({
            baseline: base.rate,
            candidate: measured.rate,
            cpuBusyPercent: measured.cpuBusyPercent,
            serverMicrosPerIo: atRate?.serverMicrosPerIo,
          });
          results.set(key, samples);
          if (process.env.FSS_BENCH_VERBOSE === '1') {
            console.log(
              `  round ${round + 1} ${test.name} ${candidate.name}: ${measured.rate.toFixed(0)} / ${base.rate.toFixed(0)} = ${(measured.rate / base.rate).toFixed(2)}`,
            );
          }
        }
      }
    }
    printTable(tests, [...candidates.map((candidate) => candidate.name), inProcessName], results);
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup().catch((error: unknown) => console.error(error));
    await rm(dir, { recursive: true, force: true });
  }
}

/** An image of random bytes (nothing sparse, nothing compressible), written before it is served. */
function writeRandomImage(path: string, bytes: number): void {
  const chunk = Buffer.alloc(8 * MiB);
  const fd = openSync(path, 'w');
  try {
    for (let done = 0; done < bytes; done += chunk.length) {
      randomFillSync(chunk);
      writeSync(fd, chunk, 0, Math.min(chunk.length, bytes - done));
    }
  } finally {
    closeSync(fd);
  }
}

/** The same device through NbdServer → nbdfuse → loop. */
async function nbdfuse(
  device: BlockDevice,
  dir: string,
  cleanups: Array<() => Promise<void>>,
): Promise<Candidate> {
  const socket = join(dir, 'nbd.sock');
  const server = new NbdServer({ exports: [{ name: 'bench', device }], log: () => undefined });
  await server.listen({ path: socket });
  cleanups.push(() => server.close());
  const fuseDir = join(dir, 'nbdfuse');
  mkdirSync(fuseDir);
  const pidFile = join(dir, 'nbdfuse.pid');
  const child: ChildProcess = spawn('nbdfuse', ['-P', pidFile, join(fuseDir, 'disk'), '--unix', socket], {
    stdio: 'ignore',
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  cleanups.push(async () => {
    await execFileAsync('fusermount3', ['-u', fuseDir]).catch(() => undefined);
    const timer = setTimeout(() => child.kill('SIGTERM'), 5000); // it exits by itself after the unmount
    await exited;
    clearTimeout(timer);
  });
  for (let waited = 0; !(existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim() !== ''); waited += 50) {
    if (waited > 10_000) throw new Error('nbdfuse did not start');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const loop = await attachLoop(join(fuseDir, 'disk'), { directIo: true });
  const candidate = { name: 'nbdfuse', loop, close: () => detachLoop(loop.path), helperPid: child.pid };
  cleanups.push(candidate.close);
  return candidate;
}

/** Idle and total jiffies of all CPUs (/proc/stat), to report how busy the machine was. */
function cpuTimes(): { idle: number; total: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  return { idle: fields[3]! + fields[4]!, total: fields.reduce((sum, value) => sum + value, 0) };
}

/** CPU time (user + system, µs) of this process and, when given, of another one. */
function serverCpuMicros(helperPid: number | undefined): number {
  const own = process.cpuUsage();
  let total = own.user + own.system;
  if (helperPid !== undefined) {
    // /proc/PID/stat fields 14 and 15 (after the ")" of the command): utime, stime in clock ticks.
    const fields = readFileSync(`/proc/${helperPid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    total += ((Number(fields[11]) + Number(fields[12])) * 1e6) / CLOCK_TICKS_PER_SECOND;
  }
  return total;
}

/** USER_HZ: /proc times are in 1/100 s on every Linux this runs on. */
const CLOCK_TICKS_PER_SECOND = 100;

/**
 * One fio run; its rate (MiB/s or IOPS) and how busy all CPUs were, in percent of one CPU.
 * With `cpuOf`, the run is at the test's fixed rate and also reports the serving processes'
 * CPU time per I/O (this process: FUSE readers, main thread, libuv pool, NBD server; plus
 * nbdfuse for that candidate).
 */
async function fio(
  path: string,
  test: Test,
  seconds: number,
  cpuOf?: Candidate,
): Promise<{ rate: number; cpuBusyPercent: number; serverMicrosPerIo: number | undefined }> {
  const before = cpuTimes();
  const serverBefore = cpuOf === undefined ? 0 : serverCpuMicros(cpuOf.helperPid);
  const { stdout } = await execFileAsync(
    'fio',
    [
      '--name=bench',
      `--filename=${path}`,
      '--direct=1',
      '--ioengine=libaio',
      `--rw=${test.rw}`,
      `--bs=${test.blockBytes}`,
      `--iodepth=${test.queueDepth}`,
      '--time_based',
      `--runtime=${seconds}`,
      ...(cpuOf === undefined ? ['--ramp_time=1'] : [`--rate_iops=${test.cpuRateIops}`]),
      '--randrepeat=0',
      '--output-format=json',
    ],
    { maxBuffer: 16 * MiB },
  );
  const serverAfter = cpuOf === undefined ? 0 : serverCpuMicros(cpuOf.helperPid);
  const after = cpuTimes();
  const job = JSON.parse(stdout.slice(stdout.indexOf('{'))).jobs[0];
  const side = test.rw === 'read' ? job.read : job.write;
  const total = after.total - before.total;
  const cpus = Number(readFileSync('/proc/cpuinfo', 'utf8').match(/^processor/gm)?.length ?? 1);
  return {
    rate: test.iops ? side.iops : side.bw_bytes / MiB,
    cpuBusyPercent: total === 0 ? 0 : ((total - (after.idle - before.idle)) / total) * 100 * cpus,
    serverMicrosPerIo: cpuOf === undefined ? undefined : (serverAfter - serverBefore) / side.total_ios,
  };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/**
 * The test's workload on `device` from this process: `queueDepth` loops of read/write calls
 * on buffers from allocateBuffer, for `seconds`; MiB/s or IOPS like fio's.
 */
async function inProcess(device: BlockDevice, test: Test, seconds: number): Promise<number> {
  const blocks = Math.floor(device.size / test.blockBytes);
  const deadline = Date.now() + seconds * 1000;
  let done = 0;
  const loop = async (index: number) => {
    const buffer = device.allocateBuffer?.(test.blockBytes) ?? new Uint8Array(test.blockBytes);
    let next = Math.floor((index * blocks) / test.queueDepth);
    while (Date.now() < deadline) {
      const block = test.rw === 'randwrite' ? randomInt(blocks) : next++ % blocks;
      if (test.rw === 'read') await device.read(buffer, block * test.blockBytes);
      else await device.write(buffer, block * test.blockBytes);
      done++;
    }
  };
  await Promise.all(Array.from({ length: test.queueDepth }, (_, index) => loop(index)));
  return test.iops ? done / seconds : (done * test.blockBytes) / MiB / seconds;
}

function printTable(tests: Test[], candidates: string[], results: Map<string, Sample[]>): void {
  const rows = [
    [
      'test',
      'candidate',
      'baseline',
      'candidate',
      'ratio (median)',
      'per-round ratios',
      'machine cpu %',
      'server µs/IO',
      'target',
    ],
  ];
  for (const test of tests) {
    for (const candidate of candidates) {
      const samples = results.get(`${test.name}\u0000${candidate}`) ?? [];
      const ratios = samples.map((sample) => sample.candidate / sample.baseline);
      const unit = test.iops ? ' IOPS' : ' MiB/s';
      const ratio = median(ratios);
      const target = ['fss fuse', 'fss fuse+Origin'].includes(candidate)
        ? `≥ ${test.target} ${ratio >= test.target ? 'met' : 'MISSED'}`
        : '';
      rows.push([
        test.name,
        candidate,
        `${median(samples.map((sample) => sample.baseline)).toFixed(0)}${unit}`,
        `${median(samples.map((sample) => sample.candidate)).toFixed(0)}${unit}`,
        ratio.toFixed(2),
        ratios.map((value) => value.toFixed(2)).join(' '),
        samples[0]?.cpuBusyPercent === 0
          ? '-'
          : median(samples.map((sample) => sample.cpuBusyPercent)).toFixed(0),
        samples[0]?.serverMicrosPerIo === undefined
          ? '-'
          : median(samples.map((sample) => sample.serverMicrosPerIo ?? 0)).toFixed(0),
        target,
      ]);
    }
  }
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  for (const [index, row] of rows.entries()) {
    console.log(`| ${row.map((cell, column) => cell.padEnd(widths[column]!)).join(' | ')} |`);
    if (index === 0) console.log(`|${widths.map((width) => '-'.repeat(width + 2)).join('|')}|`);
  }
}

await main();
