import { defineConfig } from 'tsup';
import { packageBuild } from '../../tsup.base';

// The library (ESM + CJS + d.ts) and the fssd program beside it in dist/, with a shebang:
// dist/fssd.cjs, CommonJS on purpose (its modules load with synchronous reads, so libuv's
// thread pool is still unused when src/bin/thread-pool.ts sizes it; an ES module entry is read
// through the pool, which then already has Node's 4 threads).
// publicDir: systemd/fssd.service ships as dist/fssd.service.
export default defineConfig([
  packageBuild(['src/index.ts'], { shims: true, clean: false }),
  packageBuild(
    { fssd: 'src/bin/fssd.ts' },
    {
      format: ['cjs'],
      dts: false,
      clean: false,
      shims: true,
      banner: { js: '#!/usr/bin/env node' },
      publicDir: 'systemd',
    },
  ),
]);
