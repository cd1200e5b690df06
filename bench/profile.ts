/**
 * Profiling one bench workload inside fssd (not part of `pnpm bench`; docs/performance.md
 * was written with it):
 *
 *   node --conditions=@fss/source --import tsx bench/profile.ts WORKLOAD [--strace]
 *
 * Makes the bench's image in a sandbox (lib/sandbox.ts), starts fssd through lib/fss-bins.ts
 * with `--cpu-prof`, claims the image as an origin, runs WORKLOAD FSS_PROFILE_PASSES times
 * (default 5; one untimed warm-up pass first, outside the profile's busy figures only in that
 * it is early), stops fssd (which writes the profile) and prints: MiB/s per pass, the busy
 * share of the daemon's main thread, self share per package, and the top functions by self
 * share with their total share. The .cpuprofile is kept in FSS_PROFILE_DIR (default a
 * directory under /tmp, printed) for Chrome DevTools or speedscope.
 *
 * One tool may be attached to the daemon for the timed passes:
 *   --strace       `strace -f -c`: syscalls per MiB moved (it slows the daemon down: the MiB/s
 *                  are then meaningless, the counts are not);
 *   --perf-stat    `perf stat --per-thread`: task-clock, context switches, migrations and page
 *                  faults of each thread (main thread, libuv pool, V8 helpers);
 *   --perf-record  `perf record -e cpu-clock -g` with fssd started --perf-basic-prof, then the
 *                  top of `perf report` by thread, library and symbol (kernel included).
 * FSS_PROFILE_NODE_FLAGS adds Node flags to fssd (e.g. `--trace-gc`, `--max-semi-space-size=32`).
 *
 * WORKLOADs (FSS_BENCH_WRITE_SIZE bytes for writes, the whole image for reads):
 *   write        fio nbd 1 MiB QD16 sequential write, no snapshot
 *   first-touch  the same on a fresh unit each pass
 *   overwrite    the same on a unit whose region a previous pass copied
 *   four         the same with four fresh units
 *   rand4k       fio nbd 4 KiB random write QD16 for FSS_BENCH_SECONDS, no snapshot
 *   read         nbdcopy of the origin export to null:, 4 connections
 *   untouched    nbdcopy of a fresh unit's export (nothing copied)
 *   copied       nbdcopy of a unit whose every cluster was copied
 */

import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Cleanup } from './lib/cleanup';
import { MiB, readConfig } from './lib/config';
import { type CpuProfile, type ProfileWindow, summariseProfile } from './lib/cpu-profile';
import { FssdSession, type Unit } from './lib/ours';
import { runCommand, sleepMs } from './lib/processes';
import { Sandbox } from './lib/sandbox';
import { nbdcopyRead, runFio } from './lib/workloads';

const WORKLOADS = [
  'write',
  'first-touch',
  'overwrite',
  'four',
  'rand4k',
  'read',
  'untouched',
  'copied',
] as const;
type Workload = (typeof WORKLOADS)[number];

function isWorkload(name: string | undefined): name is Workload {
  return (WORKLOADS as readonly (string | undefined)[]).includes(name);
}

/**
 * Attaches `command args... -p PID` (strace, perf) to the daemon for the timed passes; the
 * returned function stops it with SIGINT (both print their summary then) and returns what it
 * wrote to `outputPath`. Registered with the Cleanup, so a failed run does not leave it behind.
 */
function attach(
  cleanup: Cleanup,
  command: string,
  args: readonly string[],
  outputPath: string,
): () => Promise<string> {
  const child = spawn(command, args, { stdio: 'ignore' });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const stop = cleanup.defer(`stop ${command} (pid ${child.pid})`, async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
    await exited;
  });
  return async () => {
    await stop();
    return readFileSync(outputPath, 'utf8');
  };
}

/** The tools --strace, --perf-stat and --perf-record attach, each writing to `outputPath`. */
function toolArgs(tool: string, pid: number, outputPath: string): [string, string[]] {
  switch (tool) {
    case '--strace':
      return ['strace', ['-f', '-c', '-o', outputPath, '-p', String(pid)]];
    case '--perf-stat':
      return [
        'perf',
        [
          'stat',
          '--per-thread',
          '-e',
          'task-clock,context-switches,cpu-migrations,page-faults',
          '-o',
          outputPath,
          '-p',
          String(pid),
        ],
      ];
    default:
      return ['perf', ['record', '-e', 'cpu-clock', '-g', '-o', outputPath, '-p', String(pid)]];
  }
}

/** `calls` per syscall from strace -c's table, most frequent first. */
function parseStrace(summary: string): { syscall: string; calls: number }[] {
  const rows: { syscall: string; calls: number }[] = [];
  for (const line of summary.split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 5 || !/^[0-9.]+$/.test(fields[0]!)) continue;
    const syscall = fields[fields.length - 1]!;
    if (syscall === 'total') continue;
    rows.push({ syscall, calls: Number(fields[3]) });
  }
  return rows.sort((a, b) => b.calls - a.calls);
}

/**
 * perf stat --per-thread, per thread and in total: CPU ms per GiB moved and context switches
 * per MiB. The main thread is the one whose id is the process id; Node does not name its other
 * threads (libuv's pool, started at the first fs request, has the highest ids).
 */
function printPerThread(output: string, mib: number): void {
  const threads = new Map<string, { cpuMs: number; switches: number }>();
  for (const line of output.split('\n')) {
    const match = /^\s*(\S+)\s+([0-9.,]+)\s+(?:msec\s+)?(task-clock|context-switches)\b/.exec(line);
    if (match === null) continue;
    const entry = threads.get(match[1]!) ?? { cpuMs: 0, switches: 0 };
    const value = Number(match[2]!.replaceAll(',', ''));
    if (match[3] === 'task-clock') entry.cpuMs = value;
    else entry.switches = value;
    threads.set(match[1]!, entry);
  }
  const gib = mib / 1024;
  let cpuMs = 0;
  let switches = 0;
  console.log('  thread                   CPU ms/GiB   switches/MiB');
  for (const [thread, entry] of [...threads.entries()].sort((a, b) => b[1].cpuMs - a[1].cpuMs)) {
    cpuMs += entry.cpuMs;
    switches += entry.switches;
    if (entry.cpuMs / gib < 1) continue;
    console.log(
      `  ${thread.padEnd(22)} ${(entry.cpuMs / gib).toFixed(0).padStart(10)} ${(entry.switches / mib).toFixed(1).padStart(14)}`,
    );
  }
  console.log(
    `  ${'all threads'.padEnd(22)} ${(cpuMs / gib).toFixed(0).padStart(10)} ${(switches / mib).toFixed(1).padStart(14)}`,
  );
}

/** The daemon's --trace-gc lines so far (none without the flag). */
function gcLines(stdoutPath: string): string[] {
  try {
    return readFileSync(stdoutPath, 'utf8')
      .split('\n')
      .filter((line) => / ms: (Scavenge|Mark-Compact|Mark-Sweep)/.test(line));
  } catch {
    return [];
  }
}

/** Collections during the timed passes, per kind: count per GiB moved and pause time. */
function printGcCounts(
  before: readonly string[],
  after: readonly string[],
  mib: number,
  seconds: number,
): void {
  const during = after.slice(before.length);
  console.log(
    `\ngarbage collections during the timed passes (${mib.toFixed(0)} MiB in ${seconds.toFixed(1)} s):`,
  );
  for (const kind of ['Scavenge', 'Mark-Compact']) {
    const lines = during.filter((line) => line.includes(` ${kind} `));
    const pauseMs = lines.reduce((sum, line) => sum + Number(/MB, ([0-9.]+) \//.exec(line)?.[1] ?? 0), 0);
    console.log(
      `  ${kind.padEnd(13)} ${(lines.length / (mib / 1024)).toFixed(0).padStart(6)} per GiB, ${pauseMs.toFixed(0)} ms paused`,
    );
  }
}

/** The profile's figures over the timed passes only (start-up and warm-up left out). */
function printProfile(profileDir: string, window: ProfileWindow): void {
  const file = readdirSync(profileDir).find((name) => name.endsWith('.cpuprofile'));
  if (file === undefined) throw new Error(`fssd wrote no profile in ${profileDir}`);
  const profile = JSON.parse(readFileSync(join(profileDir, file), 'utf8')) as CpuProfile;
  if (window.fromUs < profile.startTime || window.toUs > profile.endTime) {
    throw new Error('the passes fall outside the profile: the clocks differ');
  }
  const summary = summariseProfile(profile, 30, window);
  console.log(
    `\nprofile ${join(profileDir, file)}, timed passes only: ${(summary.durationMs / 1000).toFixed(1)} s, ` +
      `main thread busy ${(summary.busyShare * 100).toFixed(0)}%`,
  );
  console.log('\nself share of busy samples by package:');
  for (const pkg of summary.packages.slice(0, 12)) {
    console.log(`  ${(pkg.selfShare * 100).toFixed(1).padStart(5)}%  ${pkg.name}`);
  }
  console.log('\ntop functions: self% total% function (where)');
  for (const fn of summary.functions) {
    console.log(
      `  ${(fn.selfShare * 100).toFixed(1).padStart(5)} ${(fn.totalShare * 100).toFixed(1).padStart(5)}  ${fn.name} (${fn.where})`,
    );
  }
}

async function printToolSummary(
  tool: string,
  output: string,
  outputPath: string,
  mib: number,
): Promise<void> {
  console.log(`\n${tool.slice(2)} over the timed passes (${mib.toFixed(0)} MiB moved), ${outputPath}:`);
  if (tool === '--strace') {
    console.log('syscalls per MiB, all threads of fssd:');
    for (const row of parseStrace(output).slice(0, 15))
      console.log(`  ${(row.calls / mib).toFixed(2).padStart(8)}  ${row.syscall}`);
  } else if (tool === '--perf-stat') {
    printPerThread(output, mib);
  } else {
    const report = await runCommand('perf', [
      'report',
      '-i',
      outputPath,
      '--no-children',
      '--sort',
      'comm,dso,sym',
      '--stdio',
      '-g',
      'none',
      '--percent-limit',
      '0.7',
    ]);
    console.log(
      report.stdout
        .split('\n')
        .filter((line) => line !== '' && !line.startsWith('#'))
        .slice(0, 45)
        .join('\n'),
    );
  }
}

async function main(): Promise<void> {
  const workload = process.argv[2];
  if (!isWorkload(workload)) {
    throw new Error(
      `usage: bench/profile.ts WORKLOAD [--strace]; WORKLOAD is one of ${WORKLOADS.join(', ')}`,
    );
  }
  const tool = process.argv
    .slice(3)
    .find((arg) => ['--strace', '--perf-stat', '--perf-record'].includes(arg));
  const config = readConfig(process.env);
  const passes = Number(process.env['FSS_PROFILE_PASSES'] ?? 5);
  const profileDir = process.env['FSS_PROFILE_DIR'] ?? mkdtempSync('/tmp/fss-profile-');
  const cleanup = new Cleanup();
  process.once('SIGINT', () => void cleanup.runAll().then(() => process.exit(130)));
  try {
    const sandbox = await Sandbox.create(config, cleanup);
    const image = await sandbox.makeImage('fss.img', config.imageBytes, 1);
    const nodeFlags = [
      ...(process.env['FSS_PROFILE_NODE_FLAGS']?.split(' ').filter((flag) => flag !== '') ?? []),
      ...(tool === '--perf-record' ? ['--perf-basic-prof'] : []),
    ];
    // The CPU profiler's signals (a getpid, tgkill and sigreturn per sample) would show in
    // strace and its threads in perf: it runs only when no tool is attached.
    const fss = await FssdSession.start(cleanup, sandbox, {
      name: 'profile',
      cpuProfileDir: tool === undefined ? profileDir : undefined,
      nodeFlags,
      stdoutPath: join(profileDir, 'fssd.stdout'),
    });
    const origin = await fss.addOrigin(image.path, 'bench');
    const writeFio = () =>
      runFio({
        target: { kind: 'nbd', socketPath: origin.socketPath },
        rw: 'write',
        blockBytes: MiB,
        queueDepth: 16,
        sizeBytes: config.writeBytes,
      }).then((result) => result.mibPerSecond);
    let units: Unit[] = [];
    const configure = async (count: number) => {
      for (let unit = 0; unit < count; unit++) units.push(await fss.configure(unit, origin));
    };
    const unconfigureAll = async () => {
      for (const unit of units) await fss.unconfigure(unit);
      units = [];
    };
    const pass = async (): Promise<{ mibPerSecond: number; bytes: number }> => {
      switch (workload) {
        case 'write':
          return { mibPerSecond: await writeFio(), bytes: config.writeBytes };
        case 'first-touch':
        case 'four': {
          await configure(workload === 'four' ? 4 : 1);
          const mibPerSecond = await writeFio();
          await unconfigureAll();
          return { mibPerSecond, bytes: config.writeBytes };
        }
        case 'overwrite':
          if (units.length === 0) {
            await configure(1);
            await writeFio();
          }
          return { mibPerSecond: await writeFio(), bytes: config.writeBytes };
        case 'rand4k': {
          const result = await runFio({
            target: { kind: 'nbd', socketPath: origin.socketPath },
            rw: 'randwrite',
            blockBytes: 4096,
            queueDepth: 16,
            sizeBytes: config.imageBytes,
            seconds: config.fioSeconds,
          });
          return { mibPerSecond: result.mibPerSecond, bytes: result.mibPerSecond * MiB * config.fioSeconds };
        }
        case 'read':
          return {
            mibPerSecond: await nbdcopyRead(origin.socketPath, config.imageBytes, 4),
            bytes: config.imageBytes,
          };
        case 'untouched':
        case 'copied': {
          if (units.length === 0) {
            await configure(1);
            if (workload === 'copied') {
              await runFio({
                target: { kind: 'nbd', socketPath: origin.socketPath },
                rw: 'write',
                blockBytes: MiB,
                queueDepth: 16,
                sizeBytes: config.imageBytes,
              });
              await sleepMs(1000);
            }
          }
          return {
            mibPerSecond: await nbdcopyRead(units[0]!.socketPath, config.imageBytes, 4),
            bytes: config.imageBytes,
          };
        }
      }
    };
    await pass(); // warm-up
    const toolOutput = join(profileDir, `${tool?.slice(2) ?? 'none'}.out`);
    const stopTool =
      tool === undefined ? undefined : attach(cleanup, ...toolArgs(tool, fss.pid, toolOutput), toolOutput);
    if (tool !== undefined) await sleepMs(1000);
    let bytes = 0;
    const fromUs = Number(process.hrtime.bigint() / 1000n);
    const gcLinesBefore = gcLines(join(profileDir, 'fssd.stdout'));
    for (let index = 0; index < passes; index++) {
      const result = await pass();
      bytes += result.bytes;
      console.log(`pass ${index + 1}: ${result.mibPerSecond.toFixed(0)} MiB/s`);
    }
    const toUs = Number(process.hrtime.bigint() / 1000n);
    const gcLinesAfter = gcLines(join(profileDir, 'fssd.stdout'));
    if (nodeFlags.includes('--trace-gc'))
      printGcCounts(gcLinesBefore, gcLinesAfter, bytes / MiB, (toUs - fromUs) / 1e6);
    const toolSummary = await stopTool?.();
    await unconfigureAll();
    await fss.stop();
    if (tool === undefined) printProfile(profileDir, { fromUs, toUs });
    if (toolSummary !== undefined) await printToolSummary(tool!, toolSummary, toolOutput, bytes / MiB);
  } finally {
    await cleanup.runAll();
  }
}

main().catch((error: unknown) => {
  process.stderr.write(
    `profile: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
  );
  process.exitCode = 1;
});
