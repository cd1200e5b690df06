/**
 * Renders a man page the way a user's `man -l PAGE` does (man-db, groff) and returns what it
 * says on stderr with every groff warning on. `--warnings=w` is groff's "all kinds"; man-db's
 * own `--warnings=all` passes groff a list that turns them off.
 */
import { spawnSync } from 'node:child_process';

export function manPageWarnings(path: string): { text: string; warnings: string } {
  const result = spawnSync('man', ['--warnings=w', '-E', 'UTF-8', '-l', path], {
    encoding: 'utf8',
    env: { ...process.env, MANWIDTH: '80', LC_ALL: 'C.UTF-8', MANPAGER: 'cat', PAGER: 'cat' },
  });
  if (result.status !== 0) throw new Error(`man -l ${path}: exit ${result.status}: ${result.stderr}`);
  return { text: result.stdout, warnings: result.stderr };
}
