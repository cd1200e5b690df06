// The build step after tsup: dist/man/fssconfig.8, fss.8, fssck.8 from the manuals in
// src/manual/ (package.json "man" lists them). Run by `pnpm build`.
import { readFileSync } from 'node:fs';
import { writeManPages } from '@fss/manual';
import { MANUALS } from '../src/manual/index';

const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  version: string;
};
const written = await writeManPages(MANUALS, new URL('../dist/man/', import.meta.url).pathname, {
  source: `fss ${version}`,
  generatedFrom: 'packages/cli-fssconfig/src/manual',
});
console.log(`man pages: ${written.join(', ')}`);
