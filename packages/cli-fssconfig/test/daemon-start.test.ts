/**
 * fssconfig and fss start fssd on demand: how they find it (FSS_FSSD, beside themselves, on
 * PATH) and what they say when it cannot be found or cannot start.
 */
import { writeFileSync } from 'node:fs';
import { Sandbox } from '@fss/test-utils';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

let sandbox: Sandbox;

beforeEach(async () => {
  sandbox = await Sandbox.create();
  writeFileSync(sandbox.path('image'), Buffer.alloc(1024 * 1024));
});
afterEach(async () => {
  await sandbox.cleanup();
});

describe('starting fssd on demand', () => {
  it('a client says why a daemon it started could not start, and exits 1', async () => {
    const tooLong = sandbox.path('r'.repeat(120));
    const result = await sandbox.run('fssconfig', ['-l'], { env: { ...sandbox.env, FSS_RUNDIR: tooLong } });
    expect(result.status).toBe(1);
    expect(result.stdout).toBe('');
    expect(result.stderr).toBe(
      'fssconfig: fssd: fssd exited (status 1) before it was ready: fssd: cannot start: ENAMETOOLONG: ' +
        `socket path longer than 107 bytes, bind '${tooLong}/fssd.sock'\n`,
    );
    const notADirectory = await sandbox.run('fss', ['status'], {
      env: { ...sandbox.env, FSS_RUNDIR: sandbox.path('image') },
    });
    expect(notADirectory).toMatchObject({ status: 1, stdout: '' });
    expect(notADirectory.stderr).toContain(
      `fss: fssd: cannot reach fssd at ${sandbox.path('image')}/fssd.sock: Not a directory`,
    );
  });

  it('without an fssd to start, says how to get one and exits 1', async () => {
    const env = { ...sandbox.env, FSS_FSSD: '', PATH: '/nonexistent' };
    const result = await sandbox.run('fssconfig', ['-l'], { env });
    expect(result).toMatchObject({
      status: 1,
      stdout: '',
      stderr:
        'fssconfig: fssd: cannot find the fssd program: install @fss/fssd (npm i -g @fss/fssd), ' +
        'put fssd on PATH, or set FSS_FSSD\n',
    });
    expect(sandbox.daemonPid()).toBeUndefined();
  });
});
