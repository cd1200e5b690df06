import { defineConfig } from 'tsup';
import { packageBuild } from '../../tsup.base';

// `testing/index` imports `@fss/core` by name, and stays external so the conformance suite
// shares one FssError class with the package it tests (instanceof must hold).
export default defineConfig(
  packageBuild(
    { index: 'src/index.ts', 'testing/index': 'src/testing/index.ts' },
    { external: ['@fss/core', 'vitest'] },
  ),
);
