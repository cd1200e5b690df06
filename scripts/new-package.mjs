#!/usr/bin/env node
// Scaffolds packages/<name> with the shape every package shares (see docs/decisions.md).
// Usage: node scripts/new-package.mjs <dir-name> "<one-line description>" [dep ...]
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';

const [dir, description, ...deps] = process.argv.slice(2);
if (!dir || !description) {
  console.error('usage: node scripts/new-package.mjs <dir-name> "<description>" [@fss/dep ...]');
  process.exit(1);
}
const root = new URL(`../packages/${dir}/`, import.meta.url);
if (existsSync(new URL('package.json', root))) {
  console.error(`packages/${dir}/package.json exists already`);
  process.exit(1);
}
mkdirSync(new URL('src/', root), { recursive: true });
mkdirSync(new URL('test/', root), { recursive: true });
const pkg = {
  name: `@fss/${dir}`,
  version: '0.0.0',
  description,
  license: 'BSD-2-Clause',
  type: 'module',
  sideEffects: false,
  engines: { node: '>=20.19' },
  main: './dist/index.cjs',
  module: './dist/index.js',
  types: './dist/index.d.ts',
  exports: {
    '.': {
      '@fss/source': './src/index.ts',
      import: { types: './dist/index.d.ts', default: './dist/index.js' },
      require: { types: './dist/index.d.cts', default: './dist/index.cjs' },
    },
    './package.json': './package.json',
  },
  files: ['dist'],
  repository: { type: 'git', directory: `packages/${dir}` },
  scripts: { build: 'tsup', test: `vitest run --root ../.. --project ${dir}` },
  dependencies: Object.fromEntries(deps.map((d) => [d, 'workspace:^'])),
};
writeFileSync(new URL('package.json', root), `${JSON.stringify(pkg, null, 2)}\n`);
writeFileSync(
  new URL('tsup.config.ts', root),
  "import { defineConfig } from 'tsup';\nimport { packageBuild } from '../../tsup.base';\n\nexport default defineConfig(packageBuild(['src/index.ts']));\n",
);
console.log(`created packages/${dir}`);
