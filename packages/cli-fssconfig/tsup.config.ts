import { defineConfig } from 'tsup';
import { packageBuild } from '../../tsup.base';

// The library (the typed control client and the CLI's pure pieces) is ESM + CJS + d.ts like
// every package; the three programs are ESM only, with a shebang, next to it in dist/ (the
// client finds fssd.js beside itself when it starts the daemon).
export default defineConfig([
  packageBuild(['src/index.ts'], { shims: true, clean: false }),
  packageBuild(
    { fssconfig: 'src/bin/fssconfig.ts', fssd: 'src/bin/fssd.ts', fss: 'src/bin/fss.ts' },
    // publicDir: systemd/fssd.service ships as dist/fssd.service.
    {
      format: ['esm'],
      dts: false,
      clean: false,
      banner: { js: '#!/usr/bin/env node' },
      publicDir: 'systemd',
    },
  ),
]);
