/**
 * The build step: writes each manual's page as `DIR/NAME.SECTION` (a package's dist/man/,
 * which its package.json "man" lists). The date is SOURCE_DATE_EPOCH's when set (reproducible
 * builds), else today's.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Manual } from './manual';
import { manPage } from './roff';

export function manPageDate(env: NodeJS.ProcessEnv = process.env): string {
  const epoch = env['SOURCE_DATE_EPOCH'];
  const date = epoch !== undefined && /^\d+$/.test(epoch) ? new Date(Number(epoch) * 1000) : new Date();
  return date.toISOString().slice(0, 10);
}

export async function writeManPages(
  manuals: readonly Manual[],
  dir: string,
  options: { source: string; generatedFrom?: string; date?: string },
): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const written: string[] = [];
  for (const manual of manuals) {
    const path = join(dir, `${manual.name}.${manual.section}`);
    await writeFile(
      path,
      manPage(manual, {
        source: options.source,
        date: options.date ?? manPageDate(),
        ...(options.generatedFrom === undefined ? {} : { generatedFrom: options.generatedFrom }),
      }),
    );
    written.push(path);
  }
  return written;
}
