/**
 * fssck on real stores: one a unit wrote through the engine and fssd (clean, with its copied
 * count), the same store damaged (exit 1, with what is wrong), bad usage and an unreadable
 * store (exit 2), and the JSON report.
 */
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Sandbox } from '@fss/test-utils';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const exec = promisify(execFile);
let sandbox: Sandbox;

beforeEach(async () => {
  sandbox = await Sandbox.create();
  writeFileSync(sandbox.path('image'), Buffer.alloc(2 * 1024 * 1024, 0x33));
});
afterEach(async () => {
  await sandbox.cleanup();
});

/** A store with three clusters copied: fss0 of the image, written three times, unconfigured. */
async function writtenStore(): Promise<string> {
  const result = await sandbox.run('fssconfig', ['-c', 'fss0', 'image', 'backup']);
  expect(result.status).toBe(0);
  const uri = `nbd+unix:///?socket=${join(sandbox.runDir, 'origin', 'image.sock')}`;
  for (const offset of ['0', '256k', '1M']) {
    await exec('qemu-io', ['-f', 'raw', uri, '-c', `write -P 0x44 ${offset} 4k`]);
  }
  expect((await sandbox.run('fssconfig', ['-u', 'fss0'])).status).toBe(0);
  return sandbox.path('backup');
}

describe('fssck', () => {
  it('finds the store of an unconfigured unit clean, with its copied clusters', async () => {
    const store = await writtenStore();
    const result = await sandbox.run('fssck', [store]);
    expect(result.status).toBe(0);
    expect(result.stderr).toBe('');
    const lines = result.stdout.split('\n');
    expect(lines[0]).toMatch(
      new RegExp(
        `^fssck: ${store}: format 2, commit \\d+, origin .*image \\(2M\\), 32 cluster of 64K, 3 copied, valid, taken `,
      ),
    );
    expect(lines[1]).toBe(`fssck: ${store}: clean`);
    const json = JSON.parse((await sandbox.run('fssck', ['--json', store])).stdout);
    expect(json).toMatchObject({
      store,
      clean: true,
      copiedClusters: 3,
      tornEntries: 0,
      header: { clusterCount: 32 },
    });
  });

  it('reports a damaged store with exit 1 and what is wrong', async () => {
    const store = await writtenStore();
    const bytes = readFileSync(store);
    bytes[65536 + 4] = 1; // cluster 1's table entry now points into the table (store cluster 1)
    writeFileSync(store, bytes);
    const result = await sandbox.run('fssck', [store]);
    expect(result.status).toBe(1);
    expect(result.stdout).toContain(
      `fssck: ${store}: error: cluster 1 maps into the header or table (store cluster 1)`,
    );
    expect(result.stdout).toMatch(new RegExp(`fssck: ${store}: damaged \\(\\d+ errors?\\)\\n$`));
    bytes[0] = 0; // and the magic
    writeFileSync(store, bytes);
    const header = await sandbox.run('fssck', [store]);
    expect(header).toMatchObject({
      status: 1,
      stdout: `fssck: ${store}: error: backing store header: bad magic, not an fss backing store\nfssck: ${store}: damaged (1 error)\n`,
    });
  });

  it('exits 2 for bad usage and for a store it cannot open', async () => {
    expect(await sandbox.run('fssck', [])).toMatchObject({
      status: 2,
      stderr: 'usage: fssck [--json] STORE\n',
    });
    expect(await sandbox.run('fssck', ['a', 'b'])).toMatchObject({ status: 2 });
    expect(await sandbox.run('fssck', ['--bogus'])).toMatchObject({ status: 2 });
    expect(await sandbox.run('fssck', [sandbox.path('missing')])).toMatchObject({
      status: 2,
      stdout: '',
      stderr: `fssck: ${sandbox.path('missing')}: No such file or directory\n`,
    });
  });
});
