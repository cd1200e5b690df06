/**
 * .ci/run refuses to run as a non-root user when CI=true: the root-only tests skip themselves
 * elsewhere, so a CI run that was not root would pass while proving nothing. The check runs
 * against a copy of .ci/run next to a stand-in test-all.sh that only says it ran.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..', '..');
const isRoot = process.getuid?.() === 0;
const NOBODY = 65534;

function fakeCheckout(): string {
  const dir = mkdtempSync(join(tmpdir(), 'fss-ci-'));
  mkdirSync(join(dir, '.ci'));
  mkdirSync(join(dir, 'scripts'));
  copyFileSync(join(root, '.ci', 'run'), join(dir, '.ci', 'run'));
  writeFileSync(join(dir, 'scripts', 'test-all.sh'), 'echo "test-all ran"\n');
  execFileSync('chmod', ['-R', 'a+rX', dir]);
  chmodSync(dir, 0o755);
  return dir;
}

describe.skipIf(!isRoot)('.ci/run (needs root to run a copy as another user)', () => {
  it('fails, without running the tests, when CI=true and it is not root', () => {
    const dir = fakeCheckout();
    try {
      const asNobody = spawnSync(
        'setpriv',
        [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', 'bash', join(dir, '.ci', 'run')],
        { env: { ...process.env, CI: 'true' }, encoding: 'utf8', timeout: 20_000 },
      );
      expect(asNobody.status).toBe(1);
      expect(asNobody.stdout).not.toContain('test-all ran');
      expect(asNobody.stderr).toContain('CI must run as root');
      const asRoot = spawnSync('bash', [join(dir, '.ci', 'run')], {
        env: { ...process.env, CI: 'true' },
        encoding: 'utf8',
        timeout: 20_000,
      });
      expect(asRoot).toMatchObject({ status: 0, stdout: 'test-all ran\n' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
