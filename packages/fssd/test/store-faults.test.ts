/**
 * Reliability through the real daemon and its NBD exports (issue 11, items 1 and 3).
 *
 * - A backing store on a 2 MiB tmpfs fills while 64 MiB are written through the origin
 *   export (root: mounts a tmpfs): every origin write is acknowledged and the image equals
 *   the model afterwards; the unit turns invalid, its export answers reads with an NBD error,
 *   `-l` still lists it, the log says `fss0: snapshot invalid: …` exactly once, `-u` works.
 * - A unit unconfigured while a client reads it: the reader gets errors (no hang), the daemon
 *   stays up, origin writes go on.
 * - `fss origin rm` with a client connected to the origin export: EBUSY naming the way out;
 *   `--force` disconnects the client (a clean error for it, no hang) and releases the origin.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NbdClient, pattern, Sandbox } from '@fss/test-utils';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const MiB = 1024 * 1024;
const isRoot = process.getuid?.() === 0;
let sandbox: Sandbox;

beforeEach(async () => {
  sandbox = await Sandbox.create();
});
afterEach(async () => {
  await sandbox.cleanup();
});

async function ok(bin: 'fssconfig' | 'fss', args: string[]): Promise<string> {
  const result = await sandbox.run(bin, args);
  expect(result.status, `${bin} ${args.join(' ')}: ${result.stderr}`).toBe(0);
  return result.stdout;
}

function originSocket(name: string): string {
  return join(sandbox.runDir, 'origin', `${name}.sock`);
}

describe.skipIf(!isRoot)('a full backing store (root: a 2 MiB tmpfs)', () => {
  it('64 MiB through the origin export: every write lands, the unit turns invalid once, -l lists it, -u works', async () => {
    const imageBytes = 64 * MiB;
    writeFileSync(sandbox.path('image'), pattern(imageBytes, 3));
    const small = sandbox.path('small');
    mkdirSync(small);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', small]);
    try {
      await ok('fssconfig', ['-c', 'fss0', sandbox.path('image'), join(small, 'backup')]);
      const client = await NbdClient.connect(originSocket('image'));
      const model = pattern(imageBytes, 9);
      const writes: Promise<void>[] = [];
      for (let at = 0; at < imageBytes; at += 256 * 1024) {
        writes.push(client.write(at, model.subarray(at, at + 256 * 1024)));
        if (writes.length >= 16) await writes.shift();
      }
      await Promise.all(writes); // every write acknowledged: none rejected
      await client.flush();
      client.disconnect();
      expect(Buffer.compare(readFileSync(sandbox.path('image')), model)).toBe(0);
      const status = JSON.parse(await ok('fss', ['status', '--json'])) as {
        units: Array<{ name: string; valid: boolean; invalidReason: string | null }>;
      };
      expect(status.units[0]).toMatchObject({ name: 'fss0', valid: false });
      expect(status.units[0]?.invalidReason).toMatch(/backing store/);
      const reader = await NbdClient.connect(join(sandbox.runDir, 'fss0.sock'));
      await expect(reader.read(0, 4096)).rejects.toMatchObject({ nbdError: expect.any(Number) });
      reader.disconnect();
      expect(await ok('fssconfig', ['-l', 'fss0'])).toBe(`fss0: ${sandbox.path('image')}\n`);
      const log = readFileSync(join(sandbox.runDir, 'fssd.log'), 'utf8');
      expect(log.match(/fss0: snapshot invalid: /g)).toHaveLength(1);
      await ok('fssconfig', ['-u', 'fss0']);
      expect(await ok('fssconfig', ['-l', 'fss0'])).toBe('fss0: not in use\n');
    } finally {
      await sandbox.stopDaemon().catch(() => undefined);
      execFileSync('umount', ['-l', small]);
    }
  }, 120_000);
});

describe('removal while clients are connected', () => {
  beforeEach(() => {
    writeFileSync(sandbox.path('image'), pattern(8 * MiB, 5));
  });

  it('a unit unconfigured under a reader: the reader gets errors, the daemon and origin writers go on', async () => {
    await ok('fss', ['origin', 'add', sandbox.path('image')]);
    const writer = await NbdClient.connect(originSocket('image'));
    await ok('fssconfig', ['-c', 'fss0', sandbox.path('image'), sandbox.path('backup')]);
    const reader = await NbdClient.connect(join(sandbox.runDir, 'fss0.sock'));
    let reads = 0;
    let failure: unknown;
    const reading = (async () => {
      for (;;) {
        try {
          await reader.read((reads % 8) * MiB, MiB);
          reads += 1;
        } catch (error) {
          failure = error;
          return;
        }
      }
    })();
    while (reads < 3) await new Promise((resolve) => setTimeout(resolve, 10));
    await writer.write(MiB, new Uint8Array(4096).fill(0xaa)); // copy-on-write for fss0
    const cleared = await sandbox.run('fssconfig', ['-u', 'fss0']);
    expect(cleared.status, cleared.stderr).toBe(0);
    await reading; // ends: no hang
    expect(failure).toBeDefined();
    // The origin writer never noticed: same connection, writes still land.
    await writer.write(0, new Uint8Array(4096).fill(0xbb));
    await writer.flush();
    writer.disconnect();
    const image = readFileSync(sandbox.path('image'));
    expect([image[0], image[MiB]]).toEqual([0xbb, 0xaa]);
    expect(await ok('fssconfig', ['-l', 'fss0'])).toBe('fss0: not in use\n');
  }, 60_000);

  it('fss origin rm with a client connected is EBUSY saying how; --force disconnects it and releases', async () => {
    await ok('fss', ['origin', 'add', sandbox.path('image')]);
    const client = await NbdClient.connect(originSocket('image'));
    const refused = await sandbox.run('fss', ['origin', 'rm', 'image']);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/EBUSY|busy/i);
    expect(refused.stderr).toContain('fss origin rm --force image');
    await client.write(0, new Uint8Array(512).fill(1)); // still served
    await ok('fss', ['origin', 'rm', '--force', 'image']);
    await client.whenClosed(); // disconnected: a clean end, no hang
    await expect(client.read(0, 512)).rejects.toMatchObject({ code: 'ECONNRESET' });
    expect(await ok('fss', ['origin', 'ls'])).toBe('');
  }, 60_000);
});
