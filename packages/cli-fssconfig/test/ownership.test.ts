/**
 * Who may write what (SPEC §1, §6.3), end to end through the real binaries:
 *
 * - A unit's backing store is never an origin: its unit's own store writes would bypass the
 *   copy-on-write of a snapshot taken of it, which would then miss writes silently. Refused
 *   with EBUSY naming the unit, whichever way the store is named (the file, a loop device
 *   over it), for `fss origin add` and for `fssconfig -c`. A partition of a raw store is the
 *   same overlap rule (backing-rawdev's identity tests); this machine's kernel has no
 *   partition-table support (CONFIG_MSDOS_PARTITION and CONFIG_EFI_PARTITION are off), so no
 *   real partition can be made here.
 * - The other way round, a backup on an origin is refused too.
 * - A failed -c creates, truncates and claims nothing: checks that can fail run before the
 *   first change (an empty origin, a raw store too small for the header and table).
 * - `fss origin add --name` on an origin fssconfig -c claimed never ignores the name.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { attachLoop, detach, isRoot, ROOT_REASON, Sandbox, withLoop } from '@fss/test-utils';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const MiB = 1024 * 1024;
let sandbox: Sandbox;

beforeEach(async () => {
  sandbox = await Sandbox.create();
  writeFileSync(sandbox.path('image'), Buffer.alloc(2 * MiB, 0x5a));
});
afterEach(async () => {
  await sandbox.cleanup();
});

async function originNames(): Promise<string[]> {
  const listed = await sandbox.run('fss', ['origin', 'ls']);
  expect(listed.status).toBe(0);
  return listed.stdout
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => line.slice(0, line.indexOf(':')));
}

describe("a unit's backing store is never an origin", () => {
  it('fssconfig -c of a store, and fss origin add of it, are EBUSY naming the unit', async () => {
    expect((await sandbox.run('fssconfig', ['-c', 'fss0', 'image', 'backup'])).status).toBe(0);
    const snapshotOfStore = await sandbox.run('fssconfig', ['-c', 'fss1', 'backup', 'backup2']);
    expect(snapshotOfStore.status).toBe(1);
    expect(snapshotOfStore.stderr).toBe(
      'fssconfig: fss1: FSSIOCSET: Device or resource busy\n' +
        `fssconfig: fss1: ${sandbox.path('backup')} is the backing store of fss0: a snapshot of it ` +
        "would miss fss0's own writes; unconfigure fss0 first (fssconfig -u fss0)\n",
    );
    expect(existsSync(sandbox.path('backup2'))).toBe(false);
    const added = await sandbox.run('fss', ['origin', 'add', 'backup']);
    expect(added.status).toBe(1);
    expect(added.stderr).toMatch(
      /^fss: origin add backup: Device or resource busy\nfss: origin add backup: .*\/backup is the backing store of fss0/,
    );
    expect(await originNames()).toEqual(['image']);
    expect(readdirSync(`${sandbox.runDir}/origin`)).toEqual(['image.sock']);
    // Once fss0 is gone, the file is just a file.
    expect((await sandbox.run('fssconfig', ['-u', 'fss0'])).status).toBe(0);
    expect((await sandbox.run('fss', ['origin', 'add', 'backup'])).status).toBe(0);
  });

  it('the other way round: a backup on any origin fss holds is EBUSY and left untouched', async () => {
    writeFileSync(sandbox.path('other'), Buffer.alloc(MiB, 0x11));
    expect((await sandbox.run('fss', ['origin', 'add', 'other'])).status).toBe(0);
    const result = await sandbox.run('fssconfig', ['-c', 'fss0', 'image', 'other']);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/^fssconfig: fss0: FSSIOCSET: Device or resource busy\n.*is an origin/);
    expect(readFileSync(sandbox.path('other')).equals(Buffer.alloc(MiB, 0x11))).toBe(true);
    expect(await originNames()).toEqual(['other']);
  });

  describe.skipIf(!isRoot)(`through another name for the same storage (${ROOT_REASON})`, () => {
    it('a loop device over the store file is EBUSY naming the unit', async () => {
      expect((await sandbox.run('fssconfig', ['-c', 'fss0', 'image', 'backup'])).status).toBe(0);
      const loop = attachLoop(['--show', '-f', sandbox.path('backup')]);
      try {
        for (const args of [
          ['fss', ['origin', 'add', loop]],
          ['fssconfig', ['-c', 'fss1', loop, sandbox.path('b1')]],
        ] as const) {
          const result = await sandbox.run(args[0], [...args[1]]);
          expect(result.status).toBe(1);
          expect(result.stderr).toContain(`${loop} is the backing store of fss0`);
        }
        expect(existsSync(sandbox.path('b1'))).toBe(false);
        expect(await originNames()).toEqual(['image']);
      } finally {
        detach(loop);
      }
    });

    it('a raw store device, and the image file behind it, are EBUSY naming the unit', async () => {
      await withLoop({ sizeBytes: 8 * MiB }, async ({ device, image }) => {
        const configured = await sandbox.run('fssconfig', ['-c', 'fss0', 'image', device]);
        expect(configured).toMatchObject({ status: 0, stderr: '' });
        for (const path of [device, image]) {
          const result = await sandbox.run('fss', ['origin', 'add', path]);
          expect(result.status).toBe(1);
          expect(result.stderr).toContain(`${path} is the backing store of fss0`);
        }
        expect(await originNames()).toEqual(['image']);
        expect((await sandbox.run('fssconfig', ['-u', 'fss0'])).status).toBe(0);
      });
    });
  });
});

describe('a failed -c truncates, creates and claims nothing', () => {
  it('an empty origin: EINVAL, the existing 21-byte backup keeps its bytes, nothing claimed', async () => {
    writeFileSync(sandbox.path('empty'), '');
    writeFileSync(sandbox.path('backup'), 'twenty-one bytes here');
    const result = await sandbox.run('fssconfig', ['-c', 'fss0', 'empty', 'backup']);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(
      /^fssconfig: fss0: FSSIOCSET: Invalid argument\nfssconfig: fss0: device size 0/,
    );
    expect(readFileSync(sandbox.path('backup'), 'utf8')).toBe('twenty-one bytes here');
    expect(await originNames()).toEqual([]);
    expect(readdirSync(`${sandbox.runDir}/origin`)).toEqual([]);
    expect((await sandbox.run('fssconfig', ['-l', 'fss0'])).stdout).toBe('fss0: not in use\n');
  });

  it('a missing backup directory: create ENOENT before the origin is claimed', async () => {
    const result = await sandbox.run('fssconfig', ['-c', 'fss0', 'image', 'nodir/backup']);
    expect(result).toMatchObject({
      status: 1,
      stderr: `fssconfig: create: ${sandbox.path('nodir/backup')}: No such file or directory\n`,
    });
    expect(await originNames()).toEqual([]);
  });

  it.skipIf(!isRoot)(
    `a raw store too small for the header and table: ENOSPC, device untouched, nothing claimed (${ROOT_REASON})`,
    async () => {
      writeFileSync(sandbox.path('big'), '');
      execFileSync('truncate', ['-s', '64M', sandbox.path('big')]);
      await withLoop({ sizeBytes: 64 * 1024 }, async ({ device }) => {
        execFileSync('dd', [`of=${device}`, 'if=/dev/urandom', 'bs=64k', 'count=1', 'status=none']);
        const before = readFileSync(device);
        const result = await sandbox.run('fssconfig', ['-c', 'fss0', 'big', device, '512']);
        expect(result.status).toBe(1);
        expect(result.stderr).toMatch(
          /^fssconfig: fss0: FSSIOCSET: No space left on device\nfssconfig: fss0: backup device of 65536 bytes cannot hold/,
        );
        expect(readFileSync(device).equals(before)).toBe(true);
        expect(await originNames()).toEqual([]);
      });
    },
  );
});

describe('fss origin add --name on an origin fssconfig -c claimed', () => {
  it('keeps it under its name when asked without --name or with that name; another name is EEXIST', async () => {
    expect((await sandbox.run('fssconfig', ['-c', 'fss0', 'image', 'backup'])).status).toBe(0);
    const renamed = await sandbox.run('fss', ['origin', 'add', 'image', '--name', 'disk']);
    expect(renamed.status).toBe(1);
    expect(renamed.stderr).toBe(
      'fss: origin add image: File exists\n' +
        `fss: origin add image: ${sandbox.path('image')} is already origin image (claimed for fss0) and ` +
        'keeps that name while in use; add it as image (no --name), or name it after its units are unconfigured\n',
    );
    expect((await sandbox.run('fss', ['origin', 'ls'])).stdout).toMatch(/^image: .*, implicit, units fss0,/);
    const kept = await sandbox.run('fss', ['origin', 'add', 'image', '--name', 'image']);
    expect(kept).toMatchObject({ status: 0, stderr: '' });
    expect(kept.stdout).toMatch(/^image: .*, added, units fss0,/);
    // Explicit now: it stays after its last unit is gone.
    expect((await sandbox.run('fssconfig', ['-u', 'fss0'])).status).toBe(0);
    expect(await originNames()).toEqual(['image']);
  });
});
