/**
 * No shell command is ever built from user input (issue 11 item 6). Shipped code (every
 * package's src/, tests aside) may start programs only with `spawn` or `execFile` and an
 * argument array: no `exec`/`execSync` (which run `/bin/sh -c STRING`), no `shell: true`
 * option. The child_process users are listed, so a new one is a reviewed change.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..', '..');

function sources(dir: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) found.push(...sources(path));
    else if (/\.[cm]?[jt]s$/.test(entry.name) && !/\.test\.ts$/.test(entry.name)) found.push(path);
  }
  return found;
}

const shipped = readdirSync(join(root, 'packages')).flatMap((name) => {
  try {
    return sources(join(root, 'packages', name, 'src'));
  } catch {
    return [];
  }
});

describe('no shell', () => {
  it('child_process is used only by the reviewed files, with spawn/execFile and no shell', () => {
    const users: string[] = [];
    for (const path of shipped) {
      const text = readFileSync(path, 'utf8');
      if (!/['"]node:child_process['"]|['"]child_process['"]/.test(text)) continue;
      const file = relative(root, path);
      users.push(file);
      const imported = /import\s*\{([^}]*)\}\s*from\s*['"](?:node:)?child_process['"]/.exec(text)?.[1] ?? '';
      const names = imported.split(',').map((name) => name.trim().split(/\s+/)[0]);
      for (const name of names)
        expect(['spawn', 'execFile', 'type ChildProcess', 'type'], file).toContain(name);
      expect(text, `${file} passes shell: true`).not.toMatch(/shell\s*:\s*true/);
    }
    expect(users.sort()).toEqual([
      'packages/cli-fssconfig/src/copy/qcow2.ts', // qemu-img with an argument array
      'packages/control/src/client/spawn.ts', // fssd, with an argument array
    ]);
  });
});
