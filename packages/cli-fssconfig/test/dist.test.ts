/**
 * The built package, as npm would install it: the bins in dist/ start the daemon beside them
 * (dist/fssd.js) and the CJS and ESM library entries load. Runs after `pnpm -r build`
 * (CI builds before testing); skipped loudly without a build.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PACKAGE_DIR, Sandbox } from './helpers';

const run = promisify(execFile);
const dist = join(PACKAGE_DIR, 'dist');
const built = ['fssconfig.js', 'fssd.js', 'fss.js', 'index.js', 'index.cjs'].every((file) =>
  existsSync(join(dist, file)),
);
if (!built) console.warn('SKIPPED dist tests: packages/cli-fssconfig/dist is not built (pnpm -r build)');

let sandbox: Sandbox;
beforeEach(async () => {
  sandbox = await Sandbox.create();
});
afterEach(async () => {
  await sandbox.cleanup();
});

describe.skipIf(!built)('the built package', () => {
  it('bins carry a shebang, and dist/fssconfig.js starts dist/fssd.js on demand', async () => {
    for (const bin of ['fssconfig.js', 'fssd.js', 'fss.js']) {
      expect(readFileSync(join(dist, bin), 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
    }
    const env = { ...process.env, FSS_RUNDIR: sandbox.runDir };
    const listed = await run(process.execPath, [join(dist, 'fssconfig.js'), '-l', 'fss0'], {
      env,
      cwd: sandbox.dir,
    });
    expect(listed.stdout).toBe('fss0: not in use\n');
    const pid = sandbox.daemonPid() as number;
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    expect(argv).toContain(join(dist, 'fssd.js'));
    const status = await run(process.execPath, [join(dist, 'fss.js'), 'status', '--json'], { env });
    expect(JSON.parse(status.stdout)).toMatchObject({ pid, unitCount: 16 });
  });

  it('the library loads as CommonJS and as ESM', async () => {
    const script = (kind: string) =>
      kind === 'cjs'
        ? `const m = require(${JSON.stringify(join(dist, 'index.cjs'))}); console.log(typeof m.FssClient, m.humanizeNumber(65536));`
        : `const m = await import(${JSON.stringify(join(dist, 'index.js'))}); console.log(typeof m.FssClient, m.humanizeNumber(65536));`;
    const cjs = await run(process.execPath, ['-e', script('cjs')]);
    const esm = await run(process.execPath, ['--input-type=module', '-e', script('esm')]);
    expect(cjs.stdout).toBe('function 64K\n');
    expect(esm.stdout).toBe('function 64K\n');
  });
});
