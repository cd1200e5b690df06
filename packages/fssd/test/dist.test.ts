/**
 * The built @fss/fssd: the program carries a shebang and runs, the systemd unit ships beside
 * it, and the library loads as CommonJS and as ESM. Runs after `pnpm -r build`; skipped
 * loudly without one.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const dist = join(import.meta.dirname, '..', 'dist');
const built = ['fssd.js', 'index.js', 'index.cjs'].every((file) => existsSync(join(dist, file)));
if (!built) console.warn('SKIPPED dist tests: packages/fssd/dist is not built (pnpm -r build)');

describe.skipIf(!built)('the built package', () => {
  it('fssd.js has a shebang, answers bad usage with exit 2, and fssd.service ships with it', async () => {
    expect(readFileSync(join(dist, 'fssd.js'), 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
    const usage = await run(process.execPath, [join(dist, 'fssd.js'), '--bogus']).then(
      () => ({ code: 0, stderr: '' }),
      (error: { code: number; stderr: string }) => error,
    );
    expect(usage).toMatchObject({
      code: 2,
      stderr: 'usage: fssd [--rundir DIR] [--units N] [--devices auto|off] [--devdir DIR]\n',
    });
    expect(readFileSync(join(dist, 'fssd.service'), 'utf8')).toContain('ExecStart=');
  });

  it('the library loads as CommonJS and as ESM', async () => {
    const script = (kind: string) =>
      kind === 'cjs'
        ? `const m = require(${JSON.stringify(join(dist, 'index.cjs'))}); console.log(typeof m.Fssd, typeof m.parseFssdArgs);`
        : `const m = await import(${JSON.stringify(join(dist, 'index.js'))}); console.log(typeof m.Fssd, typeof m.parseFssdArgs);`;
    expect((await run(process.execPath, ['-e', script('cjs')])).stdout).toBe('function function\n');
    expect((await run(process.execPath, ['--input-type=module', '-e', script('esm')])).stdout).toBe(
      'function function\n',
    );
  });
});
