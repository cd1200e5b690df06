/**
 * Releasing (issue 14 item 6). `changeset version` run on a throwaway copy of the workspace
 * manifests and changesets (nothing here is changed) gives sane versions: every publishable
 * package bumped from its version, within 0.x (no changeset may declare a major while the
 * packages are 0.x), each changeset consumed into the CHANGELOG of the packages it names,
 * internal dependencies still `workspace:^`, private packages left alone. And every
 * publishable package, packed with `pnpm pack` (workspace ranges turned into versions), installs
 * from its tarball into an empty directory with npm (third-party dependencies from the
 * registry or npm's cache, no install scripts), imports as ESM and CommonJS, and the installed
 * bins answer --help and their man pages render. The pack test needs a build (`pnpm -r build`).
 */
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { manPageWarnings } from '../test-utils/src/man';

const root = join(import.meta.dirname, '..', '..');
const scratch = mkdtempSync(join(tmpdir(), 'fss-release-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

interface Manifest {
  name: string;
  version: string;
  private?: boolean;
  bin?: Record<string, string>;
  man?: string[];
  dependencies?: Record<string, string>;
}

const packageDirs = readdirSync(join(root, 'packages')).filter((dir) =>
  existsSync(join(root, 'packages', dir, 'package.json')),
);
const manifestDirs = [...packageDirs.map((dir) => `packages/${dir}`), 'scripts/test-utils'];
const read = (base: string, dir: string): Manifest =>
  JSON.parse(readFileSync(join(base, dir, 'package.json'), 'utf8')) as Manifest;
const publishable = packageDirs.filter((dir) => read(root, `packages/${dir}`).private !== true);

/** Each changeset file: the packages it bumps and how, and its summary. */
function changesets(dir: string): Array<{ file: string; bumps: Record<string, string>; summary: string }> {
  return readdirSync(dir)
    .filter((file) => file.endsWith('.md') && file !== 'README.md')
    .map((file) => {
      const text = readFileSync(join(dir, file), 'utf8');
      const match = /^---\n([\s\S]*?)\n---\n([\s\S]*)$/.exec(text);
      expect(match, `${file}: front matter`).not.toBeNull();
      const bumps: Record<string, string> = {};
      for (const line of (match?.[1] ?? '').split('\n').filter((each) => each.trim() !== '')) {
        const entry = /^["'](@fss\/[a-z-]+)["']: (patch|minor|major)$/.exec(line.trim());
        expect(entry, `${file}: ${line}`).not.toBeNull();
        bumps[entry?.[1] as string] = entry?.[2] as string;
      }
      return { file, bumps, summary: (match?.[2] ?? '').trim() };
    });
}

/** -1, 0 or 1 as semver `a` is below, equal to or above `b` (plain x.y.z). */
function compareVersions(a: string, b: string): number {
  const left = a.split('.').map(Number);
  const right = b.split('.').map(Number);
  for (let index = 0; index < 3; index += 1) {
    const difference = (left[index] ?? 0) - (right[index] ?? 0);
    if (difference !== 0) return Math.sign(difference);
  }
  return 0;
}

describe('changesets', () => {
  const pending = changesets(join(root, '.changeset'));

  it('name only publishable workspace packages, no major while at 0.x, and cover every package', () => {
    const names = new Set(publishable.map((dir) => read(root, `packages/${dir}`).name));
    const named = new Set<string>();
    for (const { file, bumps, summary } of pending) {
      expect(summary.length, `${file} has a summary`).toBeGreaterThan(0);
      for (const [name, bump] of Object.entries(bumps)) {
        expect(names.has(name), `${file}: ${name} is a publishable package`).toBe(true);
        const version = read(root, `packages/${name.slice('@fss/'.length)}`).version;
        if (version.startsWith('0.')) expect(bump, `${file}: ${name}`).not.toBe('major');
        named.add(name);
      }
    }
    for (const name of names) expect(named.has(name), `${name} has no changeset`).toBe(true);
  });

  it('`changeset version` on a copy bumps every package sanely and consumes every changeset', () => {
    const copy = join(scratch, 'workspace');
    for (const file of ['package.json', 'pnpm-workspace.yaml']) cpSync(join(root, file), join(copy, file));
    cpSync(join(root, '.changeset'), join(copy, '.changeset'), { recursive: true });
    for (const dir of manifestDirs) {
      mkdirSync(join(copy, dir), { recursive: true });
      cpSync(join(root, dir, 'package.json'), join(copy, dir, 'package.json'));
    }
    const bin = join(root, 'node_modules', '@changesets', 'cli', 'bin.js');
    execFileSync(process.execPath, [bin, 'version'], { cwd: copy, stdio: 'pipe' });

    expect(readdirSync(join(copy, '.changeset')).sort()).toEqual(['README.md', 'config.json']);
    for (const dir of manifestDirs) {
      const before = read(root, dir);
      const after = read(copy, dir);
      if (before.private === true) {
        expect(after.version, `${dir} is private: not versioned`).toBe(before.version);
        continue;
      }
      expect(after.version, dir).toMatch(/^\d+\.\d+\.\d+$/);
      const [major = 0] = after.version.split('.').map(Number);
      expect(
        compareVersions(after.version, before.version),
        `${dir}: ${before.version} → ${after.version}`,
      ).toBe(1);
      if (before.version.startsWith('0.')) expect(major, `${dir}: stays 0.x`).toBe(0);
      for (const [name, range] of Object.entries(after.dependencies ?? {})) {
        if (name.startsWith('@fss/')) expect(range, `${dir} → ${name}`).toBe('workspace:^');
      }
      const changelog = readFileSync(join(copy, dir, 'CHANGELOG.md'), 'utf8');
      expect(changelog.startsWith(`# ${after.name}\n\n## ${after.version}\n`)).toBe(true);
      for (const { file, bumps, summary } of pending) {
        if (bumps[after.name] === undefined) continue;
        const firstLine = summary.split('\n')[0] as string;
        expect(changelog, `${dir}: ${file}`).toContain(firstLine);
      }
    }
  });
});

const built = publishable.every((dir) => existsSync(join(root, 'packages', dir, 'dist')));
if (!built) console.warn('SKIPPED pack test: packages are not built (pnpm -r build)');

describe.skipIf(!built)('packed packages', () => {
  it('install from their tarballs into an empty directory, import, and their bins and man pages work', () => {
    const tarballs = join(scratch, 'tarballs');
    for (const dir of publishable) {
      execFileSync('pnpm', ['pack', '--pack-destination', tarballs], {
        cwd: join(root, 'packages', dir),
        stdio: 'pipe',
      });
    }
    const files = readdirSync(tarballs).map((file) => join(tarballs, file));
    expect(files).toHaveLength(publishable.length);
    const app = join(scratch, 'app');
    mkdirSync(app);
    execFileSync('npm', ['init', '-y'], { cwd: app, stdio: 'pipe' });
    execFileSync(
      'npm',
      ['install', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline', ...files],
      { cwd: app, stdio: 'pipe', timeout: 300_000 },
    );
    for (const dir of publishable) {
      const { name } = read(root, `packages/${dir}`);
      const count = (kind: 'import' | 'require') =>
        execFileSync(
          process.execPath,
          kind === 'import'
            ? ['--input-type=module', '-e', `console.log(Object.keys(await import('${name}')).length)`]
            : ['-e', `console.log(Object.keys(require('${name}')).length)`],
          { cwd: app, encoding: 'utf8' },
        ).trim();
      expect(Number(count('import')), `${name} as ESM`).toBeGreaterThan(0);
      expect(Number(count('require')), `${name} as CommonJS`).toBeGreaterThan(0);
      const installed = read(join(app, 'node_modules'), name);
      for (const [name2, range] of Object.entries(installed.dependencies ?? {})) {
        expect(range, `${name} → ${name2}: no workspace: range in a tarball`).not.toMatch(/^workspace:/);
      }
      for (const program of Object.keys(installed.bin ?? {})) {
        const help = execFileSync(join(app, 'node_modules', '.bin', program), ['--help'], {
          cwd: app,
          encoding: 'utf8',
        });
        expect(help, program).toMatch(new RegExp(`^usage: ${program} `));
      }
      for (const page of installed.man ?? []) {
        expect(manPageWarnings(join(app, 'node_modules', name, page)).warnings, page).toBe('');
      }
    }
    const schema = execFileSync(
      process.execPath,
      ['-e', "console.log(require('@fss/cli-fssconfig/status.schema.json').properties.schemaVersion.const)"],
      { cwd: app, encoding: 'utf8' },
    );
    expect(schema.trim()).toBe('1');
  }, 600_000);
});
