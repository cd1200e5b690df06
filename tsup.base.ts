import type { Options } from 'tsup';

/**
 * The one build configuration every package reuses: typed ESM and CJS for Node 20.
 * Dependencies stay external (tsup's default), so koffi keeps resolving its own
 * prebuilt binary at run time.
 */
export function packageBuild(entry: string[] | Record<string, string>, overrides: Options = {}): Options {
  return {
    entry,
    format: ['esm', 'cjs'],
    dts: true,
    sourcemap: true,
    clean: true,
    target: 'node20',
    platform: 'node',
    splitting: false,
    ...overrides,
  };
}
