/**
 * The fss-nbd development binary, end to end: usage errors, start-up errors, serving an image
 * with a start-up snapshot (NetBSD t_fss `basic` through real clients), and a clean SIGTERM.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '@fss/test-utils';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { binaryCommand, startBinary } from './binary';
import { run } from './helpers';

const MiB = 1024 * 1024;
let dir: ReturnType<typeof tempDir>;
beforeAll(() => {
  dir = tempDir('fss-nbd-cli-');
});
afterAll(() => dir.remove());

describe('fss-nbd', () => {
  it('prints usage and exits 1 on bad arguments', async () => {
    for (const args of [
      [],
      ['a', 'b'],
      ['--tcp', 'nonsense', 'x.img'],
      ['--snapshot', 'bad', 'x.img'],
      ['--bogus'],
    ]) {
      const [command, commandArgs] = binaryCommand(args);
      const result = await run(command, commandArgs);
      expect(result.code, args.join(' ')).toBe(1);
      expect(result.stderr).toMatch(/^usage: fss-nbd /);
    }
  });

  it('exits 1 with an errno message when the image cannot be opened', async () => {
    const [command, commandArgs] = binaryCommand([
      '-s',
      join(dir.path, 'x.sock'),
      join(dir.path, 'missing.img'),
    ]);
    const result = await run(command, commandArgs);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^fss-nbd: ENOENT: .*open '.*missing\.img'/);
  });

  it('serves an origin and a start-up snapshot: t_fss basic through nbdcopy and qemu-io', async () => {
    const image = join(dir.path, 'basic.img');
    const contents = Buffer.alloc(8 * MiB);
    contents.write('Original data\n', 0);
    writeFileSync(image, contents);
    const replacement = join(dir.path, 'replacement.bin');
    writeFileSync(replacement, Buffer.concat([Buffer.from('Replacement data\n'), Buffer.alloc(512 - 17)]));
    const originSocket = join(dir.path, 'origin.sock');
    const snapshotSocket = join(dir.path, 'fss0.sock');
    const binary = await startBinary(['-s', originSocket, '--snapshot', `fss0=${snapshotSocket}`, image]);
    try {
      const originUri = `nbd+unix:///basic.img?socket=${originSocket}`;
      const snapshotUri = `nbd+unix:///fss0?socket=${snapshotSocket}`;
      const info = await run('nbdinfo', ['--json', snapshotUri]);
      expect(JSON.parse(info.stdout).exports[0]).toMatchObject({
        is_read_only: true,
        'export-size': 8 * MiB,
      });

      const write = await run('qemu-io', ['-f', 'raw', '-c', `write -s ${replacement} 0 512`, originUri]);
      expect(write.code, write.stderr).toBe(0);
      const fromSnapshot = await run('sh', ['-c', `nbdcopy '${snapshotUri}' - | head -c 14`]);
      expect(fromSnapshot.stdout).toBe('Original data\n');
      const fromOrigin = await run('sh', ['-c', `nbdcopy '${originUri}' - | head -c 17`]);
      expect(fromOrigin.stdout).toBe('Replacement data\n');
    } finally {
      expect(await binary.stop()).toBe(0);
    }
    expect(existsSync(originSocket)).toBe(false);
    expect(existsSync(snapshotSocket)).toBe(false);
  });
});
