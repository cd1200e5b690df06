import { defineConfig } from 'tsup';
import { packageBuild } from '../../tsup.base';

// The library (ESM + CJS + types), and the fss-nbd development binary (ESM, executable).
export default defineConfig([
  packageBuild(['src/index.ts']),
  packageBuild(
    { cli: 'src/cli.ts' },
    { format: ['esm'], dts: false, clean: false, banner: { js: '#!/usr/bin/env node' } },
  ),
]);
