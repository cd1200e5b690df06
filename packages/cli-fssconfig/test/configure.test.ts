/**
 * fssconfig end to end on image files: what a failed configure leaves alone, unconfigure of
 * an idle unit, units after a daemon restart, directory and -x backups, and many clients at
 * once (which also races ten on-demand daemon starts against the run-directory lock).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  existsSync,
  lstatSync,
  readdirSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { Sandbox } from '@fss/test-utils';
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

function fingerprint(path: string): { sha256: string; size: number; mtimeMs: number; blocks: number } {
  const info = statSync(path);
  return {
    sha256: createHash('sha256').update(readFileSync(path)).digest('hex'),
    size: info.size,
    mtimeMs: info.mtimeMs,
    blocks: info.blocks,
  };
}

describe('fssconfig -c', () => {
  it('creates the backup 0600, sparse, at the origin size or the size given', async () => {
    expect((await sandbox.run('fssconfig', ['fss0', 'image', 'backup'])).status).toBe(0);
    const backup = statSync(sandbox.path('backup'));
    expect(backup.mode & 0o777).toBe(0o600);
    expect(backup.size).toBe(2 * MiB);
    expect(backup.blocks * 512).toBeLessThan(backup.size);
    expect((await sandbox.run('fssconfig', ['fss1', 'image', 'backup1', '0', '3m'])).status).toBe(0);
    expect(statSync(sandbox.path('backup1')).size).toBe(3 * MiB);
  });

  it('a second -c on a busy unit fails EBUSY and leaves the first unit’s backup byte-identical', async () => {
    expect((await sandbox.run('fssconfig', ['-c', 'fss0', 'image', 'backup'])).status).toBe(0);
    const before = fingerprint(sandbox.path('backup'));
    const again = await sandbox.run('fssconfig', ['-c', 'fss0', 'image', 'backup']);
    expect(again).toMatchObject({
      status: 1,
      stdout: '',
      stderr: 'fssconfig: fss0: FSSIOCSET: Device or resource busy\n',
    });
    const otherUnit = await sandbox.run('fssconfig', ['-c', 'fss1', 'image', 'backup', '0', '1m']);
    expect(otherUnit.status).toBe(1);
    expect(otherUnit.stderr).toMatch(
      /^fssconfig: fss1: FSSIOCSET: Device or resource busy\n.*in use by fss0/,
    );
    const elsewhere = await sandbox.run('fssconfig', ['-c', 'fss0', 'image', 'backup2']);
    expect(elsewhere.status).toBe(1);
    expect(fingerprint(sandbox.path('backup'))).toEqual(before);
    expect(existsSync(sandbox.path('backup2'))).toBe(false);
    expect((await sandbox.run('fssconfig', ['-l', 'fss1'])).stdout).toBe('fss1: not in use\n');
  });

  it('a directory backup gets a temporary file that is unlinked once configured; -x unlinks the file', async () => {
    await mkdir(sandbox.path('dir'));
    expect((await sandbox.run('fssconfig', ['fss0', 'image', 'dir'])).status).toBe(0);
    expect(readdirSync(sandbox.path('dir'))).toEqual([]);
    expect((await sandbox.run('fssconfig', ['-x', 'fss1', 'image', 'backup-x'])).status).toBe(0);
    expect(existsSync(sandbox.path('backup-x'))).toBe(false);
    const status = JSON.parse((await sandbox.run('fss', ['status', '--json'])).stdout);
    expect(status.units[0].backup).toMatch(new RegExp(`^${sandbox.path('dir')}/[A-Za-z0-9]{10}$`));
    expect(status.units[1]).toMatchObject({ name: 'fss1', valid: true, backup: sandbox.path('backup-x') });
    expect((await sandbox.run('fssconfig', ['-l'])).stdout).toMatch(
      /^fss0: .*image\nfss1: .*image\nfss2: not in use\n/,
    );
  });

  it('a backup path that is a symlink to a file fails ELOOP and leaves the target byte-identical', async () => {
    writeFileSync(sandbox.path('victim'), 'precious text\n');
    symlinkSync('victim', sandbox.path('link'));
    const before = fingerprint(sandbox.path('victim'));
    const result = await sandbox.run('fssconfig', ['fss0', 'image', 'link']);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(
      /^fssconfig: create: .*\/link: Too many levels of symbolic links\nfssconfig: fss0: .*symbolic link/,
    );
    expect(fingerprint(sandbox.path('victim'))).toEqual(before);
    expect(readFileSync(sandbox.path('victim'), 'utf8')).toBe('precious text\n');
    // A dangling link is refused the same way, and nothing is created at its target.
    symlinkSync('absent', sandbox.path('dangling'));
    expect((await sandbox.run('fssconfig', ['fss0', 'image', 'dangling'])).status).toBe(1);
    expect(existsSync(sandbox.path('absent'))).toBe(false);
    expect(lstatSync(sandbox.path('dangling')).isSymbolicLink()).toBe(true);
    expect((await sandbox.run('fssconfig', ['-l', 'fss0'])).stdout).toBe('fss0: not in use\n');
  });

  it('-u of an idle unit is ENXIO; -u releases an implicitly claimed origin', async () => {
    const idle = await sandbox.run('fssconfig', ['-u', 'fss3']);
    expect(idle).toMatchObject({
      status: 1,
      stderr: 'fssconfig: fss3: FSSIOCCLR: No such device or address\n',
    });
    expect((await sandbox.run('fssconfig', ['fss3', 'image', 'backup'])).status).toBe(0);
    expect((await sandbox.run('fss', ['origin', 'ls'])).stdout).toMatch(/^image: .*implicit, units fss3,/);
    expect((await sandbox.run('fssconfig', ['-u', 'fss3'])).status).toBe(0);
    expect((await sandbox.run('fss', ['origin', 'ls'])).stdout).toBe('');
    expect(existsSync(sandbox.path('backup'))).toBe(true);
  });

  it('-l after a daemon restart lists a unit on a named backup again (persistent); -x units are gone', async () => {
    expect((await sandbox.run('fssconfig', ['fss0', 'image', 'backup'])).status).toBe(0);
    expect((await sandbox.run('fssconfig', ['-cx', 'fss1', 'image', 'backup1'])).status).toBe(0);
    expect((await sandbox.run('fssconfig', ['-l', 'fss0'])).stdout).toBe(`fss0: ${sandbox.path('image')}\n`);
    const first = sandbox.daemonPid();
    await sandbox.stopDaemon();
    const listed = await sandbox.run('fssconfig', ['-l', 'fss0']);
    expect(listed).toMatchObject({ status: 0, stdout: `fss0: ${sandbox.path('image')}\n`, stderr: '' });
    expect((await sandbox.run('fssconfig', ['-l', 'fss1'])).stdout).toBe('fss1: not in use\n');
    expect(sandbox.daemonPid()).not.toBe(first);
    expect((await sandbox.run('fssconfig', ['-u', 'fss0'])).status).toBe(0);
    await sandbox.stopDaemon();
    expect((await sandbox.run('fssconfig', ['-l', 'fss0'])).stdout).toBe('fss0: not in use\n');
  });
});

describe('unit count', () => {
  it('FSS_UNITS sets N for a daemon started on demand: fss0 … fss(N-1)', async () => {
    const env = { ...sandbox.env, FSS_UNITS: '3' };
    const listed = await sandbox.run('fssconfig', ['-l'], { env });
    expect(listed).toMatchObject({
      status: 0,
      stdout: 'fss0: not in use\nfss1: not in use\nfss2: not in use\n',
    });
    const beyond = await sandbox.run('fssconfig', ['fss3', 'image', 'backup'], { env });
    expect(beyond).toMatchObject({ status: 1, stderr: 'fssconfig: open: fss3: No such device or address\n' });
    expect(existsSync(sandbox.path('backup'))).toBe(false);
  });
});

describe('origins used outside fss', () => {
  it('an image locked by another process is EBUSY, says what to do, and nothing is created', async () => {
    const holder = spawn('flock', ['--exclusive', sandbox.path('image'), 'sleep', '60'], { stdio: 'ignore' });
    try {
      // flock(1) takes the lock before it runs sleep; wait until fss would see it.
      await new Promise((resolve) => setTimeout(resolve, 300));
      const result = await sandbox.run('fssconfig', ['fss0', 'image', 'backup']);
      expect(result.status).toBe(1);
      expect(result.stderr).toMatch(
        /^fssconfig: fss0: FSSIOCSET: Device or resource busy\nfssconfig: fss0: .*locked/,
      );
      expect(existsSync(sandbox.path('backup'))).toBe(false);
      expect((await sandbox.run('fss', ['origin', 'ls'])).stdout).toBe('');
    } finally {
      holder.kill('SIGKILL');
    }
  });
});

describe('many clients at once', () => {
  it('10 parallel -c on different units all succeed', { timeout: 120_000 }, async () => {
    const units = Array.from({ length: 10 }, (_, unit) => unit);
    const results = await Promise.all(
      units.map((unit) => sandbox.run('fssconfig', [`fss${unit}`, 'image', `backup${unit}`])),
    );
    for (const result of results) expect(result).toMatchObject({ status: 0, stderr: '' });
    const listed = (await sandbox.run('fssconfig', ['-l'])).stdout.split('\n');
    for (const unit of units) expect(listed[unit]).toBe(`fss${unit}: ${sandbox.path('image')}`);
  });

  it('10 parallel -c on one unit: exactly one succeeds, the others create nothing', {
    timeout: 120_000,
  }, async () => {
    expect((await sandbox.run('fssconfig', ['-l', 'fss0'])).status).toBe(0); // daemon up
    const tries = Array.from({ length: 10 }, (_, index) => index);
    const results = await Promise.all(
      tries.map((index) => sandbox.run('fssconfig', ['fss5', 'image', `b${index}`])),
    );
    const winners = tries.filter((index) => results[index]?.status === 0);
    expect(winners, results.map((result) => result.stderr).join('')).toHaveLength(1);
    for (const index of tries) {
      if (index === winners[0]) continue;
      expect(results[index]).toMatchObject({
        status: 1,
        stderr: 'fssconfig: fss5: FSSIOCSET: Device or resource busy\n',
      });
      expect(existsSync(sandbox.path(`b${index}`))).toBe(false);
    }
  });
});
