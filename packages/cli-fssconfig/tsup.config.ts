import { defineConfig } from 'tsup';
import { packageBuild } from '../../tsup.base';

// The library (the CLI's NetBSD-compatible pieces) is ESM + CJS + d.ts like every package; the
// programs are ESM only, with a shebang, next to it in dist/.
export default defineConfig([
  packageBuild(['src/index.ts'], { clean: false }),
  packageBuild(
    { fssconfig: 'src/bin/fssconfig.ts', fss: 'src/bin/fss.ts', fssck: 'src/bin/fssck.ts' },
    { format: ['esm'], dts: false, clean: false, banner: { js: '#!/usr/bin/env node' } },
  ),
]);
