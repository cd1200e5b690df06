import { defineConfig } from 'tsup';
import { packageBuild } from '../../tsup.base';

// shims: the CJS build needs `import.meta.url` (freeze.ts hands koffi's path to a worker).
export default defineConfig(packageBuild(['src/index.ts'], { shims: true }));
