/**
 * `fss dump` and `fss backup` end to end: a real fssd (from sources) serving an image origin,
 * writes through the origin's NBD export after the snapshot, and the programs run as a user
 * runs them. Every copy is compared byte for byte with the model (the image as it was at the
 * snapshot, kept in memory from the writes the test made), and independently with
 * `qemu-img compare`; sparseness is checked with stat's allocated blocks; progress JSON lines
 * are parsed; a snapshot that turns invalid mid-way, and a SIGTERM, leave no FILE behind.
 * The README's incremental backup with stock tools (nbdcopy, nbdfuse, dd) runs as printed.
 */
import { spawn } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  binArgs,
  findProgram,
  hasProgram,
  isRoot,
  modelRuns,
  NbdClient,
  parseNbdinfoMap,
  pattern,
  runCommand,
  Sandbox,
} from '@fss/test-utils';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const MiB = 1024 * 1024;
const IMAGE_BYTES = 16 * MiB;
/** What a filesystem may allocate beyond the data blocks (ext4 extent tree blocks). */
const METADATA_SLACK_BYTES = 64 * 1024;
const hasQemuImg = hasProgram('qemu-img');
if (!hasQemuImg)
  console.warn('SKIPPED qemu-img checks of fss dump: qemu-img not installed (scripts/install.sh)');

let sandbox: Sandbox;
beforeEach(async () => {
  sandbox = await Sandbox.create();
});
afterEach(async () => {
  await sandbox.cleanup();
});

interface Write {
  readonly offset: number;
  readonly data: Buffer;
}

/** Random writes: a few MiB-scale extents anywhere, sector aligned, so most of the image stays a hole. */
function randomWrites(seed: number, count: number, size = IMAGE_BYTES): Write[] {
  const write = fc
    .tuple(
      fc.integer({ min: 0, max: size / 512 - 1 }),
      fc.integer({ min: 1, max: 160 }),
      fc.integer({ min: 1, max: 250 }),
    )
    .map(([sector, sectors, fill]) => {
      const offset = sector * 512;
      const length = Math.min(sectors * 512, size - offset);
      // Patterned data with a zero stretch inside: holes inside written data stay holes too.
      const data = Buffer.from(pattern(length, fill));
      if (length > 16 * 1024) data.fill(0, 4096, 12 * 1024);
      return { offset, data };
    });
  return fc.sample(write, { seed, numRuns: count });
}

function apply(model: Buffer, writes: readonly Write[]): void {
  for (const { offset, data } of writes) data.copy(model, offset);
}

/**
 * One write at a time: the models apply the writes in order, and NBD leaves it to the server
 * in which order overlapping writes in flight land (fssd's copy-on-write may release the
 * writers waiting for one cluster's copy in any order). Sent together, overlapping random
 * writes left the image unlike the model now and then (the stock-tool test's old flake).
 */
async function writeThrough(socket: string, writes: readonly Write[]): Promise<void> {
  const client = await NbdClient.connect(socket);
  try {
    for (const { offset, data } of writes) await client.write(offset, data);
    await client.flush();
  } finally {
    client.disconnect();
    await client.whenClosed();
  }
}

/** An origin `image` with `before` written, snapshotted as fss0, then `after` written: the model is the image at the snapshot. */
async function snapshotWithWrites(
  before: readonly Write[],
  after: readonly Write[],
  configure: string[] = [],
  size = IMAGE_BYTES,
  daemonEnv: NodeJS.ProcessEnv = {},
): Promise<{ model: Buffer; origin: string }> {
  writeFileSync(sandbox.path('image'), Buffer.alloc(0));
  await runCommand('truncate', ['-s', String(size), sandbox.path('image')]);
  // The first command starts fssd, with daemonEnv.
  expect(
    (await sandbox.run('fss', ['origin', 'add', './image'], { env: { ...sandbox.env, ...daemonEnv } }))
      .status,
  ).toBe(0);
  const origin = `${sandbox.runDir}/origin/image.sock`;
  await writeThrough(origin, before);
  const configured = await sandbox.run('fssconfig', ['-c', 'fss0', './image', './store', ...configure]);
  expect(configured.stderr).toBe('');
  expect(configured.status).toBe(0);
  const model = Buffer.alloc(size);
  apply(model, before);
  await writeThrough(origin, after);
  return { model, origin };
}

/** Bytes the filesystem allocated to `path` (st_blocks is in 512-byte units). */
function allocatedBytes(path: string): number {
  return statSync(path).blocks * 512;
}

/** 4 KiB blocks of `model` that are not all zero: what a sparse copy must allocate at most. */
function dataBytes(model: Buffer): number {
  let blocks = 0;
  const zero = Buffer.alloc(4096);
  for (let at = 0; at < model.length; at += 4096)
    if (!model.subarray(at, at + 4096).equals(zero)) blocks += 1;
  return blocks * 4096;
}

function progressLines(stderr: string): Record<string, unknown>[] {
  return stderr
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

/** Every phase's lines: bytes never decrease, the last is done with bytes = totalBytes. */
function expectWellFormedProgress(
  lines: Record<string, unknown>[],
  phases: string[],
  totalBytes: number,
  unit = 'fss0',
): void {
  expect([...new Set(lines.map((line) => line['phase']))]).toEqual(phases);
  for (const phase of phases) {
    const mine = lines.filter((line) => line['phase'] === phase);
    for (let index = 1; index < mine.length; index += 1) {
      expect(mine[index]?.['bytes'] as number).toBeGreaterThanOrEqual(mine[index - 1]?.['bytes'] as number);
    }
    expect(mine.filter((line) => line['done'] === true)).toHaveLength(1);
    expect(mine.at(-1)).toMatchObject({
      done: true,
      bytes: totalBytes,
      totalBytes,
      unit,
      secondsLeft: 0,
    });
  }
}

function leftovers(): string[] {
  return readdirSync(sandbox.dir).filter((name) => name.includes('fss-partial'));
}

describe('fss dump', () => {
  it('writes the snapshot as it was, sparse, while the origin changed after it (raw FILE, stdout, qemu-img compare)', async () => {
    const before = randomWrites(1, 12);
    const { model } = await snapshotWithWrites(before, randomWrites(2, 40));
    const dumped = await sandbox.run('fss', ['dump', '--progress=none', 'fss0', 'dump.img']);
    expect(dumped.stderr).toBe('');
    expect(dumped.status).toBe(0);
    const file = sandbox.path('dump.img');
    expect(statSync(file).size).toBe(IMAGE_BYTES);
    expect(readFileSync(file).equals(model)).toBe(true);
    expect(allocatedBytes(file)).toBeLessThanOrEqual(dataBytes(model) + METADATA_SLACK_BYTES);
    expect(allocatedBytes(file)).toBeLessThan(IMAGE_BYTES / 2);
    expect(leftovers()).toEqual([]);

    writeFileSync(sandbox.path('model.img'), model);
    if (hasQemuImg) {
      const compared = await runCommand('qemu-img', [
        'compare',
        '-f',
        'raw',
        '-F',
        'raw',
        file,
        sandbox.path('model.img'),
      ]);
      expect(compared.stdout).toContain('Images are identical.');
      expect(compared.status).toBe(0);
    }

    const streamed = await runCommand(
      'sh',
      [
        '-c',
        `"$0" "$@" > stream.img`,
        process.execPath,
        ...binArgs('fss'),
        'dump',
        '--progress=none',
        'fss0',
        '-',
      ],
      { cwd: sandbox.dir, env: sandbox.env },
    );
    expect(streamed.status).toBe(0);
    expect(readFileSync(sandbox.path('stream.img')).equals(model)).toBe(true);
  });

  it('prints JSON progress lines: monotonic, the last one done with bytes = the size', async () => {
    await snapshotWithWrites(randomWrites(3, 4), randomWrites(4, 4));
    const dumped = await sandbox.run('fss', ['dump', '--progress=json', 'fss0', 'dump.img'], {
      env: { ...sandbox.env, FSS_PROGRESS_INTERVAL_MS: '0' },
    });
    expect(dumped.status).toBe(0);
    const lines = progressLines(dumped.stderr);
    expect(lines.length).toBeGreaterThan(IMAGE_BYTES / MiB / 2); // one line per 1 MiB piece, about
    expectWellFormedProgress(lines, ['copy'], IMAGE_BYTES);
    expect(lines[0]).toMatchObject({ op: 'dump', bytes: 0, done: false });
  });

  it.skipIf(!hasQemuImg)(
    '--format qcow2 goes through qemu-img; qemu-img compare finds it identical to the model',
    async () => {
      const { model } = await snapshotWithWrites(randomWrites(5, 8), randomWrites(6, 20));
      writeFileSync(sandbox.path('model.img'), model);
      const dumped = await sandbox.run('fss', [
        'dump',
        '--format',
        'qcow2',
        '--progress=json',
        'fss0',
        'dump.qcow2',
      ]);
      expect(dumped.status).toBe(0);
      expect(progressLines(dumped.stderr).at(-1)).toMatchObject({ done: true, bytes: IMAGE_BYTES });
      const info = await runCommand('qemu-img', ['info', '--output=json', sandbox.path('dump.qcow2')]);
      expect(JSON.parse(info.stdout)).toMatchObject({ format: 'qcow2', 'virtual-size': IMAGE_BYTES });
      const compared = await runCommand('qemu-img', [
        'compare',
        '-F',
        'raw',
        sandbox.path('dump.qcow2'),
        sandbox.path('model.img'),
      ]);
      expect(compared.stdout).toContain('Images are identical.');
    },
  );

  it('without qemu-img, --format qcow2 fails with ENOENT saying what to install, and leaves no FILE', async () => {
    await snapshotWithWrites([], []);
    const dumped = await sandbox.run('fss', ['dump', '--format=qcow2', 'fss0', 'dump.qcow2'], {
      env: { ...sandbox.env, FSS_QEMU_IMG: sandbox.path('no-such-qemu-img') },
    });
    expect(dumped.status).toBe(1);
    expect(dumped.stderr).toContain('fss: dump fss0: No such file or directory\n');
    expect(dumped.stderr).toContain('--format qcow2 needs qemu-img (Debian: apt-get install qemu-utils)');
    expect(existsSync(sandbox.path('dump.qcow2'))).toBe(false);
    expect(leftovers()).toEqual([]);
  });

  it('a snapshot that turns invalid mid-way: exit 1 with the reason, no FILE, an older FILE kept', async () => {
    // fssd invalidates every snapshot of an origin written behind its back (bypass-watch.ts):
    // the test writes the image directly once the dump is under way, and fssd checks often.
    await snapshotWithWrites([], [], [], 256 * MiB, { FSS_BYPASS_CHECK_MS: '10' });
    writeFileSync(sandbox.path('dump.img'), 'the previous dump\n');
    const child = spawn(
      process.execPath,
      [...binArgs('fss'), 'dump', '--progress=json', 'fss0', 'dump.img'],
      {
        cwd: sandbox.dir,
        env: { ...sandbox.env, FSS_PROGRESS_INTERVAL_MS: '0' },
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let stderr = '';
    let bypass: number | undefined;
    child.stderr.setEncoding('utf8').on('data', (text: string) => {
      stderr += text;
      if (bypass === undefined && /"bytes":[1-9]/.test(stderr)) {
        bypass = openSync(sandbox.path('image'), 'r+');
        writeSync(bypass, Buffer.from('written behind fss'), 0, 18, 0);
      }
    });
    const status = await new Promise<number | null>((resolve) => child.on('close', resolve));
    if (bypass !== undefined) closeSync(bypass);
    expect(bypass).toBeDefined();
    expect(status).toBe(1);
    expect(stderr).toContain(
      'fss: dump fss0: No such device or address\nfss: dump fss0: fss0: snapshot invalid: ',
    );
    expect(stderr).not.toMatch(/"done":true/);
    expect(readFileSync(sandbox.path('dump.img'), 'utf8')).toBe('the previous dump\n');
    expect(leftovers()).toEqual([]);
    const status2 = await sandbox.run('fss', ['status']);
    expect(status2.stdout).toMatch(/fss0: .*invalid \(/);
  });

  it('SIGTERM mid-way: exit 143, no FILE, no partial file', async () => {
    await snapshotWithWrites([], [], [], 256 * MiB);
    const child = spawn(
      process.execPath,
      [...binArgs('fss'), 'dump', '--progress=json', 'fss0', 'dump.img'],
      {
        cwd: sandbox.dir,
        env: { ...sandbox.env, FSS_PROGRESS_INTERVAL_MS: '0' },
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let stderr = '';
    let killed = false;
    child.stderr.setEncoding('utf8').on('data', (text: string) => {
      stderr += text;
      if (!killed && /"bytes":[1-9]/.test(stderr)) {
        killed = true; // once: a second SIGTERM after the clean-up would find no handler
        child.kill('SIGTERM');
      }
    });
    const status = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(status).toBe(143);
    expect(stderr).toContain('fss: dump fss0: stopped by SIGTERM');
    expect(existsSync(sandbox.path('dump.img'))).toBe(false);
    expect(leftovers()).toEqual([]);
  });

  it('bad usage prints the usage line, exit 1; a bad unit or FILE is a clear error, exit 1', async () => {
    const usage = await sandbox.run('fss', ['dump', 'fss0']);
    expect(usage).toMatchObject({ status: 1, stdout: '' });
    expect(usage.stderr).toBe(
      'usage: fss dump [--format raw|qcow2] [--progress auto|bar|json|none] fssN FILE|-\n',
    );
    expect((await sandbox.run('fss', ['dump', '--format=vmdk', 'fss0', 'x'])).status).toBe(1);
    expect((await sandbox.run('fss', ['dump', '--progress=loud', 'fss0', 'x'])).status).toBe(1);
    await snapshotWithWrites([], []);
    const unconfigured = await sandbox.run('fss', ['dump', 'fss1', 'x.img']);
    expect(unconfigured).toMatchObject({
      status: 1,
      stderr: 'fss: dump fss1: No such device or address\nfss: dump fss1: fss1: not configured\n',
    });
    const notUnit = await sandbox.run('fss', ['dump', 'disk0', 'x.img']);
    expect(notUnit.stderr).toBe(
      'fss: dump disk0: Invalid argument\nfss: dump disk0: not a unit name (fssN): disk0\n',
    );
    mkdirSync(sandbox.path('adir'));
    const directory = await sandbox.run('fss', ['dump', 'fss0', 'adir']);
    expect(directory.status).toBe(1);
    expect(directory.stderr).toContain('fss: dump fss0: Invalid argument\n');
    expect(directory.stderr).toContain('is not a regular file');
    expect(existsSync(sandbox.path('x.img'))).toBe(false);
  });
});

describe('fss backup (full)', () => {
  it('--verify: the backup equals the model, sparse, with copy and verify progress', async () => {
    const { model } = await snapshotWithWrites(randomWrites(7, 10), randomWrites(8, 30));
    const done = await sandbox.run('fss', ['backup', '--verify', '--progress=json', 'fss0', 'full.img']);
    expect(done.status).toBe(0);
    expectWellFormedProgress(progressLines(done.stderr), ['copy', 'verify'], IMAGE_BYTES);
    const file = sandbox.path('full.img');
    expect(readFileSync(file).equals(model)).toBe(true);
    expect(allocatedBytes(file)).toBeLessThanOrEqual(dataBytes(model) + METADATA_SLACK_BYTES);
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it('refuses - (backup writes a FILE) with EINVAL', async () => {
    await snapshotWithWrites([], []);
    const refused = await sandbox.run('fss', ['backup', 'fss0', '-']);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toBe(
      'fss: backup fss0: Invalid argument\nfss: backup fss0: backup writes a FILE (fss dump writes stdout)\n',
    );
  });
});

describe('fss backup --since (incremental)', () => {
  it('applied to the previous full backup, it equals the newer snapshot (model, qemu-img compare), holes kept', async () => {
    const { model: model0, origin } = await snapshotWithWrites(randomWrites(9, 10), []);
    const full = await sandbox.run('fss', ['backup', '--progress=none', 'fss0', 'backup.img']);
    expect(full.status).toBe(0);
    // Between fss0 and fss1: random writes, zeros over data (data that became zeros) and
    // zeros over a hole (must stay a hole); after fss1: writes the backup must not see.
    const between = [
      ...randomWrites(10, 30),
      { offset: 8 * MiB, data: Buffer.alloc(256 * 1024) },
      { offset: randomWrites(9, 1)[0]?.offset ?? 0, data: Buffer.alloc(8192) },
    ];
    await writeThrough(origin, between);
    const model1 = Buffer.from(model0);
    apply(model1, between);
    expect((await sandbox.run('fssconfig', ['-c', 'fss1', './image', './store1'])).status).toBe(0);
    await writeThrough(origin, randomWrites(11, 20));

    const changed = await sandbox.run('fss', ['changed', '--json', '--since', 'fss0', 'fss1']);
    expect(changed.status).toBe(0);
    const extents = (JSON.parse(changed.stdout) as { extents: { length: number }[] }).extents;
    const changedBytes = extents.reduce((sum, extent) => sum + extent.length, 0);
    expect(changedBytes).toBeGreaterThan(0);
    expect(changedBytes).toBeLessThan(IMAGE_BYTES);

    const incremental = await sandbox.run('fss', [
      'backup',
      '--since',
      'fss0',
      '--verify',
      '--progress=json',
      'fss1',
      'backup.img',
    ]);
    expect(incremental.stderr).not.toContain('fss:');
    expect(incremental.status).toBe(0);
    expectWellFormedProgress(progressLines(incremental.stderr), ['copy', 'verify'], changedBytes, 'fss1');
    const file = sandbox.path('backup.img');
    expect(statSync(file).size).toBe(IMAGE_BYTES);
    expect(readFileSync(file).equals(model1)).toBe(true);
    expect(allocatedBytes(file)).toBeLessThanOrEqual(
      dataBytes(model1) + 256 * 1024 + 8192 + METADATA_SLACK_BYTES,
    );
    if (hasQemuImg) {
      writeFileSync(sandbox.path('model1.img'), model1);
      const compared = await runCommand('qemu-img', [
        'compare',
        '-f',
        'raw',
        '-F',
        'raw',
        file,
        sandbox.path('model1.img'),
      ]);
      expect(compared.stdout).toContain('Images are identical.');
    }
  });

  it('refuses a FILE of the wrong size and a --since that is not older, leaving FILE as it was', async () => {
    await snapshotWithWrites(randomWrites(12, 3), []);
    expect((await sandbox.run('fssconfig', ['-c', 'fss1', './image', './store1'])).status).toBe(0);
    writeFileSync(sandbox.path('small.img'), 'not a backup\n');
    const wrongSize = await sandbox.run('fss', ['backup', '--since', 'fss0', 'fss1', 'small.img']);
    expect(wrongSize.status).toBe(1);
    expect(wrongSize.stderr).toContain('fss: backup fss1: Invalid argument\n');
    expect(wrongSize.stderr).toContain(`small.img is 13 bytes, the snapshot ${IMAGE_BYTES}`);
    expect(readFileSync(sandbox.path('small.img'), 'utf8')).toBe('not a backup\n');
    const missing = await sandbox.run('fss', ['backup', '--since', 'fss0', 'fss1', 'none.img']);
    expect(missing.stderr).toContain('fss: backup fss1: No such file or directory\n');
    await runCommand('truncate', ['-s', String(IMAGE_BYTES), sandbox.path('right.img')]);
    const newer = await sandbox.run('fss', ['backup', '--since', 'fss1', 'fss0', 'right.img']);
    expect(newer.status).toBe(1);
    expect(newer.stderr).toContain('fss: backup fss0: Invalid argument\n');
    expect(statSync(sandbox.path('right.img')).blocks).toBe(0);
  });
});

/**
 * The README's stock-tool recipe, as printed there: the sh block after "The same with stock
 * tools only", with its backup file and mount point moved into the sandbox.
 */
function stockRecipe(): string {
  const readme = readFileSync(fileURLToPath(new URL('../../../README.md', import.meta.url)), 'utf8');
  const after = readme.slice(readme.indexOf('The same with stock tools only'));
  const block = /```sh\n([\s\S]*?)```/.exec(after)?.[1];
  if (block === undefined) throw new Error('README: no stock-tool recipe');
  return block
    .replaceAll('/backup/disk.img', sandbox.path('stock.img'))
    .replaceAll('/tmp/fss1', sandbox.path('fss1'));
}

/**
 * A directory for PATH: `fss` running the sources (the recipe calls `fss changed`), and an
 * `nbdfuse` that starts two seconds late, as on a loaded machine: a recipe that reads before
 * nbdfuse serves fails every time, not once in a while.
 */
function stockToolsOnPath(): string {
  const bin = sandbox.path('bin');
  mkdirSync(bin);
  const fss = [process.execPath, ...binArgs('fss')].map((arg) => `"${arg}"`).join(' ');
  writeFileSync(`${bin}/fss`, `#!/bin/sh\nexec ${fss} "$@"\n`, { mode: 0o755 });
  const nbdfuse = findProgram('nbdfuse'); // found before the wrapper is on PATH
  if (nbdfuse === undefined) throw new Error('nbdfuse is not on PATH');
  writeFileSync(`${bin}/nbdfuse`, `#!/bin/sh\nsleep 2\nexec "${nbdfuse}" "$@"\n`, { mode: 0o755 });
  return bin;
}

/** Offsets and lengths of the clusters `writes` touch, adjacent clusters merged. */
function touchedExtents(writes: readonly Write[], clusterSize: number): { offset: number; length: number }[] {
  const touched = new Array<number>(Math.ceil(IMAGE_BYTES / clusterSize)).fill(0);
  for (const { offset, data } of writes) {
    const last = Math.floor((offset + data.length - 1) / clusterSize);
    for (let cluster = Math.floor(offset / clusterSize); cluster <= last; cluster++) touched[cluster] = 1;
  }
  return modelRuns(touched, clusterSize, IMAGE_BYTES)
    .filter((run) => run.type === 1)
    .map(({ offset, length }) => ({ offset, length }));
}

const STOCK_TOOLS = ['bash', 'dd', 'nbdcopy', 'nbdfuse', 'fusermount3', 'nbdinfo', 'qemu-img'];
const stockMissing = STOCK_TOOLS.filter((tool) => !hasProgram(tool));
const stockSkip = !isRoot
  ? 'needs root (nbdfuse mounts; CI runs as root)'
  : !existsSync('/dev/fuse')
    ? 'needs /dev/fuse'
    : stockMissing.length > 0
      ? `needs ${stockMissing.join(', ')} (scripts/install.sh)`
      : undefined;
if (stockSkip !== undefined) console.warn(`SKIPPED stock-tool incremental backup: ${stockSkip}`);

/**
 * Lazily unmounts what a failed recipe left mounted in the sandbox (before its removal): a
 * nbdfuse still serving would keep the script's output open, and the mount would outlive the
 * test.
 */
async function unmountLeftovers(): Promise<void> {
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const mountPoint = line.split(' ')[4];
    if (mountPoint?.startsWith(`${sandbox.dir}/`)) await runCommand('fusermount3', ['-u', '-z', mountPoint]);
  }
}

describe.skipIf(stockSkip !== undefined)('incremental backup with stock tools (root: nbdfuse)', () => {
  afterEach(unmountLeftovers); // runs before the sandbox's clean-up (after hooks run innermost first)
  it("the README's nbdcopy + nbdfuse/dd recipe gives the newer snapshot; its extents are the dirty bitmap's", async () => {
    const before = [...randomWrites(13, 8), { offset: 9 * MiB, data: Buffer.from(pattern(MiB, 99)) }];
    const { model: model0, origin } = await snapshotWithWrites(before, []);
    // Between fss0 and fss1: random writes, a 3 MiB one (an extent dd copies in several
    // blocks), zeros over a whole extent of data (dd with conv=sparse would skip that block
    // and leave the old data) and zeros over a hole.
    const between = [
      ...randomWrites(14, 25),
      { offset: 5 * MiB + 4096, data: Buffer.from(pattern(3 * MiB, 77)) },
      { offset: 9 * MiB, data: Buffer.alloc(MiB) },
      { offset: 12 * MiB, data: Buffer.alloc(256 * 1024) },
    ];
    await writeThrough(origin, between);
    const model1 = Buffer.from(model0);
    apply(model1, between);
    expect((await sandbox.run('fssconfig', ['-c', 'fss1', './image', './store1'])).status).toBe(0);

    // The origin stays in use while the backup reads fss1: those writes must not reach it.
    const [script] = await Promise.all([
      runCommand('bash', ['-c', stockRecipe()], {
        cwd: sandbox.dir,
        env: { ...sandbox.env, PATH: `${stockToolsOnPath()}:${process.env['PATH'] ?? ''}` },
      }),
      writeThrough(origin, randomWrites(15, 30)),
    ]);
    expect(script.stderr).toBe('');
    expect(script.status).toBe(0);
    // The trap unmounted it, and nbdfuse had exited before the script did.
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(sandbox.path('fss1'));

    const file = sandbox.path('stock.img');
    expect(readFileSync(file).equals(model1)).toBe(true);
    // nbdcopy keeps the full copy's holes; dd writes only the changed extents.
    expect(allocatedBytes(file)).toBeLessThan(IMAGE_BYTES / 2);
    const fss1 = `nbd+unix:///?socket=${sandbox.runDir}/fss1.sock`;
    const compared = await runCommand('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', file, fss1]);
    expect(compared.stdout).toContain('Images are identical.');
    expect(compared.status).toBe(0);

    // What the recipe copied (fss changed) against what nbdinfo reads from the export's
    // qemu:dirty-bitmap:fss0 context, and both against the clusters the test wrote.
    const changed = await sandbox.run('fss', ['changed', '--json', '--since', 'fss0', 'fss1']);
    expect(changed.status).toBe(0);
    const { clusterSize, extents } = JSON.parse(changed.stdout) as {
      clusterSize: number;
      extents: { offset: number; length: number }[];
    };
    const map = await runCommand('nbdinfo', ['--map=qemu:dirty-bitmap:fss0', fss1]);
    expect(map.status).toBe(0);
    const dirty = parseNbdinfoMap(map.stdout)
      .filter((run) => run.type === 1)
      .map(({ offset, length }) => ({ offset, length }));
    expect(extents).toEqual(dirty);
    expect(extents).toEqual(touchedExtents(between, clusterSize));
    expect(extents).toContainEqual({ offset: 9 * MiB, length: MiB }); // the zeroed extent, alone
    expect(extents.some((extent) => extent.length > MiB)).toBe(true);
  });
});
