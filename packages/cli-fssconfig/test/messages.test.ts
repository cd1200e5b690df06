/**
 * Every fssconfig and fss message and exit status, against golden transcripts
 * (test/golden/*.txt). Each case runs the real binary in one sandbox, in order (later cases
 * depend on the units earlier ones configured). UPDATE_GOLDEN=1 rewrites the files and fails
 * the run; review the diff against NetBSD's texts (reference facts §1) before committing it.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { type Bin, normalize, Sandbox } from '@fss/test-utils';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const GOLDEN_DIR = new URL('./golden/', import.meta.url);

const FSSCONFIG_CASES: string[][] = [
  [],
  ['-z'],
  ['-cl', 'fss0', 'image', 'backup'],
  ['-cu', 'fss0'],
  ['-ll'],
  ['-ux', 'fss0'],
  ['-lx'],
  ['-u'],
  ['-u', 'fss0', 'fss1'],
  ['-l', 'fss0', 'fss1'],
  ['fss0', 'image'],
  ['fss0', 'missing', 'backup'],
  ['fss0', 'image', 'backup', '1', '2', '3'],
  ['fss0', 'image', 'backup', 'abc'],
  ['fss0', 'image', 'backup', '-1'],
  ['fss0', 'image', 'backup', '4g'],
  ['fss0', 'image', 'backup', '64k', '1q'],
  ['fss0', 'image', 'backup', '4xk'],
  ['fss0', 'image', 'backup', '0', '99999999999999999999'],
  ['vnd0', 'image', 'backup'],
  ['fss16', 'image', 'backup'],
  ['-l', 'fss16'],
  ['-l', 'vnd0'],
  ['-u', 'vnd0'],
  ['-l', 'fss0'],
  ['-u', 'fss0'],
  ['fss0', 'image', 'nodir/backup'],
  ['fss0', 'image', 'image'],
  ['fss0', '.', 'backup'],
  ['-v', 'fss0', 'image', 'backup'],
  ['-l', '/dev/fss0'],
  ['-l'],
  ['fss0', 'image', 'backup2'],
  ['fss1', 'image', 'backup'],
  ['-cxv', 'fss1', 'image', 'backup-x', '4k', '1m'],
  ['-lv', 'fss1'],
  ['-uv', 'fss0'],
  ['-u', 'fss1'],
  ['-l', 'fss0'],
];

const FSS_CASES: string[][] = [
  [],
  ['origin'],
  ['origin', 'ls'],
  ['origin', 'add'],
  ['origin', 'add', 'missing'],
  ['origin', 'add', 'image', '--name', 'bad/name'],
  ['origin', 'add', 'image', '--name', 'disk'],
  ['origin', 'add', 'image'],
  ['origin', 'ls'],
  ['origin', 'rm', 'nope'],
  ['status', '--yaml'],
  ['status'],
  ['changed'],
  ['changed', 'fss0', '--yaml'],
  ['changed', 'fss0'],
  ['changed', 'vnd0'],
  ['changed', 'fss0', '--since', 'fss1'],
  ['origin', 'rm', 'disk'],
  ['origin', 'ls'],
];

async function transcript(sandbox: Sandbox, bin: Bin, cases: string[][]): Promise<string> {
  let text = '';
  for (const args of cases) {
    const result = await sandbox.run(bin, args);
    text += `$ ${[bin, ...args].join(' ')}\n[exit ${result.status}]\n`;
    if (result.stdout !== '') text += `[stdout]\n${result.stdout}`;
    if (result.stderr !== '') text += `[stderr]\n${result.stderr}`;
  }
  return normalize(text, sandbox);
}

/**
 * Compares with the golden file. UPDATE_GOLDEN=1 rewrites it and then fails on purpose: a
 * run that regenerates can never pass, so a green run always compared against a reviewed file.
 */
function compareGolden(name: string, actual: string): void {
  const file = new URL(name, GOLDEN_DIR);
  if (process.env['UPDATE_GOLDEN'] === '1') {
    const changed = readFileSync(file, 'utf8') !== actual;
    writeFileSync(file, actual);
    expect.fail(
      `UPDATE_GOLDEN=1: ${name} ${changed ? 'rewritten' : 'unchanged'}; review "git diff" against ` +
        "NetBSD's texts, then run again without UPDATE_GOLDEN",
    );
  }
  expect(actual).toBe(readFileSync(file, 'utf8'));
}

describe('messages and exit statuses', () => {
  let sandbox: Sandbox;
  beforeAll(async () => {
    sandbox = await Sandbox.create();
    writeFileSync(sandbox.path('image'), Buffer.alloc(2 * 1024 * 1024));
  });
  afterAll(async () => {
    await sandbox.cleanup();
  });

  it('fssconfig', { timeout: 400_000 }, async () => {
    compareGolden('fssconfig.txt', await transcript(sandbox, 'fssconfig', FSSCONFIG_CASES));
  });

  it('fss', { timeout: 400_000 }, async () => {
    compareGolden('fss.txt', await transcript(sandbox, 'fss', FSS_CASES));
  });
});
