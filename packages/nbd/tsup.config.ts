import { defineConfig } from 'tsup';
import { packageBuild } from '../../tsup.base';

// The library (ESM + CJS + types), and the fss-nbd development binary. The binary is CommonJS
// on purpose: CJS modules load with synchronous reads, so libuv's thread pool is still unused
// when cli.ts sets UV_THREADPOOL_SIZE (the ESM loader reads files on the pool, which sizes it
// before any of our code runs).
export default defineConfig([
  packageBuild(['src/index.ts']),
  packageBuild(
    { cli: 'src/cli.ts' },
    { format: ['cjs'], dts: false, clean: false, banner: { js: '#!/usr/bin/env node' } },
  ),
]);
