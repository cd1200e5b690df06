import { defineConfig } from 'tsup';
import { packageBuild } from '../../tsup.base';

// Two builds. The library is ESM + CJS. The conformance suite (`@fss/engine/testing`) is ESM
// only: it runs inside vitest, which cannot be loaded with require(). It imports `@fss/core` and `@fss/engine`
// by name, kept external, so the suite and the store it tests share one FssError class.
// `clean` is off because the two builds share dist/; the build script empties it first.
export default defineConfig([
  packageBuild(['src/index.ts'], { clean: false }),
  packageBuild(
    { 'testing/index': 'src/testing/index.ts' },
    { format: ['esm'], external: ['@fss/core', '@fss/engine', 'vitest'], clean: false },
  ),
]);
