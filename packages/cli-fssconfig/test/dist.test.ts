/**
 * The built packages, as npm would install them: the bins carry a shebang; an installed
 * fssconfig finds an installed fssd beside itself (npm links the bins of one prefix into one
 * directory) or through FSS_FSSD, and starts it on demand; the library loads as CommonJS and
 * as ESM. Runs after `pnpm -r build` (CI builds before testing); skipped loudly without one.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Sandbox } from '@fss/test-utils';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const dist = join(import.meta.dirname, '..', 'dist');
const fssdProgram = join(import.meta.dirname, '..', '..', 'fssd', 'dist', 'fssd.cjs');
const built = [
  ...['fssconfig.js', 'fss.js', 'index.js', 'index.cjs'].map((file) => join(dist, file)),
  fssdProgram,
].every((file) => existsSync(file));
if (!built) console.warn('SKIPPED dist tests: cli-fssconfig or fssd is not built (pnpm -r build)');

let sandbox: Sandbox;
beforeEach(async () => {
  sandbox = await Sandbox.create();
});
afterEach(async () => {
  await sandbox.cleanup();
});

describe.skipIf(!built)('the built package', () => {
  it('bins carry a shebang; fssconfig starts the fssd installed beside it', async () => {
    for (const bin of [join(dist, 'fssconfig.js'), join(dist, 'fss.js'), fssdProgram]) {
      expect(readFileSync(bin, 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
    }
    // An npm prefix's bin directory: each program a link to its package's dist file.
    const bin = sandbox.path('bin');
    mkdirSync(bin);
    symlinkSync(join(dist, 'fssconfig.js'), join(bin, 'fssconfig'));
    symlinkSync(join(dist, 'fss.js'), join(bin, 'fss'));
    symlinkSync(fssdProgram, join(bin, 'fssd'));
    const env = {
      ...process.env,
      FSS_RUNDIR: sandbox.runDir,
      FSS_STATEDIR: sandbox.stateDir,
      FSS_FSSD: '',
      PATH: '/usr/bin:/bin',
    };
    const listed = await run(join(bin, 'fssconfig'), ['-l', 'fss0'], { env, cwd: sandbox.dir });
    expect(listed.stdout).toBe('fss0: not in use\n');
    const pid = sandbox.daemonPid() as number;
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    expect(argv).toContain(join(bin, 'fssd'));
    const status = await run(join(bin, 'fss'), ['status', '--json'], { env });
    expect(JSON.parse(status.stdout)).toMatchObject({ schemaVersion: 1, daemon: { pid, unitCount: 16 } });
  });

  it('fssconfig starts the fssd that FSS_FSSD names', async () => {
    const env = {
      ...process.env,
      FSS_RUNDIR: sandbox.runDir,
      FSS_STATEDIR: sandbox.stateDir,
      FSS_FSSD: fssdProgram,
    };
    const listed = await run(process.execPath, [join(dist, 'fssconfig.js'), '-l', 'fss1'], { env });
    expect(listed.stdout).toBe('fss1: not in use\n');
    const argv = readFileSync(`/proc/${sandbox.daemonPid()}/cmdline`, 'utf8').split('\0');
    expect(argv).toContain(fssdProgram);
  });

  it('the library loads as CommonJS and as ESM', async () => {
    const script = (kind: string) =>
      kind === 'cjs'
        ? `const m = require(${JSON.stringify(join(dist, 'index.cjs'))}); console.log(typeof m.parseFssconfigArgs, m.humanizeNumber(65536));`
        : `const m = await import(${JSON.stringify(join(dist, 'index.js'))}); console.log(typeof m.parseFssconfigArgs, m.humanizeNumber(65536));`;
    const cjs = await run(process.execPath, ['-e', script('cjs')]);
    const esm = await run(process.execPath, ['--input-type=module', '-e', script('esm')]);
    expect(cjs.stdout).toBe('function 64K\n');
    expect(esm.stdout).toBe('function 64K\n');
  });
});
