/**
 * Bad input (SPEC §6.3, issue 11 item 5): every refused command line gets a message naming the
 * problem and exit status 1, and creates, truncates and claims nothing.
 *
 * Method: one sandbox where fss0 is configured on `image` with `backup` (so a unit, its store
 * and a claimed origin exist to be misused), and a second, unclaimed image `image2` that every
 * refused command names as its origin. For each case the test records the sandbox's file tree
 * (every path with its type, mode, size, mtime and, for files, a sha256) before and after the
 * command, and requires it unchanged: nothing created (a backup, a socket, a state record),
 * nothing truncated (the configured unit's store, the images). Then it checks that nothing was
 * claimed: `image2` takes an exclusive flock (fss's claim on an image is one), the daemon lists
 * only the origin `image` and only fss0 active. At the end, `image2` configures fine, so the
 * refusals left no half-claim behind. As root, the same for a mounted device fss does not
 * serve and for a backup on the origin's own filesystem; there the claim check is an O_EXCL
 * open of the device, which fails while anyone (fss, a mount) holds it.
 *
 * NUL in a unit or origin name cannot come through argv (the kernel ends each argument at the
 * first NUL); those cases go through the control socket (packages/fssd/test/bad-input.test.ts).
 */
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync,
  constants as fsConstants,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  writeFileSync,
} from 'node:fs';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';
import { FssClient } from '@fss/control';
import { type Bin, isRoot, ROOT_REASON, Sandbox, unmount, withLoop } from '@fss/test-utils';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const exec = promisify(execFile);
const MiB = 1024 * 1024;
const DEVICES =
  isRoot &&
  (() => {
    try {
      lstatSync('/dev/fuse');
      lstatSync('/dev/loop-control');
      return true;
    } catch {
      return false;
    }
  })();

const USAGE =
  'usage: fssconfig [-cxv] device path backup [cluster [size]]\n' +
  '       fssconfig -u [-v] device\n' +
  '       fssconfig -l [-v] [device]\n';

interface Case {
  /** The name for the case, used in the test name and docs/reliability.md. */
  what: string;
  bin: Bin;
  args: string[];
  /** The whole of stderr (a string) or its shape (a pattern); `$DIR` is the sandbox. */
  stderr: string | RegExp;
}

const CASES: Case[] = [
  {
    what: 'missing path',
    bin: 'fssconfig',
    args: ['fss1', 'missing', 'b'],
    stderr: 'fssconfig: stat missing: No such file or directory\n',
  },
  {
    what: 'a directory that is not a mount point',
    bin: 'fssconfig',
    args: ['fss1', 'dir', 'b'],
    stderr:
      'fssconfig: fss1: FSSIOCSET: Invalid argument\n' +
      'fssconfig: fss1: $DIR/dir: not a block device, image file or mount point: $DIR/dir is not a mount point\n',
  },
  {
    what: 'backup in a missing directory',
    bin: 'fssconfig',
    args: ['fss1', 'image2', 'nodir/b'],
    stderr: 'fssconfig: create: $DIR/nodir/b: No such file or directory\n',
  },
  {
    what: 'backup equal to the origin',
    bin: 'fssconfig',
    args: ['fss1', 'image2', 'image2'],
    stderr:
      'fssconfig: fss1: FSSIOCSET: Device or resource busy\n' +
      'fssconfig: fss1: backup $DIR/image2 is an origin: a snapshot cannot be stored on what it copies\n',
  },
  {
    what: 'backup on another origin fss holds',
    bin: 'fssconfig',
    args: ['fss1', 'image2', 'image'],
    stderr:
      'fssconfig: fss1: FSSIOCSET: Device or resource busy\n' +
      'fssconfig: fss1: backup $DIR/image is an origin: a snapshot cannot be stored on what it copies\n',
  },
  {
    what: 'backup of a configured unit',
    bin: 'fssconfig',
    args: ['fss1', 'image2', 'backup'],
    stderr:
      'fssconfig: fss1: FSSIOCSET: Device or resource busy\n' +
      'fssconfig: fss1: backup $DIR/backup is in use by fss0; left untouched\n',
  },
  {
    what: 'backup that is neither a file, a directory nor a block device',
    bin: 'fssconfig',
    args: ['fss1', 'image2', '/dev/null'],
    stderr:
      'fssconfig: fss1: FSSIOCSET: Invalid argument\n' +
      'fssconfig: fss1: backup /dev/null is not a regular file, a directory or a block device\n',
  },
  {
    what: 'a configured unit configured again',
    bin: 'fssconfig',
    args: ['fss0', 'image2', 'b'],
    stderr: 'fssconfig: fss0: FSSIOCSET: Device or resource busy\n',
  },
  {
    what: 'cluster not a number',
    bin: 'fssconfig',
    args: ['fss1', 'image2', 'b', 'abc'],
    stderr: "fssconfig: cluster size `abc': illegal number\n",
  },
  {
    what: 'cluster negative',
    bin: 'fssconfig',
    args: ['fss1', 'image2', 'b', '-1'],
    stderr: 'fssconfig: cluster size -1 is less than 0.\n',
  },
  {
    what: 'cluster too large',
    bin: 'fssconfig',
    args: ['fss1', 'image2', 'b', '2g'],
    stderr: 'fssconfig: cluster size 2147483648 is greater than 2147483647.\n',
  },
  {
    what: 'cluster with a bad suffix',
    bin: 'fssconfig',
    args: ['fss1', 'image2', 'b', '64q'],
    stderr: "fssconfig: cluster size `64q': illegal number\n",
  },
  {
    what: 'cluster with a bad product',
    bin: 'fssconfig',
    args: ['fss1', 'image2', 'b', '4xk'],
    stderr: "fssconfig: cluster size `k': illegal number\n",
  },
  {
    what: 'size not a number',
    bin: 'fssconfig',
    args: ['fss1', 'image2', 'b', '64k', 'abc'],
    stderr: "fssconfig: bs size `abc': illegal number\n",
  },
  {
    what: 'size negative',
    bin: 'fssconfig',
    args: ['fss1', 'image2', 'b', '64k', '-1'],
    stderr: 'fssconfig: bs size -1 is less than 0.\n',
  },
  {
    what: 'size too large',
    bin: 'fssconfig',
    args: ['fss1', 'image2', 'b', '64k', '99999999999999999999'],
    stderr: 'fssconfig: bs size: Numerical result out of range\n',
  },
  {
    what: 'size with a bad suffix',
    bin: 'fssconfig',
    args: ['fss1', 'image2', 'b', '64k', '1z'],
    stderr: "fssconfig: bs size `1z': illegal number\n",
  },
  {
    what: 'unit fss999',
    bin: 'fssconfig',
    args: ['fss999', 'image2', 'b'],
    stderr: 'fssconfig: open: fss999: No such device or address\n',
  },
  {
    what: 'unit sda',
    bin: 'fssconfig',
    args: ['sda', 'image2', 'b'],
    stderr: 'fssconfig: open: sda: No such file or directory\n',
  },
  {
    what: 'unit /dev/sda',
    bin: 'fssconfig',
    args: ['/dev/sda', 'image2', 'b'],
    stderr: 'fssconfig: open: /dev/sda: No such file or directory\n',
  },
  {
    what: 'unit name with /',
    bin: 'fssconfig',
    args: ['fss1/x', 'image2', 'b'],
    stderr: 'fssconfig: open: fss1/x: No such file or directory\n',
  },
  {
    what: 'unit name with ..',
    bin: 'fssconfig',
    args: ['../fss1', 'image2', 'b'],
    stderr: 'fssconfig: open: ../fss1: No such file or directory\n',
  },
  {
    what: 'unit name with .. inside /dev',
    bin: 'fssconfig',
    args: ['/dev/../dev/fss1', 'image2', 'b'],
    stderr: 'fssconfig: open: /dev/../dev/fss1: No such file or directory\n',
  },
  {
    what: 'unit name with a leading zero',
    bin: 'fssconfig',
    args: ['fss01', 'image2', 'b'],
    stderr: 'fssconfig: open: fss01: No such file or directory\n',
  },
  {
    what: '-u of a unit fss999',
    bin: 'fssconfig',
    args: ['-u', 'fss999'],
    stderr: 'fssconfig: open: fss999: No such device or address\n',
  },
  {
    what: 'too many arguments (-c)',
    bin: 'fssconfig',
    args: ['fss1', 'image2', 'b', '64k', '1m', 'extra'],
    stderr: USAGE,
  },
  { what: 'too many arguments (-u)', bin: 'fssconfig', args: ['-u', 'fss0', 'fss1'], stderr: USAGE },
  { what: 'too many arguments (-l)', bin: 'fssconfig', args: ['-l', 'fss0', 'fss1'], stderr: USAGE },
  { what: 'too few arguments', bin: 'fssconfig', args: ['fss1', 'image2'], stderr: USAGE },
  { what: '-x with -l', bin: 'fssconfig', args: ['-x', '-l', 'fss0'], stderr: USAGE },
  { what: '-x with -u', bin: 'fssconfig', args: ['-ux', 'fss0'], stderr: USAGE },
  { what: '-c with -l', bin: 'fssconfig', args: ['-cl', 'fss1', 'image2', 'b'], stderr: USAGE },
  {
    what: 'unknown option',
    bin: 'fssconfig',
    args: ['-z', 'fss1', 'image2', 'b'],
    stderr: `fssconfig: unknown option -- z\n${USAGE}`,
  },
  {
    what: 'fss origin add of a missing path',
    bin: 'fss',
    args: ['origin', 'add', 'missing'],
    stderr: /^fss: origin add missing: No such file or directory\n/,
  },
  {
    what: 'fss origin add --name with /',
    bin: 'fss',
    args: ['origin', 'add', 'image2', '--name', 'a/b'],
    stderr: /^fss: origin add image2: Invalid argument\n.*a\/b/,
  },
  {
    what: 'fss origin add --name ..',
    bin: 'fss',
    args: ['origin', 'add', 'image2', '--name', '..'],
    stderr: /^fss: origin add image2: Invalid argument\n/,
  },
  {
    what: 'fss origin add of a unit’s backing store',
    bin: 'fss',
    args: ['origin', 'add', 'backup'],
    stderr: /^fss: origin add backup: Device or resource busy\n.*is the backing store of fss0/,
  },
  {
    what: 'fss origin rm of an unknown origin',
    bin: 'fss',
    args: ['origin', 'rm', 'nope'],
    stderr: /^fss: origin rm nope: No such file or directory\n/,
  },
];

let sandbox: Sandbox;

/** Every path under the sandbox with what would show a creation, truncation or rewrite. */
function tree(): Record<string, string> {
  const entries: Record<string, string> = {};
  const visit = (dir: string): void => {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      const key = relative(sandbox.dir, path);
      if (key === 'run/fssd.log') continue; // the daemon's log grows by design
      const info = lstatSync(path);
      const kind = info.isDirectory()
        ? 'dir'
        : info.isFile()
          ? 'file'
          : info.isSymbolicLink()
            ? 'link'
            : 'other';
      let description = `${kind} ${(info.mode & 0o7777).toString(8)} ${info.size}`;
      if (info.isFile()) {
        const sha = createHash('sha256').update(readFileSync(path)).digest('hex').slice(0, 16);
        description += ` ${info.mtimeMs} ${sha}`;
      }
      entries[key] = description;
      if (info.isDirectory()) visit(path);
    }
  };
  visit(sandbox.dir);
  return entries;
}

/** True when nobody holds a flock on `path` (fss claims an image with an exclusive one). */
function imageUnclaimed(path: string): boolean {
  try {
    execFileSync('flock', ['--exclusive', '--nonblock', path, 'true'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** True when `device` opens O_EXCL: no claim by fss, no mount, no other exclusive holder. */
function deviceUnclaimed(device: string): boolean {
  try {
    closeSync(openSync(device, fsConstants.O_RDONLY | fsConstants.O_EXCL));
    return true;
  } catch {
    return false;
  }
}

/** The origins the daemon holds and its active units. */
async function daemonState(): Promise<{ origins: string[]; active: string[] }> {
  const client = await FssClient.connect({ runDir: sandbox.runDir, autostart: false });
  try {
    const status = await client.status();
    return {
      origins: status.origins.map((origin) => origin.name),
      active: status.units.filter((unit) => unit.state !== 'idle').map((unit) => unit.unit),
    };
  } finally {
    client.close();
  }
}

function expectMessage(stderr: string, expected: string | RegExp): void {
  if (typeof expected === 'string') expect(stderr).toBe(expected.replaceAll('$DIR', sandbox.dir));
  else expect(stderr).toMatch(new RegExp(expected.source.replaceAll('$DIR', sandbox.dir)));
}

describe('bad input: message, exit status 1, nothing created, truncated or claimed', () => {
  beforeAll(async () => {
    sandbox = await Sandbox.create();
    writeFileSync(sandbox.path('image'), Buffer.alloc(2 * MiB, 0x5a));
    writeFileSync(sandbox.path('image2'), Buffer.alloc(2 * MiB, 0xa5));
    mkdirSync(sandbox.path('dir'));
    const configured = await sandbox.run('fssconfig', ['fss0', 'image', 'backup']);
    expect(configured).toMatchObject({ status: 0, stderr: '' });
  });
  afterAll(async () => {
    await sandbox.cleanup();
  });

  for (const each of CASES) {
    it(`${each.what}: ${each.bin} ${each.args.join(' ')}`, async () => {
      const before = tree();
      const result = await sandbox.run(each.bin, each.args);
      expectMessage(result.stderr, each.stderr);
      expect(result.status).toBe(1);
      expect(result.stdout).toBe('');
      expect(tree()).toEqual(before);
      expect(imageUnclaimed(sandbox.path('image2'))).toBe(true);
      expect(await daemonState()).toEqual({ origins: ['image'], active: ['fss0'] });
    });
  }

  it('after every refusal, image2 configures, and its unit and origin go away with -u', async () => {
    const configured = await sandbox.run('fssconfig', ['fss1', 'image2', 'b']);
    expect(configured).toMatchObject({ status: 0, stderr: '' });
    expect(imageUnclaimed(sandbox.path('image2'))).toBe(false);
    expect(await daemonState()).toEqual({ origins: ['image', 'image2'], active: ['fss0', 'fss1'] });
    expect((await sandbox.run('fssconfig', ['-u', 'fss1'])).status).toBe(0);
    expect(imageUnclaimed(sandbox.path('image2'))).toBe(true);
  });
});

describe.skipIf(!DEVICES)(`bad input on devices and mounts (${ROOT_REASON}, /dev/fuse and loop)`, () => {
  let mounted: string[] = [];
  beforeAll(async () => {
    sandbox = await Sandbox.create();
    mkdirSync(sandbox.path('m1'));
    writeFileSync(sandbox.path('image'), '');
    await exec('truncate', ['-s', '64M', sandbox.path('image')]);
    expect((await sandbox.run('fssconfig', ['-l', 'fss0'])).status).toBe(0); // the daemon is up
  });
  afterAll(async () => {
    for (const mountPoint of mounted.reverse()) {
      try {
        unmount(mountPoint);
      } catch {
        // unmount() fell back to a lazy unmount: nothing stays mounted.
      }
    }
    await sandbox.cleanup();
  });

  it('a mounted device not routed through fss: -c of its mount point and of the device, origin add', async () => {
    await withLoop({ sizeBytes: 64 * MiB }, async ({ device }) => {
      await exec('mkfs.ext4', ['-q', device]);
      await exec('mount', [device, sandbox.path('m1')]);
      mounted.push(sandbox.path('m1'));
      try {
        await refusedWhileMounted(device);
      } finally {
        unmount(sandbox.path('m1'));
        mounted = [];
      }
      expect(deviceUnclaimed(device)).toBe(true);
    });
  });

  /** The three ways to name a mounted device fss does not serve, each refused. */
  async function refusedWhileMounted(device: string): Promise<void> {
    writeFileSync(join(sandbox.path('m1'), 'file'), 'data\n');
    const cases: [string, string[], RegExp][] = [
      [
        'fssconfig',
        ['fss0', sandbox.path('m1'), sandbox.path('backup')],
        new RegExp(
          `^fssconfig: fss0: FSSIOCSET: Device or resource busy\\nfssconfig: fss0: .*fss origin add ${device} --attach`,
        ),
      ],
      [
        'fssconfig',
        ['fss0', device, sandbox.path('backup')],
        /^fssconfig: fss0: FSSIOCSET: Device or resource busy\n/,
      ],
      ['fss', ['origin', 'add', device], /^fss: origin add \/dev\/loop\d+: Device or resource busy\n/],
    ];
    for (const [bin, args, stderr] of cases) {
      const before = tree();
      const result = await sandbox.run(bin as Bin, args);
      expect(result.stderr, `${bin} ${args.join(' ')}`).toMatch(stderr);
      expect(result.status).toBe(1);
      expect(tree()).toEqual(before);
      expect(await daemonState()).toEqual({ origins: [], active: [] });
    }
    // The filesystem is not left frozen: it takes a write. Once unmounted, the device
    // opens O_EXCL (fss holds no claim on it).
    writeFileSync(join(sandbox.path('m1'), 'still-writable'), 'yes\n');
  }

  it('a backup on the origin: a file on the filesystem being snapshotted', async () => {
    expect((await sandbox.run('fss', ['origin', 'add', 'image', '--attach'])).status).toBe(0);
    const device = join(sandbox.devDir, 'fss', 'image');
    // No lazy initialisation: ext4lazyinit would zero inode tables on the mounted origin in
    // the background, changing the image's mtime (not its bytes) while the tree is compared.
    await exec('mkfs.ext4', ['-q', '-E', 'lazy_itable_init=0,lazy_journal_init=0', device]);
    await exec('mount', [device, sandbox.path('m1')]);
    mounted.push(sandbox.path('m1'));
    const before = tree();
    const result = await sandbox.run('fssconfig', [
      'fss0',
      sandbox.path('m1'),
      join(sandbox.path('m1'), 'backup'),
    ]);
    expect(result.stderr).toMatch(
      /^fssconfig: fss0: FSSIOCSET: Device or resource busy\n.*would copy into itself/,
    );
    expect(result.status).toBe(1);
    expect(tree()).toEqual(before);
    expect(await daemonState()).toEqual({ origins: ['image'], active: [] });
    writeFileSync(join(sandbox.path('m1'), 'still-writable'), 'yes\n'); // not left frozen
    unmount(sandbox.path('m1'));
    mounted = [];
    expect((await sandbox.run('fss', ['origin', 'rm', 'image'])).status).toBe(0);
    expect(imageUnclaimed(sandbox.path('image'))).toBe(true);
  });
});
