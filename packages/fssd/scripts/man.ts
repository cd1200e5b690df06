// The build step after tsup: dist/man/fssd.8 from src/manual.ts (package.json "man" lists
// it), and the systemd files beside the program. Run by `pnpm build`.
import { readFileSync } from 'node:fs';
import { writeManPages } from '@fss/manual';
import { FSSD_MANUAL } from '../src/manual';

const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  version: string;
};
const written = await writeManPages([FSSD_MANUAL], new URL('../dist/man/', import.meta.url).pathname, {
  source: `fss ${version}`,
  generatedFrom: 'packages/fssd/src/manual.ts',
});
console.log(`man pages: ${written.join(', ')}`);
