import { existsSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// Every package is a vitest project. The `@fss/source` export condition makes a
// package that imports a sibling (`@fss/core`) load the sibling's TypeScript
// sources, so tests never need a prior build. It must be set for both the client
// and the SSR resolver: vitest runs Node tests through the SSR one.
const packages = readdirSync(new URL('./packages', import.meta.url)).filter((name) =>
  existsSync(new URL(`./packages/${name}/package.json`, import.meta.url)),
);

export default defineConfig({
  resolve: { conditions: ['@fss/source'] },
  ssr: { resolve: { conditions: ['@fss/source'] } },
  test: {
    // A daemon a test starts without its own state directory (Sandbox sets FSS_STATEDIR,
    // or --statedir) would record persistent units in /var/lib/fss as root, where another
    // test's daemon would bring them back. This path cannot be created: such a daemon fails
    // to start, loudly, instead.
    env: { FSS_STATEDIR: '/proc/fss-tests-must-give-fssd-a-state-dir' },
    projects: [
      ...packages.map((name) => ({
        extends: true as const,
        test: {
          name,
          root: fileURLToPath(new URL(`./packages/${name}`, import.meta.url)),
          include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      })),
      // Repository rules (package shape, dependency graph, exports vs dist); needs a build.
      {
        extends: true as const,
        test: {
          name: 'repo',
          root: fileURLToPath(new URL('./scripts', import.meta.url)),
          include: ['test/**/*.test.ts'],
          testTimeout: 60_000,
        },
      },
      // The bench's pure logic (interleaving, medians, the table and results file); the
      // benchmarks themselves run only through `pnpm bench`.
      {
        extends: true as const,
        test: {
          name: 'bench',
          root: fileURLToPath(new URL('./bench', import.meta.url)),
          include: ['test/**/*.test.ts'],
        },
      },
    ],
  },
});
