/**
 * @fss/manual: the usage and --help renderings of a manual, the roff escaping, and a page
 * rendered by man-db (`man -l`, groff's warnings on: `--warnings=w`, every kind; man-db's "all" turns them off) with no warning, while a page with a
 * bad request does warn (the check can fail).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { manPageWarnings } from '@fss/test-utils';
import { afterAll, describe, expect, it } from 'vitest';
import {
  escapeRoff,
  helpTarget,
  helpText,
  type Manual,
  manPage,
  synopsisLines,
  usageText,
  wrap,
} from '../src/index';

const MANUAL: Manual = {
  name: 'tool',
  section: 8,
  summary: 'does things',
  description: [
    'A paragraph that is long enough to be wrapped at eighty columns by the help renderer, twice over, yes.',
    { code: ['tool a --x', '.starts with a dot'] },
  ],
  commands: [
    {
      words: ['a'],
      synopsis: ['[--x] FILE'],
      summary: 'Does a',
      options: [{ flags: '--x', text: 'An option.' }],
    },
    { words: ['b', 'c'], synopsis: ['', 'NAME'], summary: 'Does b c' },
    { words: ['b', 'd'], synopsis: [''], summary: 'Does b d' },
  ],
  sections: [{ title: 'EXIT STATUS', body: [{ items: [{ term: '0', text: 'fine' }] }] }],
  seeAlso: ['other(8)', 'more(1)'],
};

const dir = mkdtempSync(join(tmpdir(), 'fss-manual-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** What `man -l` says on stderr about a page, groff's warnings on (test-utils' manPageWarnings). */
function manWarnings(page: string, name = 'page.8'): string {
  const path = join(dir, name);
  writeFileSync(path, page);
  return manPageWarnings(path).warnings;
}

describe('usage and help', () => {
  it('lines the synopsis up under "usage: "', () => {
    expect(synopsisLines(MANUAL)).toEqual(['tool a [--x] FILE', 'tool b c', 'tool b c NAME', 'tool b d']);
    expect(usageText(MANUAL)).toBe(
      'usage: tool a [--x] FILE\n       tool b c\n       tool b c NAME\n       tool b d',
    );
    expect(usageText({ ...MANUAL, usage: ['a FILE'] })).toBe('usage: tool a FILE');
  });

  it('finds the command, the group or the program argv asks about', () => {
    expect(helpTarget(MANUAL, ['a', 'file', '--x']).command?.words).toEqual(['a']);
    expect(helpTarget(MANUAL, ['b', 'd']).command?.words).toEqual(['b', 'd']);
    expect(helpTarget(MANUAL, ['b']).group?.commands.map((each) => each.words.join(' '))).toEqual([
      'b c',
      'b d',
    ]);
    expect(helpTarget(MANUAL, ['zzz'])).toEqual({});
    const help = helpText(MANUAL, ['a']);
    expect(help.split('\n').slice(0, 3)).toEqual(['usage: tool a [--x] FILE', '', 'Does a.']);
    expect(help).toContain('  --x                   An option.');
    expect(helpText(MANUAL, ['b'])).toContain("Run 'tool b COMMAND --help' for one command.");
    const program = helpText(MANUAL);
    expect(program).toContain('tool: does things.');
    expect(program).toContain('Commands:\n  tool a [--x] FILE\n      Does a.');
    for (const line of program.split('\n')) expect(line.length).toBeLessThanOrEqual(80);
  });

  it('wraps at 80 columns without breaking words', () => {
    const words = Array.from({ length: 60 }, (_, index) => `word${index}`);
    const lines = wrap(words.join(' '), 4);
    for (const line of lines) {
      expect(line.length).toBeLessThanOrEqual(80);
      expect(line.startsWith('    ')).toBe(true);
    }
    expect(lines.join(' ').split(/\s+/).filter(Boolean)).toEqual(words);
  });
});

describe('man page', () => {
  it('escapes backslashes, minus signs and lines that would be requests', () => {
    expect(escapeRoff('a\\b --x')).toBe('a\\eb \\-\\-x');
    const page = manPage(MANUAL, { source: 'fss 1.0.0', date: '2026-12-02', generatedFrom: 'here' });
    expect(page.split('\n')[1]).toBe('.TH TOOL 8 "2026\\-12\\-02" "fss 1.0.0" "System Manager\'s Manual"');
    expect(page).toContain('\\&.starts with a dot');
    expect(page).toContain('\\fBtool a\\fR [\\fB\\-\\-x\\fR] \\fIFILE\\fR');
    expect(page).toContain('.BR other (8),\n.BR more (1)\n');
  });

  it('renders under man -l without a warning, and the check catches a bad page', () => {
    const page = manPage(MANUAL, { source: 'fss 1.0.0', date: '2026-12-02' });
    expect(manWarnings(page)).toBe('');
    const text = execFileSync('man', ['-l', join(dir, 'page.8')], {
      encoding: 'utf8',
      env: { ...process.env, MANWIDTH: '80', MANPAGER: 'cat' },
    });
    expect(text).toMatch(/^TOOL\(8\) +System Manager's Manual +TOOL\(8\)/);
    expect(text).toContain('tool b c NAME');
    expect(manWarnings(`${page}.XX unknown request\n\\fQbad font\n`, 'bad.8')).not.toBe('');
  });
});
