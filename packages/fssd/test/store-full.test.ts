/**
 * The store-full policy through the real daemon (issue 11, item 8): `fssconfig -c --on-full
 * block [--on-full-timeout SECONDS]` (FSSIOCSET's `on_full`, `on_full_timeout_ms`).
 *
 * - A store on a 2 MiB tmpfs, nearly filled by another file: origin writes through the
 *   export that need a copy wait (`fss status --json` says `waitingForSpace`, the writer's
 *   next write is not acknowledged); deleting the other file lets them through, the unit
 *   stays valid and its export reads exactly the image as it was at `-c`.
 * - The same with a short timeout and no space coming back: the unit turns invalid once,
 *   saying why, and every origin write is acknowledged and lands.
 * - Bad values are refused before anything is created.
 *
 * The default policy (invalidate, NetBSD's) is store-faults.test.ts's full-store case.
 * Root only for the tmpfs cases (mount); CI runs as root.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NbdClient, pattern, Sandbox } from '@fss/test-utils';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const MiB = 1024 * 1024;
const KiB = 1024;
const CLUSTER = 64 * KiB;
const IMAGE_BYTES = 8 * MiB;
const WRITES = 16;
const isRoot = process.getuid?.() === 0;

let sandbox: Sandbox;

beforeEach(async () => {
  sandbox = await Sandbox.create();
  writeFileSync(sandbox.path('image'), pattern(IMAGE_BYTES, 3));
});
afterEach(async () => {
  await sandbox.cleanup();
});

async function ok(bin: 'fssconfig' | 'fss', args: string[]): Promise<string> {
  const result = await sandbox.run(bin, args);
  expect(result.status, `${bin} ${args.join(' ')}: ${result.stderr}`).toBe(0);
  return result.stdout;
}

interface UnitStatus {
  name: string;
  valid: boolean;
  invalidReason: string | null;
  onFull: string;
  onFullTimeoutMs: number | null;
  waitingForSpace: boolean;
}

async function fss0(): Promise<UnitStatus> {
  const status = JSON.parse(await ok('fss', ['status', '--json'])) as { units: UnitStatus[] };
  return status.units[0] as UnitStatus;
}

/** A 2 MiB tmpfs with a file leaving `freeBytes` free; `use` runs with both paths. */
async function withSmallTmpfs(
  freeBytes: number,
  use: (dir: string, filler: string) => Promise<void>,
): Promise<void> {
  const dir = sandbox.path('small');
  mkdirSync(dir);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', dir]);
  try {
    const filler = join(dir, 'filler');
    writeFileSync(filler, new Uint8Array(2 * MiB - freeBytes).fill(1));
    await use(dir, filler);
  } finally {
    await sandbox.stopDaemon().catch(() => undefined);
    execFileSync('umount', ['-l', dir]);
  }
}

/** WRITES distinct clusters of new data, one after another, through the origin export. */
function startWriter(client: NbdClient): { done: Promise<void>; acked: () => number; expected: Buffer } {
  const expected = Buffer.from(pattern(IMAGE_BYTES, 3));
  let acked = 0;
  const done = (async () => {
    for (let i = 0; i < WRITES; i++) {
      const at = i * 4 * CLUSTER;
      const data = pattern(CLUSTER, 50 + i);
      expected.set(data, at);
      await client.write(at, data);
      acked += 1;
    }
  })();
  return { done, acked: () => acked, expected };
}

async function readExport(socket: string): Promise<Buffer> {
  const client = await NbdClient.connect(socket);
  try {
    const chunks: Buffer[] = [];
    for (let at = 0; at < client.size; at += MiB) chunks.push(await client.read(at, MiB));
    return Buffer.concat(chunks);
  } finally {
    client.disconnect();
  }
}

describe.skipIf(!isRoot)('store-full policy block (root: a 2 MiB tmpfs)', () => {
  it('origin writes wait while the store is full; freeing space lets them through and the unit stays exact', async () => {
    const model = readFileSync(sandbox.path('image'));
    await withSmallTmpfs(320 * KiB, async (dir, filler) => {
      const backup = join(dir, 'backup');
      await ok('fssconfig', [
        '-c',
        '--on-full',
        'block',
        '--on-full-timeout',
        '300',
        'fss0',
        sandbox.path('image'),
        backup,
      ]);
      expect(await fss0()).toMatchObject({ valid: true, onFull: 'block', onFullTimeoutMs: 300_000 });
      const client = await NbdClient.connect(join(sandbox.runDir, 'origin', 'image.sock'));
      const writer = startWriter(client);
      let status: UnitStatus | undefined;
      for (const deadline = Date.now() + 60_000; Date.now() < deadline; ) {
        status = await fss0();
        if (status.waitingForSpace === true) break;
      }
      expect(status).toMatchObject({ valid: true, waitingForSpace: true });
      const ackedWhileFull = writer.acked();
      expect(ackedWhileFull).toBeLessThan(WRITES);
      // Still waiting a moment later: the write that needs a copy is held, not failed.
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect((await fss0()).waitingForSpace).toBe(true);
      rmSync(filler); // space again
      await writer.done;
      await client.flush();
      client.disconnect();
      const after = await fss0();
      expect(after).toMatchObject({ valid: true, waitingForSpace: false });
      expect(Buffer.compare(readFileSync(sandbox.path('image')), writer.expected)).toBe(0);
      expect(Buffer.compare(await readExport(join(sandbox.runDir, 'fss0.sock')), model)).toBe(0);
      const log = readFileSync(join(sandbox.runDir, 'fssd.log'), 'utf8');
      expect(log).toMatch(/fss0: backing store full: origin writes that need a copy wait for space/);
      expect(log).toMatch(/fss0: backing store has space again/);
      expect(log).not.toMatch(/snapshot invalid/);
      await ok('fssconfig', ['-u', 'fss0']);
    });
  }, 180_000);

  it('the timeout: the unit turns invalid once, saying why, and every origin write lands', async () => {
    await withSmallTmpfs(320 * KiB, async (dir) => {
      const backup = join(dir, 'backup');
      await ok('fssconfig', [
        '-c',
        '--on-full=block',
        '--on-full-timeout=2',
        'fss0',
        sandbox.path('image'),
        backup,
      ]);
      const client = await NbdClient.connect(join(sandbox.runDir, 'origin', 'image.sock'));
      const writer = startWriter(client);
      await writer.done; // none rejected
      await client.flush();
      client.disconnect();
      expect(writer.acked()).toBe(WRITES);
      expect(Buffer.compare(readFileSync(sandbox.path('image')), writer.expected)).toBe(0);
      const unit = await fss0();
      expect(unit).toMatchObject({ valid: false, waitingForSpace: false });
      expect(unit.invalidReason).toMatch(/backing store full \(on-full block: still no space after 2 s\)/);
      const log = readFileSync(join(sandbox.runDir, 'fssd.log'), 'utf8');
      expect(log.match(/fss0: snapshot invalid: /g)).toHaveLength(1);
      const reader = await NbdClient.connect(join(sandbox.runDir, 'fss0.sock'));
      await expect(reader.read(0, 4096)).rejects.toMatchObject({ nbdError: expect.any(Number) });
      reader.disconnect();
      expect(await ok('fssconfig', ['-l', 'fss0'])).toBe(`fss0: ${sandbox.path('image')}\n`);
      await ok('fssconfig', ['-u', 'fss0']);
    });
  }, 180_000);
});

describe('store-full policy: configuration', () => {
  it('is shown by status, invalidate by default, and a persistent unit keeps it across a restart', async () => {
    await ok('fssconfig', [
      '-c',
      '--on-full',
      'block',
      '--on-full-timeout',
      '7',
      'fss0',
      sandbox.path('image'),
      sandbox.path('backup0'),
    ]);
    await ok('fssconfig', ['-c', 'fss1', sandbox.path('image'), sandbox.path('backup1')]);
    const units = async () =>
      (JSON.parse(await ok('fss', ['status', '--json'])) as { units: UnitStatus[] }).units.slice(0, 2);
    const expected = [
      { name: 'fss0', valid: true, onFull: 'block', onFullTimeoutMs: 7000, waitingForSpace: false },
      { name: 'fss1', valid: true, onFull: 'invalidate' },
    ];
    expect(await units()).toMatchObject(expected);
    await sandbox.stopDaemon(); // SIGTERM: both units are recorded and come back
    expect(await units()).toMatchObject(expected);
    expect(readFileSync(join(sandbox.runDir, 'fssd.log'), 'utf8')).toMatch(
      /fss0: configured on .*, on full: block \(7 s\)/,
    );
  }, 60_000);

  it.each([
    [['--on-full', 'wait'], "fssconfig: --on-full: Invalid argument: 'wait' (invalidate or block)"],
    [
      ['--on-full', 'block', '--on-full-timeout', '0'],
      "fssconfig: --on-full-timeout: Invalid argument: '0' (seconds, 1..86400)",
    ],
    [['--on-full-timeout', '5'], 'fssconfig: --on-full-timeout: Invalid argument: needs --on-full block'],
  ])('%j is refused, exit 1, nothing created', async (options, message) => {
    const result = await sandbox.run('fssconfig', [
      '-c',
      ...options,
      'fss0',
      sandbox.path('image'),
      sandbox.path('backup'),
    ]);
    expect(result).toMatchObject({ status: 1, stdout: '' });
    expect(result.stderr).toBe(`${message}\n`);
    expect(existsSync(sandbox.path('backup'))).toBe(false);
  });
});
