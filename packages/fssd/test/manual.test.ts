/**
 * fssd's help and manual, from src/manual.ts: `fssd --help` (the real program, from sources)
 * prints it with exit 0, the usage line bad usage prints is the manual's synopsis, and
 * fssd(8) passes `man -l` with every groff warning on.
 */

import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { manPage, synopsisLines } from '@fss/manual';
import { binArgs, manPageWarnings } from '@fss/test-utils';
import { afterAll, describe, expect, it } from 'vitest';
import { FSSD_USAGE } from '../src/command';
import { FSSD_MANUAL } from '../src/manual';

const dir = mkdtempSync(join(tmpdir(), 'fssd-man-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('fssd manual', () => {
  it('fssd --help prints the manual as help, exit 0; the usage line is its synopsis', () => {
    const help = execFileSync(process.execPath, [...binArgs('fssd'), '--help'], { encoding: 'utf8' });
    expect(help.startsWith(`${FSSD_USAGE}\n`)).toBe(true);
    for (const option of FSSD_MANUAL.options ?? []) expect(help).toContain(option.flags);
    expect(FSSD_USAGE).toBe(`usage: ${synopsisLines(FSSD_MANUAL)[0]}`);
  });

  it('fssd(8) renders under man -l with no warning', () => {
    const path = join(dir, 'fssd.8');
    writeFileSync(path, manPage(FSSD_MANUAL, { source: 'fss 0.0.0', date: '2026-12-02' }));
    const { text, warnings } = manPageWarnings(path);
    expect(warnings).toBe('');
    expect(text).toMatch(/^FSSD\(8\)/);
    for (const section of [
      'SYNOPSIS',
      'OPTIONS',
      'SIGNALS',
      'EXIT STATUS',
      'ENVIRONMENT',
      'FILES',
      'SEE ALSO',
    ]) {
      expect(text).toMatch(new RegExp(`^${section}$`, 'm'));
    }
  });
});
