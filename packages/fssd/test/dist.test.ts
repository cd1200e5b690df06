/**
 * The built @fss/fssd: the program (dist/fssd.cjs, the package's bin)
 * carries a shebang and runs, the CommonJS one sizes libuv's pool to 16 threads itself, the
 * systemd unit ships beside it, and the library loads as CommonJS and as ESM. Runs after `pnpm -r build`; skipped
 * loudly without one.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const dist = join(import.meta.dirname, '..', 'dist');
const built = ['fssd.cjs', 'index.js', 'index.cjs'].every((file) => existsSync(join(dist, file)));
if (!built) console.warn('SKIPPED dist tests: packages/fssd/dist is not built (pnpm -r build)');

describe.skipIf(!built)('the built package', () => {
  it.each(['fssd.cjs'])('%s has a shebang and answers bad usage with exit 2', async (program) => {
    expect(readFileSync(join(dist, program), 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
    const usage = await run(process.execPath, [join(dist, program), '--bogus']).then(
      () => ({ code: 0, stderr: '' }),
      (error: { code: number; stderr: string }) => error,
    );
    expect(usage).toMatchObject({
      code: 2,
      stderr:
        'usage: fssd [--rundir DIR] [--units N] [--devices auto|off] [--devdir DIR] [--statedir DIR] ' +
        '[--durability process|power|none] [--bypass-check-ms MS]\n',
    });
  });

  it('the bin is fssd.cjs and fssd.service ships beside it', () => {
    const manifest = JSON.parse(readFileSync(join(dist, '..', 'package.json'), 'utf8')) as { bin: object };
    expect(manifest.bin).toEqual({ fssd: './dist/fssd.cjs' });
    expect(readFileSync(join(dist, 'fssd.service'), 'utf8')).toContain('ExecStart=');
    expect(readFileSync(join(dist, 'fss-tmpfiles.conf'), 'utf8')).toMatch(/^d \/run\/fss 0700 root root -$/m);
    expect((manifest as { man?: string[] }).man).toEqual(['./dist/man/fssd.8']);
    expect(readFileSync(join(dist, 'man', 'fssd.8'), 'utf8')).toMatch(/^\.TH FSSD 8 /m);
  });

  it('fssd.cjs runs 16 libuv threads by default, and the number UV_THREADPOOL_SIZE names', async () => {
    // Threads of a started daemon: main, V8's platform workers, and libuv's pool (created on
    // the first asynchronous file operation, which starting the daemon makes).
    const threadsWith = async (poolSize: string | undefined): Promise<number> => {
      const runDir = mkdtempSync(join(tmpdir(), 'fssd-pool-'));
      const env: NodeJS.ProcessEnv = { ...process.env, FSS_STATEDIR: join(runDir, 'state') };
      if (poolSize === undefined) delete env['UV_THREADPOOL_SIZE'];
      else env['UV_THREADPOOL_SIZE'] = poolSize;
      const child = spawn(
        process.execPath,
        [join(dist, 'fssd.cjs'), '--rundir', runDir, '--devices', 'off'],
        {
          env,
          stdio: ['ignore', 'ignore', 'pipe'],
        },
      );
      try {
        await new Promise<void>((resolve, reject) => {
          let log = '';
          child.stderr.setEncoding('utf8').on('data', (text: string) => {
            log += text;
            if (log.includes('started:')) resolve();
          });
          child.once('exit', (code) => reject(new Error(`fssd exited ${code}: ${log}`)));
        });
        return readdirSync(`/proc/${child.pid}/task`).length;
      } finally {
        child.kill('SIGTERM');
        await new Promise((resolve) => child.once('exit', resolve));
        rmSync(runDir, { recursive: true, force: true });
      }
    };
    const byDefault = await threadsWith(undefined);
    const two = await threadsWith('2');
    const sixteen = await threadsWith('16');
    expect(byDefault).toBe(sixteen);
    expect(sixteen - two).toBe(14);
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
