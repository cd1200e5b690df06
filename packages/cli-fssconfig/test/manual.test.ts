/**
 * Help and manuals of fssconfig, fss and fssck, all from src/manual/: every program and
 * every fss command answers --help (exit 0, its synopsis on stdout, nothing on stderr) through
 * the real binary, the usage texts are the manuals' synopses (fssconfig's NetBSD's three
 * lines), and each man page, rendered from the same manual, passes `man -l` with every groff
 * warning on and names every command; the built dist/man pages are those pages.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { commandSynopsis, manPage, synopsisLines } from '@fss/manual';
import { manPageWarnings, Sandbox } from '@fss/test-utils';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FSSCONFIG_USAGE } from '../src/cli/usage';
import { FSS_USAGE } from '../src/commands/fss';
import { FSSCK_USAGE } from '../src/commands/fssck';
import { FSS_MANUAL, FSSCK_MANUAL, FSSCONFIG_MANUAL, MANUALS } from '../src/manual/index';

let sandbox: Sandbox;
const dir = mkdtempSync(join(tmpdir(), 'fss-man-'));
beforeAll(async () => {
  sandbox = await Sandbox.create();
});
afterAll(async () => {
  await sandbox.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

describe('--help', () => {
  it.each([
    ['fssconfig', FSSCONFIG_MANUAL],
    ['fss', FSS_MANUAL],
    ['fssck', FSSCK_MANUAL],
  ] as const)('%s --help prints the whole synopsis, exit 0', async (bin, manual) => {
    const result = await sandbox.run(bin, ['--help']);
    expect(result).toMatchObject({ status: 0, stderr: '' });
    for (const line of synopsisLines(manual)) expect(result.stdout).toContain(line);
    expect(result.stdout).toContain(`man ${manual.section} ${manual.name}`);
  });

  it('every fss command answers --help and `fss help COMMAND` with its own synopsis and options', async () => {
    for (const command of FSS_MANUAL.commands ?? []) {
      const result = await sandbox.run('fss', [...command.words, '--help']);
      expect(result, command.words.join(' ')).toMatchObject({ status: 0, stderr: '' });
      expect(result.stdout.startsWith(`usage: ${commandSynopsis(FSS_MANUAL, command)[0]}\n`)).toBe(true);
      expect(result.stdout).toContain(`${command.summary}.`);
      for (const option of command.options ?? []) expect(result.stdout).toContain(option.flags);
      const viaHelp = await sandbox.run('fss', ['help', ...command.words]);
      expect(viaHelp.stdout).toBe(result.stdout);
    }
    const group = await sandbox.run('fss', ['origin', '--help']);
    expect(group.stdout).toContain('fss origin add PATH');
    expect(group.stdout).toContain('fss origin ls');
    expect(group.stdout).not.toContain('fss status');
  });

  it('bad usage still prints the usage texts made from the manuals, exit 1', () => {
    expect(FSS_USAGE.split('\n').map((line) => line.replace(/^(usage:| ) {0,6}/, '').trim())).toEqual(
      synopsisLines(FSS_MANUAL),
    );
    expect(FSSCONFIG_USAGE).toBe(
      [
        'usage: fssconfig [-cxv] device path backup [cluster [size]]',
        '       fssconfig -u [-v] device',
        '       fssconfig -l [-v] [device]',
      ].join('\n'),
    );
    expect(FSSCK_USAGE).toBe('usage: fssck [--json] STORE');
  });
});

describe('man pages', () => {
  it.each(MANUALS.map((manual) => [manual.name, manual] as const))(
    '%s(8) renders under man -l with no warning and names every command and option',
    (name, manual) => {
      const path = join(dir, `${name}.8`);
      writeFileSync(path, manPage(manual, { source: 'fss 0.0.0', date: '2026-12-02' }));
      const { text, warnings } = manPageWarnings(path);
      expect(warnings).toBe('');
      expect(text).toMatch(new RegExp(`^${name.toUpperCase()}\\(8\\)`));
      // man justifies and may hyphenate: compare words, not lines.
      const words = text
        .replace(/‐\n\s*/g, '')
        .split(/\s+/)
        .join(' ');
      for (const line of synopsisLines(manual)) expect(words).toContain(line);
      for (const option of [
        ...(manual.options ?? []),
        ...(manual.commands ?? []).flatMap((c) => c.options ?? []),
      ]) {
        expect(words).toContain(option.flags);
      }
    },
  );

  const built = join(import.meta.dirname, '..', 'dist', 'man');
  it.skipIf(!existsSync(built))('the build wrote them to dist/man, as package.json "man" lists them', () => {
    const manifest = JSON.parse(readFileSync(join(import.meta.dirname, '..', 'package.json'), 'utf8')) as {
      man: string[];
    };
    expect(manifest.man).toEqual(MANUALS.map((manual) => `./dist/man/${manual.name}.8`));
    for (const manual of MANUALS) {
      const page = readFileSync(join(built, `${manual.name}.8`), 'utf8');
      const date = /^\.TH \S+ 8 "([^"]+)"/m.exec(page)?.[1]?.replace(/\\-/g, '-') ?? '';
      const version = /"fss ([^"]+)"/.exec(page)?.[1] ?? '';
      expect(page).toBe(
        manPage(manual, {
          source: `fss ${version}`,
          date,
          generatedFrom: 'packages/cli-fssconfig/src/manual',
        }),
      );
    }
  });
});
