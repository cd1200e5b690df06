/**
 * Sequential throughput of our server beside nbdkit's file plugin, on the same 1 GiB image in
 * the same run (`pnpm bench` in this package; not a test).
 *
 *   read   nbdcopy URI null:         the whole image, discarded
 *   write  nbdcopy SOURCE URI        the whole image from a page-cached source file
 *
 * Two more rows read through the engine, from a second fss-nbd serving the same image as an
 * origin with one start-up snapshot: the origin export (Origin over the file) and the snapshot
 * export (nothing copied yet, so every read goes through the snapshot to the origin). They
 * show the engine's read overhead; the ratio is still against nbdkit file.
 *
 * Each measurement runs RUNS times, alternating servers so neither gets a warmer cache, and
 * the median is kept. Both servers are separate processes on unix sockets with their default
 * settings (ours: the fss-nbd binary from source, with UV_THREADPOOL_SIZE=16 as the built
 * binary sets it, i.e. nbdkit's default of 16 threads; nbdkit: `nbdkit -U SOCKET file IMAGE`), and
 * nbdcopy picks its own connection count from CAN_MULTI_CONN, which both advertise.
 * Environment: FSS_BENCH_MIB (image size, default 1024), FSS_BENCH_RUNS (default 3).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const MiB = 1024 * 1024;
const imageMiB = Number(process.env['FSS_BENCH_MIB'] ?? 1024);
const runs = Number(process.env['FSS_BENCH_RUNS'] ?? 3);
const cliPath = fileURLToPath(new URL('../src/cli.ts', import.meta.url));
/** From source (tsx) the binary cannot size libuv's pool itself: see src/cli.ts. */
const serverEnvironment = { ...process.env, UV_THREADPOOL_SIZE: process.env['UV_THREADPOOL_SIZE'] ?? '16' };

function makeImage(path: string, seed: number): void {
  const chunk = Buffer.alloc(16 * MiB);
  for (let index = 0; index < chunk.length; index += 4)
    chunk.writeUInt32LE((index * 2654435761 + seed) >>> 0, index);
  const fd = openSync(path, 'w');
  for (let written = 0; written < imageMiB * MiB; written += chunk.length) {
    chunk.writeUInt32LE(written / chunk.length, 0); // no two chunks alike
    writeSync(fd, chunk);
  }
  closeSync(fd);
}

async function waitForSocket(path: string, child: ChildProcess): Promise<void> {
  for (let waited = 0; waited < 200; waited++) {
    if (existsSync(path)) return;
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`no socket at ${path}`);
}

function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

function seconds(command: string, args: string[]): number {
  const start = process.hrtime.bigint();
  execFileSync(command, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  return Number(process.hrtime.bigint() - start) / 1e9;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'fss-nbd-bench-'));
  try {
    const image = join(dir, 'image.img');
    const source = join(dir, 'source.img');
    makeImage(image, 1);
    makeImage(source, 2);
    const oursSocket = join(dir, 'fss.sock');
    const nbdkitSocket = join(dir, 'nbdkit.sock');
    const ours = spawn(
      process.execPath,
      ['--conditions=@fss/source', '--import', 'tsx', cliPath, '-s', oursSocket, image],
      { stdio: ['ignore', 'ignore', 'inherit'], env: serverEnvironment },
    );
    const engineSocket = join(dir, 'engine.sock');
    const snapshotSocket = join(dir, 'fss0.sock');
    const engine = spawn(
      process.execPath,
      [
        '--conditions=@fss/source',
        '--import',
        'tsx',
        cliPath,
        '-s',
        engineSocket,
        '--snapshot',
        `fss0=${snapshotSocket}`,
        '-r',
        image,
      ],
      { stdio: ['ignore', 'ignore', 'inherit'], env: serverEnvironment },
    );
    const nbdkit = spawn('nbdkit', ['-f', '-U', nbdkitSocket, 'file', image], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    try {
      await waitForSocket(oursSocket, ours);
      await waitForSocket(nbdkitSocket, nbdkit);
      await waitForSocket(snapshotSocket, engine);
      const uri = { fss: `nbd+unix:///?socket=${oursSocket}`, nbdkit: `nbd+unix:///?socket=${nbdkitSocket}` };
      const engineUri = {
        origin: `nbd+unix:///?socket=${engineSocket}`,
        snapshot: `nbd+unix:///?socket=${snapshotSocket}`,
      };
      const results: Record<string, Record<'fss' | 'nbdkit', number[]>> = {
        read: { fss: [], nbdkit: [] },
        write: { fss: [], nbdkit: [] },
        'read, origin export (1 snapshot)': { fss: [], nbdkit: [] },
        'read, snapshot export': { fss: [], nbdkit: [] },
      };
      // One untimed read through every server first: it warms the page cache for the image
      // (both servers read the same file) and our JIT, so every timed run is steady state.
      for (const warm of [uri.nbdkit, uri.fss, engineUri.origin, engineUri.snapshot])
        seconds('nbdcopy', [warm, 'null:']);
      seconds('cat', [source]);
      for (let run = 0; run < runs; run++) {
        const order: ('fss' | 'nbdkit')[] = run % 2 === 0 ? ['fss', 'nbdkit'] : ['nbdkit', 'fss'];
        for (const server of order) results.read![server].push(seconds('nbdcopy', [uri[server], 'null:']));
        for (const server of order) results.write![server].push(seconds('nbdcopy', [source, uri[server]]));
        results['read, origin export (1 snapshot)']!.fss.push(
          seconds('nbdcopy', [engineUri.origin, 'null:']),
        );
        results['read, snapshot export']!.fss.push(seconds('nbdcopy', [engineUri.snapshot, 'null:']));
      }
      results['read, origin export (1 snapshot)']!.nbdkit = results.read!.nbdkit;
      results['read, snapshot export']!.nbdkit = results.read!.nbdkit;
      const rows = Object.entries(results).map(([operation, times]) => {
        const fss = imageMiB / median(times.fss);
        const kit = imageMiB / median(times.nbdkit);
        return { operation, fss, kit, ratio: fss / kit };
      });
      console.log(`\nSequential nbdcopy, ${imageMiB} MiB image, median of ${runs} runs (MiB/s)\n`);
      console.log('| operation | fss-nbd | nbdkit file | fss / nbdkit |');
      console.log('|---|---:|---:|---:|');
      for (const row of rows) {
        console.log(
          `| ${row.operation} | ${row.fss.toFixed(0)} | ${row.kit.toFixed(0)} | ${row.ratio.toFixed(2)}× |`,
        );
      }
      const read = rows.find((row) => row.operation === 'read')!;
      console.log(
        `\nread target ≥ 0.70× nbdkit: ${read.ratio >= 0.7 ? 'met' : 'NOT met'} (${read.ratio.toFixed(2)}×)`,
      );
    } finally {
      await stop(ours);
      await stop(engine);
      await stop(nbdkit);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

void main();
