/**
 * Live filesystems, what fss exists for (SPEC §1, §4, §5, §6.4), end to end as root with the
 * real programs: `fss origin add IMAGE --attach` makes /dev/fss/NAME, a filesystem is made and
 * mounted on it, `fssconfig -c fss0 MOUNTPOINT BACKUP` freezes it, takes the snapshot and
 * thaws, and the snapshot is mounted read-only from /dev/fss0 while the origin keeps changing.
 *
 * The kernel devices are loop devices over fssd's own FUSE files; fssd runs as its own process
 * (the sandbox's), so this test process may touch the mounts freely. Every case unmounts what
 * it mounted and stops the daemon in every outcome, and checks that nothing stays behind: no
 * loop device, FUSE mount or link of the sandbox. The device links live in the sandbox's
 * FSS_DEVDIR, so /dev/fss0 here is `<sandbox>/dev/fss0`.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { isRoot, ROOT_REASON, Sandbox, withLoop } from '@fss/test-utils';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const exec = promisify(execFile);
const DEVICES = isRoot && existsSync('/dev/fuse') && existsSync('/dev/loop-control');
const MiB = 1024 * 1024;

let sandbox: Sandbox;
/** Mount points this case mounted, unmounted (last first) in every outcome. */
let mounted: string[];

beforeEach(async () => {
  sandbox = await Sandbox.create();
  mounted = [];
  writeFileSync(sandbox.path('image'), '');
  await exec('truncate', ['-s', '320M', sandbox.path('image')]);
  for (const dir of ['m1', 'm2']) mkdirSync(sandbox.path(dir));
});

afterEach(async () => {
  for (const mountPoint of mounted.reverse())
    await exec('umount', [mountPoint]).catch(() => exec('umount', ['-l', mountPoint]).catch(() => undefined));
  await sandbox.cleanup();
});

async function run(
  bin: 'fss' | 'fssconfig',
  args: string[],
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return sandbox.run(bin, args);
}

async function ok(bin: 'fss' | 'fssconfig', args: string[]): Promise<string> {
  const result = await run(bin, args);
  expect(result, `${bin} ${args.join(' ')}`).toMatchObject({ status: 0, stderr: '' });
  return result.stdout;
}

async function mount(device: string, mountPoint: string, options: string[] = []): Promise<void> {
  await exec('mount', [...options, device, mountPoint]);
  mounted.push(mountPoint);
}

async function unmount(mountPoint: string): Promise<void> {
  await exec('umount', [mountPoint]);
  mounted = mounted.filter((each) => each !== mountPoint);
}

function dev(name: string): string {
  return join(sandbox.devDir, name);
}

/** The origin image attached as /dev/fss/image, with a fresh filesystem mounted on m1. */
async function mountedOrigin(mkfs: string[]): Promise<string> {
  await ok('fss', ['origin', 'add', 'image', '--attach']);
  const device = dev('fss/image');
  await exec(mkfs[0] as string, [...mkfs.slice(1), device]);
  await mount(device, sandbox.path('m1'));
  return device;
}

/** Loop devices, FUSE mounts and links of this sandbox that still exist. */
async function leftovers(): Promise<string[]> {
  const found: string[] = [];
  const loops = (await exec('losetup', ['-a', '-n', '-O', 'NAME,BACK-FILE'])).stdout;
  for (const line of loops.split('\n')) if (line.includes(sandbox.dir)) found.push(`loop: ${line}`);
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8');
  for (const line of mounts.split('\n')) if (line.includes(sandbox.dir)) found.push(`mount: ${line}`);
  if (existsSync(sandbox.devDir)) {
    for (const entry of readdirSync(sandbox.devDir, { recursive: true, encoding: 'utf8' })) {
      if (entry !== 'fss') found.push(`link: ${entry}`);
    }
  }
  return found;
}

function sha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

describe.skipIf(!DEVICES)(`live filesystem snapshots (${ROOT_REASON}, /dev/fuse and loop)`, () => {
  it("NetBSD t_fss basic: the snapshot of a mounted ext4 keeps 'Original data'", async () => {
    const m1 = sandbox.path('m1');
    const m2 = sandbox.path('m2');
    await mountedOrigin(['mkfs.ext4', '-q']);
    writeFileSync(join(m1, 'file'), 'Original data\n');
    expect(await ok('fssconfig', ['-c', 'fss0', m1, sandbox.path('backup')])).toBe('');
    expect(await ok('fssconfig', ['-l', 'fss0'])).toBe(`fss0: ${m1}\n`); // the mount point, as NetBSD
    await mount(dev('fss0'), m2, ['-o', 'ro']);
    writeFileSync(join(m1, 'file'), 'Replacement data\n');
    await exec('sync');
    expect(readFileSync(join(m1, 'file'), 'utf8')).toBe('Replacement data\n');
    expect(readFileSync(join(m2, 'file'), 'utf8')).toBe('Original data\n');
    // Busy while mounted: -u and origin rm refuse and change nothing.
    const busy = await run('fssconfig', ['-u', 'fss0']);
    expect(busy.status).toBe(1);
    expect(busy.stderr).toBe(
      'fssconfig: fss0: FSSIOCCLR: Device or resource busy\n' +
        `fssconfig: fss0: ${dev('fss0')} (${await realLoop('fss0')}) is mounted on ${m2}: unmount it first\n`,
    );
    expect(readFileSync(join(m2, 'file'), 'utf8')).toBe('Original data\n');
    await unmount(m2);
    await ok('fssconfig', ['-u', 'fss0']);
    expect(existsSync(dev('fss0'))).toBe(false);
    const rmBusy = await run('fss', ['origin', 'rm', 'image']);
    expect(rmBusy.status).toBe(1);
    expect(rmBusy.stderr).toContain(`is mounted on ${m1}: unmount it first`);
    await unmount(m1);
    await ok('fss', ['origin', 'rm', 'image']);
    expect(await leftovers()).toEqual([]);
  });

  it('NetBSD snapshot test: a file held open and appended 10000 times keeps its old content; a new file is absent, a deleted one present', async () => {
    const m1 = sandbox.path('m1');
    const m2 = sandbox.path('m2');
    await mountedOrigin(['mkfs.ext4', '-q']);
    writeFileSync(join(m1, 'held'), 'before the snapshot\n');
    writeFileSync(join(m1, 'doomed'), 'deleted after the snapshot\n');
    await exec('sync');
    // A process holds `held` open for appending across the snapshot, then appends.
    const fifo = sandbox.path('go');
    await exec('mkfifo', [fifo]);
    const appender = spawn(
      'bash',
      [
        '-c',
        `exec 3>>"$1"; read -r _ < "$2"; for i in $(seq 10000); do echo "line $i" >&3; done`,
        'bash',
        join(m1, 'held'),
        fifo,
      ],
      { stdio: 'ignore' },
    );
    const appended = new Promise<number | null>((resolve) => appender.on('close', resolve));
    await ok('fssconfig', ['-c', 'fss0', m1, sandbox.path('backup')]);
    writeFileSync(fifo, 'go\n');
    expect(await appended).toBe(0);
    writeFileSync(join(m1, 'new'), 'created after the snapshot\n');
    await exec('rm', [join(m1, 'doomed')]);
    await exec('sync');
    expect(readFileSync(join(m1, 'held'), 'utf8').split('\n')).toHaveLength(10002);
    await mount(dev('fss0'), m2, ['-o', 'ro']);
    expect(readFileSync(join(m2, 'held'), 'utf8')).toBe('before the snapshot\n');
    expect(existsSync(join(m2, 'new'))).toBe(false);
    expect(readFileSync(join(m2, 'doomed'), 'utf8')).toBe('deleted after the snapshot\n');
    await unmount(m2);
    await ok('fssconfig', ['-u', 'fss0']);
    await unmount(m1);
    await ok('fss', ['origin', 'rm', 'image']);
    expect(await leftovers()).toEqual([]);
  });

  it('stress: 4 writers creating and deleting trees while the snapshot is taken; e2fsck -fn is clean and a fixed file set reads back', {
    timeout: 180_000,
  }, async () => {
    const m1 = sandbox.path('m1');
    const m2 = sandbox.path('m2');
    await mountedOrigin(['mkfs.ext4', '-q']);
    mkdirSync(join(m1, 'fixed'));
    const sums = new Map<string, string>();
    for (let index = 0; index < 16; index++) {
      const path = join(m1, 'fixed', `f${index}`);
      await exec('dd', ['if=/dev/urandom', `of=${path}`, `bs=${64 + index * 17}k`, 'count=1', 'status=none']);
      sums.set(`f${index}`, sha256(path));
    }
    await exec('sync');
    const writers = Array.from({ length: 4 }, (_, writer) =>
      spawn(
        'bash',
        [
          '-c',
          'cd "$1"; while [ ! -e "$2" ]; do for j in 1 2 3; do mkdir -p w/$j/a/b; ' +
            'dd if=/dev/urandom of=w/$j/a/b/x bs=16k count=4 status=none; cp -r w/$j w/$j.copy; ' +
            'done; rm -rf w w.copy 2>/dev/null; mkdir -p w; done',
          'bash',
          join(m1, `writer${writer}`),
          sandbox.path('stop'),
        ],
        { stdio: 'ignore' },
      ),
    );
    for (let writer = 0; writer < 4; writer++) mkdirSync(join(m1, `writer${writer}`));
    const stopped = writers.map((child) => new Promise((resolve) => child.on('close', resolve)));
    try {
      await new Promise((resolve) => setTimeout(resolve, 1500)); // writers in full swing
      await ok('fssconfig', ['-c', 'fss0', m1, sandbox.path('backup')]);
      await new Promise((resolve) => setTimeout(resolve, 1000)); // and after the snapshot
    } finally {
      writeFileSync(sandbox.path('stop'), '');
      await Promise.all(stopped);
    }
    const fsck = await exec('e2fsck', ['-fn', dev('fss0')]).then(
      () => 0,
      (error: { code: number }) => error.code,
    );
    expect(fsck).toBe(0);
    await mount(dev('fss0'), m2, ['-o', 'ro']);
    for (const [name, sum] of sums) expect(sha256(join(m2, 'fixed', name)), name).toBe(sum);
    await unmount(m2);
    await ok('fssconfig', ['-u', 'fss0']);
    await unmount(m1);
    await ok('fss', ['origin', 'rm', 'image']);
    expect(await leftovers()).toEqual([]);
  });

  it('xfs: the snapshot passes xfs_repair -n and reads back the data at snapshot time', async () => {
    const m1 = sandbox.path('m1');
    const m2 = sandbox.path('m2');
    await mountedOrigin(['mkfs.xfs', '-q', '-f']);
    writeFileSync(join(m1, 'file'), 'Original data\n');
    await ok('fssconfig', ['-c', 'fss0', m1, sandbox.path('backup')]);
    writeFileSync(join(m1, 'file'), 'Replacement data\n');
    await exec('sync');
    // Read-only as it is (the mounted origin has the same UUID; a frozen XFS leaves its log
    // dirty but its metadata written, so nothing needs replaying to read it).
    await mount(dev('fss0'), m2, ['-o', 'ro,nouuid,norecovery']);
    expect(readFileSync(join(m2, 'file'), 'utf8')).toBe('Original data\n');
    await unmount(m2);
    // xfs_repair -n on the snapshot once its log is replayed, as any XFS freeze snapshot needs
    // (Linux ≥ 5.13 no longer cleans the log on freeze): on a copy, mounted once.
    const copy = sandbox.path('snapshot.xfs');
    await exec('dd', [`if=${dev('fss0')}`, `of=${copy}`, 'bs=1M', 'status=none']);
    await mount(copy, m2, ['-o', 'nouuid']);
    expect(readFileSync(join(m2, 'file'), 'utf8')).toBe('Original data\n');
    await unmount(m2);
    await exec('xfs_repair', ['-n', copy]);
    await ok('fssconfig', ['-u', 'fss0']);
    await unmount(m1);
    await ok('fss', ['origin', 'rm', 'image']);
    expect(await leftovers()).toEqual([]);
  });

  it('btrfs: the snapshot passes btrfs check --readonly and reads back the data at snapshot time', async () => {
    const m1 = sandbox.path('m1');
    await mountedOrigin(['mkfs.btrfs', '-q', '-f']);
    writeFileSync(join(m1, 'file'), 'Original data\n');
    await ok('fssconfig', ['-c', 'fss0', m1, sandbox.path('backup')]);
    writeFileSync(join(m1, 'file'), 'Replacement data\n');
    await exec('sync');
    await exec('btrfs', ['check', '--readonly', dev('fss0')]);
    // The snapshot has the origin's fsid, which is mounted: read it without mounting.
    const restored = sandbox.path('restored');
    mkdirSync(restored);
    await exec('btrfs', ['restore', dev('fss0'), restored]);
    expect(readFileSync(join(restored, 'file'), 'utf8')).toBe('Original data\n');
    await ok('fssconfig', ['-u', 'fss0']);
    await unmount(m1);
    await ok('fss', ['origin', 'rm', 'image']);
    expect(await leftovers()).toEqual([]);
  });

  it('refuses a backup on the filesystem being snapshotted, and leaves it thawed and unchanged', async () => {
    const m1 = sandbox.path('m1');
    await mountedOrigin(['mkfs.ext4', '-q']);
    const result = await run('fssconfig', ['-c', 'fss0', m1, join(m1, 'backup')]);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(
      /^fssconfig: fss0: FSSIOCSET: Device or resource busy\n.*would copy into itself/,
    );
    expect(existsSync(join(m1, 'backup'))).toBe(false);
    writeFileSync(join(m1, 'still-writable'), 'yes\n'); // not left frozen
    expect(await ok('fssconfig', ['-l', 'fss0'])).toBe('fss0: not in use\n');
    await unmount(m1);
    await ok('fss', ['origin', 'rm', 'image']);
    expect(await leftovers()).toEqual([]);
  });

  it('refuses a mount from a device fss does not serve, naming fss origin add --attach', async () => {
    await withLoop({ sizeBytes: 64 * MiB }, async ({ device }) => {
      await exec('mkfs.ext4', ['-q', device]);
      await mount(device, sandbox.path('m1'));
      const result = await run('fssconfig', ['-c', 'fss0', sandbox.path('m1'), sandbox.path('backup')]);
      expect(result.status).toBe(1);
      expect(result.stderr).toContain('FSSIOCSET: Device or resource busy');
      expect(result.stderr).toContain(`fss origin add ${device} --attach`);
      expect(existsSync(sandbox.path('backup'))).toBe(false);
      await unmount(sandbox.path('m1'));
    });
  });

  it('fss rollback: EBUSY while the origin or the unit is mounted; once unmounted the filesystem is back as it was, e2fsck clean', async () => {
    const m1 = sandbox.path('m1');
    const m2 = sandbox.path('m2');
    const device = await mountedOrigin(['mkfs.ext4', '-q']);
    writeFileSync(join(m1, 'file'), 'Original data\n');
    await ok('fssconfig', ['-c', 'fss0', m1, sandbox.path('backup')]);
    writeFileSync(join(m1, 'file'), 'Replacement data\n');
    writeFileSync(join(m1, 'new'), 'created after the snapshot\n');
    await exec('sync');
    const busy = await run('fss', ['rollback', 'fss0']);
    expect(busy.status).toBe(1);
    expect(busy.stderr).toBe(
      'fss: rollback fss0: Device or resource busy\n' +
        `fss: rollback fss0: origin image is mounted (${m1}): unmount it before rolling it back\n`,
    );
    await unmount(m1);
    await mount(dev('fss0'), m2, ['-o', 'ro']);
    const unitBusy = await run('fss', ['rollback', 'fss0']);
    expect(unitBusy.status).toBe(1);
    expect(unitBusy.stderr).toContain(`fss: rollback fss0: fss0 is mounted (${m2})`);
    await unmount(m2);
    const rolled = await run('fss', ['rollback', 'fss0']);
    expect(rolled.status, rolled.stderr).toBe(0);
    expect(JSON.parse(rolled.stdout.trim().split('\n').at(-1) as string)).toMatchObject({
      unit: 'fss0',
      state: 'done',
    });
    expect(existsSync(dev('fss0'))).toBe(false);
    await exec('e2fsck', ['-fn', device]);
    await mount(device, m1);
    expect(readFileSync(join(m1, 'file'), 'utf8')).toBe('Original data\n');
    expect(existsSync(join(m1, 'new'))).toBe(false);
    await unmount(m1);
    await ok('fss', ['origin', 'rm', 'image']);
    expect(await leftovers()).toEqual([]);
  });

  it('a killed fssd leaves its devices; the next start removes them', async () => {
    await ok('fss', ['origin', 'add', 'image', '--attach']);
    // -x: a unit that does not persist, so the next daemon brings nothing back.
    await ok('fssconfig', ['-cx', 'fss0', sandbox.path('image'), sandbox.path('backup')]);
    expect((await leftovers()).length).toBeGreaterThan(0);
    const pid = sandbox.daemonPid() as number;
    process.kill(pid, 'SIGKILL');
    await new Promise((resolve) => setTimeout(resolve, 300));
    // The next command starts a new daemon, which cleans up what the records name.
    expect(await ok('fssconfig', ['-l', 'fss0'])).toBe('fss0: not in use\n');
    expect(await leftovers()).toEqual([]);
    expect(readFileSync(join(sandbox.runDir, 'fssd.log'), 'utf8')).toMatch(/removed the stale device/);
    // And the image can be attached again.
    await ok('fss', ['origin', 'add', 'image', '--attach']);
    await ok('fss', ['origin', 'rm', 'image']);
    expect(await leftovers()).toEqual([]);
  });
});

/** The loop device a sandbox link points at. */
async function realLoop(name: string): Promise<string> {
  return (await exec('readlink', [dev(name)])).stdout.trim();
}
