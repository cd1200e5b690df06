/**
 * Repository rules, checked on every package (STYLE.md 2, 3, 25):
 * - the shared package.json shape (ESM, sideEffects false, files = dist, exports with the
 *   `@fss/source` condition, typed import and require entries);
 * - a README with the man-page sections, src/ and test/ folders;
 * - the dependency graph of SPEC §3: nothing flows upward, and core does no I/O of its own;
 * - after a build, every path in `exports` exists and every built entry is exported;
 * - `npm pack` would publish only dist, README.md and package.json.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..', '..');
const packageDirs = readdirSync(join(root, 'packages')).filter((dir) =>
  existsSync(join(root, 'packages', dir, 'package.json')),
);

/** SPEC §3: what each package may depend on. */
const ALLOWED_DEPENDENCIES: Record<string, string[]> = {
  core: [],
  cache: ['core'],
  engine: ['core', 'cache'],
  'backing-file': ['core'],
  'blockdev-linux': ['core'],
  'backing-rawdev': ['core', 'blockdev-linux'],
  nbd: ['core'],
  fuse: ['core', 'blockdev-linux'],
  control: ['core'],
  manual: [],
  fssd: [
    'core',
    'cache',
    'engine',
    'backing-file',
    'blockdev-linux',
    'backing-rawdev',
    'nbd',
    'control',
    'fuse',
    'manual',
  ],
  'cli-fssconfig': ['core', 'control', 'nbd', 'manual'],
};

/**
 * Packages a client installs: they must never pull in native code (koffi) or the Linux device
 * layer, directly or through another package, so a Node program that only talks to fssd
 * installs almost nothing.
 */
const CLIENT_PACKAGES = ['control', 'cli-fssconfig', 'nbd', 'core', 'cache', 'manual'];
const CLIENT_FORBIDDEN = ['koffi', '@fss/blockdev-linux'];

interface PackageJson {
  name: string;
  type?: string;
  sideEffects?: boolean;
  files?: string[];
  engines?: { node?: string };
  exports: Record<string, unknown>;
  dependencies?: Record<string, string>;
  bin?: Record<string, string>;
}

function readPackage(dir: string): PackageJson {
  return JSON.parse(readFileSync(join(root, 'packages', dir, 'package.json'), 'utf8'));
}

/** Every file path named in an exports map (import/require defaults and types). */
function exportedFiles(exports: unknown): string[] {
  if (typeof exports === 'string') return [exports];
  if (exports === null || typeof exports !== 'object') return [];
  return Object.entries(exports).flatMap(([key, value]) =>
    key === '@fss/source' ? [] : exportedFiles(value),
  );
}

it('finds the packages of the design card', () => {
  for (const name of [
    'core',
    'cache',
    'backing-file',
    'backing-rawdev',
    'blockdev-linux',
    'cli-fssconfig',
    'nbd',
    'control',
    'fssd',
    'engine',
  ]) {
    expect(packageDirs).toContain(name);
  }
});

describe.each(packageDirs)('package %s', (dir) => {
  const pkg = readPackage(dir);
  const packageRoot = join(root, 'packages', dir);

  it('has the shared package.json shape', () => {
    expect(pkg.name).toBe(`@fss/${dir}`);
    expect(pkg.type).toBe('module');
    expect(pkg.sideEffects).toBe(false);
    expect(pkg.files).toEqual(['dist']);
    expect(pkg.engines?.node).toBe('>=20.19');
    expect(pkg.exports['./package.json']).toBe('./package.json');
    const main = pkg.exports['.'] as Record<string, { types: string; default: string } | string>;
    expect(main['@fss/source']).toBe('./src/index.ts');
    expect(main.import).toMatchObject({
      types: expect.stringMatching(/\.d\.ts$/),
      default: expect.stringMatching(/\.js$/),
    });
    expect(main.require).toMatchObject({
      types: expect.stringMatching(/\.d\.cts$/),
      default: expect.stringMatching(/\.cjs$/),
    });
  });

  it('has src/, test/ and a README with the man-page sections', () => {
    expect(existsSync(join(packageRoot, 'src'))).toBe(true);
    expect(existsSync(join(packageRoot, 'test'))).toBe(true);
    const readme = readFileSync(join(packageRoot, 'README.md'), 'utf8');
    for (const section of ['NAME', 'SYNOPSIS', 'API', 'EXAMPLES', 'ERRORS']) {
      expect(readme, `README section ${section}`).toMatch(new RegExp(`^#+ ${section}\\b`, 'm'));
    }
  });

  it('depends only on packages below it (SPEC §3), through the workspace protocol', () => {
    const internal = Object.entries(pkg.dependencies ?? {}).filter(([name]) => name.startsWith('@fss/'));
    for (const [name, range] of internal) {
      expect(ALLOWED_DEPENDENCIES[dir], `${dir} is not in the dependency table`).toBeDefined();
      expect(ALLOWED_DEPENDENCIES[dir]).toContain(name.slice('@fss/'.length));
      expect(range).toMatch(/^workspace:/);
    }
  });

  if (CLIENT_PACKAGES.includes(dir)) {
    it('never depends on koffi or blockdev-linux, even indirectly', () => {
      const reached = transitiveDependencies(dir);
      for (const forbidden of CLIENT_FORBIDDEN) expect([...reached]).not.toContain(forbidden);
    });
  }

  it('after a build, exports and dist agree', () => {
    const dist = join(packageRoot, 'dist');
    expect(existsSync(dist), `${dir}/dist is missing: run "pnpm build" first`).toBe(true);
    for (const file of exportedFiles(pkg.exports)) {
      expect(existsSync(join(packageRoot, file)), `${dir}: exported ${file} was not built`).toBe(true);
    }
    const exported = new Set(exportedFiles(pkg.exports).map((file) => file.replace(/^\.\//, '')));
    const binaries = new Set(Object.values(pkg.bin ?? {}).map((file) => file.replace(/^\.\//, '')));
    const entries = readdirSync(dist, { recursive: true, encoding: 'utf8' }).filter((file) =>
      /\.(c?js|d\.c?ts)$/.test(file),
    );
    for (const file of entries) {
      const path = `dist/${file}`;
      expect(exported.has(path) || binaries.has(path), `${dir}: built ${path} is not exported`).toBe(true);
    }
  });

  it('packs only dist, README.md and package.json', () => {
    const output = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
      cwd: packageRoot,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const files = (JSON.parse(output) as Array<{ files: Array<{ path: string }> }>)[0]!.files.map(
      (f) => f.path,
    );
    expect(files).toContain('package.json');
    expect(files).toContain('README.md');
    for (const file of files) expect(file).toMatch(/^(dist\/|README\.md$|package\.json$)/);
  });
});

/** Every dependency `dir` reaches: workspace packages followed through their package.json. */
function transitiveDependencies(dir: string): Set<string> {
  const reached = new Set<string>();
  const pending = [dir];
  while (pending.length > 0) {
    const next = readPackage(pending.pop() as string);
    for (const name of Object.keys(next.dependencies ?? {})) {
      if (reached.has(name)) continue;
      reached.add(name);
      if (name.startsWith('@fss/')) pending.push(name.slice('@fss/'.length));
    }
  }
  return reached;
}

describe('core does no I/O of its own', () => {
  it('imports no fs, net, child_process or koffi outside its tests', () => {
    const src = join(root, 'packages', 'core', 'src');
    const files = readdirSync(src, { recursive: true, encoding: 'utf8' }).filter(
      (file) => file.endsWith('.ts') && !file.endsWith('.test.ts') && !file.startsWith('testing'),
    );
    expect(files.length).toBeGreaterThan(5);
    for (const file of files) {
      const text = readFileSync(join(src, file), 'utf8');
      expect(text, file).not.toMatch(/from ['"](node:)?(fs|fs\/promises|net|child_process|dgram)['"]|koffi/);
    }
  });
});
