import { defineConfig } from 'tsup';
import { packageBuild } from '../../tsup.base';

// The library (ESM + CJS + d.ts) and the fssd program (ESM, with a shebang) beside it in dist/.
// publicDir: systemd/fssd.service ships as dist/fssd.service.
export default defineConfig([
  packageBuild(['src/index.ts'], { shims: true, clean: false }),
  packageBuild(
    { fssd: 'src/bin/fssd.ts' },
    {
      format: ['esm'],
      dts: false,
      clean: false,
      banner: { js: '#!/usr/bin/env node' },
      publicDir: 'systemd',
    },
  ),
]);
