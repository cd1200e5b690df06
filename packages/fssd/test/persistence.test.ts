/**
 * Persistent units end to end (issue 15): real fssd processes, the fssconfig CLI, writes
 * through the origin's NBD export, and kills.
 *
 * - SIGKILL at a seeded random moment of a pipelined write load through the origin export;
 *   the next start (on demand, from `fssconfig -l`) brings fss0 back, its export reads exactly
 *   the image as it was at `-c` (the model: a copy taken before any write), every write the
 *   export acknowledged before the kill is on the image, and fssck finds the store clean.
 * - SIGTERM: the same unit comes back after a clean stop.
 * - An image written by someone else while no fssd ran (after the lease ended) brings the
 *   unit back invalid, saying why; its export then fails reads.
 * - `-lv` says which units persist; `-x` units do not come back; `-u` forgets for good.
 *
 * Writes go to distinct 64 KiB slots (no two overlap), so "acknowledged => on the image" is
 * checked slot by slot.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SeededRandom } from '@fss/core';
import { NbdClient, pattern, Sandbox, waitFor } from '@fss/test-utils';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const MiB = 1024 * 1024;
const SLOT = 64 * 1024;
const IMAGE_BYTES = 8 * MiB;
const LEASE_WAIT_MS = 5500; // origin-lease.ts LEASE_MS, and a margin

let sandbox: Sandbox;

beforeEach(async () => {
  sandbox = await Sandbox.create();
  writeFileSync(sandbox.path('image'), pattern(IMAGE_BYTES, 7));
});
afterEach(async () => {
  await sandbox.cleanup();
});

async function ok(bin: 'fssconfig' | 'fss' | 'fssck', args: string[]): Promise<string> {
  const result = await sandbox.run(bin, args);
  expect(result.status, `${bin} ${args.join(' ')}: ${result.stderr}`).toBe(0);
  return result.stdout;
}

async function readExport(socket: string): Promise<Buffer> {
  const client = await NbdClient.connect(socket);
  try {
    const chunks: Buffer[] = [];
    for (let at = 0; at < client.size; at += MiB)
      chunks.push(await client.read(at, Math.min(MiB, client.size - at)));
    return Buffer.concat(chunks);
  } finally {
    client.disconnect();
  }
}

interface Acked {
  slot: number;
  data: Uint8Array;
}

/**
 * Writes to shuffled distinct slots through the origin export, 8 at a time, and kills the
 * daemon once `killAfterAcks` writes were acknowledged (others are in flight then, so the
 * kill lands in the middle of the load whatever the machine's speed); returns the writes
 * that were acknowledged.
 */
async function writeUntilKilled(
  seed: number,
  killAfterAcks: number,
  signal: NodeJS.Signals,
): Promise<Acked[]> {
  const random = new SeededRandom(seed);
  const slots = Array.from({ length: IMAGE_BYTES / SLOT }, (_, index) => index);
  for (let i = slots.length - 1; i > 0; i--) {
    const j = random.integer(0, i);
    [slots[i], slots[j]] = [slots[j] as number, slots[i] as number];
  }
  const client = await NbdClient.connect(join(sandbox.runDir, 'origin', 'image.sock'));
  const acked: Acked[] = [];
  const pid = sandbox.daemonPid() as number;
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < slots.length && !client.closed) {
      const slot = slots[next++] as number;
      const length = random.integer(1, SLOT / 512) * 512;
      const data = pattern(length, 100 + slot);
      try {
        await client.write(slot * SLOT, data);
        acked.push({ slot, data });
        if (acked.length === killAfterAcks) process.kill(pid, signal);
      } catch {
        return; // the daemon is gone: this write was not acknowledged
      }
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  await waitFor(() => {
    try {
      process.kill(pid, 0);
      return false;
    } catch {
      return true;
    }
  }, 20_000);
  client.destroy();
  return acked;
}

describe('persistent units survive fssd', () => {
  it('SIGKILL at random moments of a write load: the unit comes back exact, every acknowledged write is on the image', async () => {
    const model = readFileSync(sandbox.path('image'));
    await ok('fssconfig', ['-c', 'fss0', sandbox.path('image'), sandbox.path('backup')]);
    const seed = Date.now() % 100_000;
    console.log(`persistence: seed ${seed}`);
    const random = new SeededRandom(seed);
    let total = 0;
    let killedMidLoad = 0;
    for (let round = 0; round < 3; round++) {
      const acked = await writeUntilKilled(
        seed + round,
        random.integer(1, IMAGE_BYTES / SLOT / 2),
        'SIGKILL',
      );
      total += acked.length;
      if (acked.length < IMAGE_BYTES / SLOT) killedMidLoad += 1;
      // The image holds every acknowledged write.
      const image = readFileSync(sandbox.path('image'));
      for (const { slot, data } of acked) {
        expect(
          Buffer.compare(image.subarray(slot * SLOT, slot * SLOT + data.length), data),
          `slot ${slot}`,
        ).toBe(0);
      }
      // The store is consistent on its own (the daemon is dead; a torn last commit is a warning).
      const check = await sandbox.run('fssck', [sandbox.path('backup')]);
      expect(check.status, check.stdout).toBe(0);
      // The next start brings fss0 back, exact.
      expect(await ok('fssconfig', ['-l', 'fss0'])).toBe(`fss0: ${sandbox.path('image')}\n`);
      const snapshot = await readExport(join(sandbox.runDir, 'fss0.sock'));
      expect(Buffer.compare(snapshot, model), `round ${round}`).toBe(0);
      expect(readFileSync(join(sandbox.runDir, 'fssd.log'), 'utf8')).toMatch(/fss0: reattached on image/);
    }
    expect(total).toBeGreaterThan(0);
    expect(killedMidLoad, 'at least one kill lands in the middle of the load').toBeGreaterThan(0);
  }, 240_000);

  it('SIGTERM: the unit comes back after a clean stop, valid, and -lv says it is persistent', async () => {
    const model = readFileSync(sandbox.path('image'));
    await ok('fssconfig', ['-c', 'fss0', sandbox.path('image'), sandbox.path('backup')]);
    await ok('fssconfig', ['-cx', 'fss1', sandbox.path('image'), sandbox.path('backup1')]);
    expect(await ok('fssconfig', ['-lv', 'fss0'])).toMatch(/, persistent\n$/);
    expect(await ok('fssconfig', ['-lv', 'fss1'])).not.toMatch(/persistent/);
    const acked = await writeUntilKilled(5, 40, 'SIGTERM');
    expect(acked.length).toBeGreaterThan(0);
    expect(await ok('fssconfig', ['-l'])).toMatch(
      new RegExp(`^fss0: ${sandbox.path('image')}\nfss1: not in use\n`),
    );
    expect(Buffer.compare(await readExport(join(sandbox.runDir, 'fss0.sock')), model)).toBe(0);
    expect(await ok('fss', ['status'])).toMatch(/fss0: .*, valid, .*persistent \(process\)/);
    // -u forgets it for good: the next daemon has nothing to bring back.
    await ok('fssconfig', ['-u', 'fss0']);
    await sandbox.stopDaemon();
    expect(await ok('fssconfig', ['-l', 'fss0'])).toBe('fss0: not in use\n');
  }, 120_000);

  it('an image written while no fssd ran brings the unit back invalid, saying why', async () => {
    await ok('fssconfig', ['-c', 'fss0', sandbox.path('image'), sandbox.path('backup')]);
    process.kill(sandbox.daemonPid() as number, 'SIGKILL');
    // Someone else writes the image once this daemon's write lease has run out.
    await new Promise((resolve) => setTimeout(resolve, LEASE_WAIT_MS));
    const image = readFileSync(sandbox.path('image'));
    image[4096] = (image[4096] as number) ^ 0xff;
    writeFileSync(sandbox.path('image'), image);
    expect(await ok('fssconfig', ['-l', 'fss0'])).toBe(`fss0: ${sandbox.path('image')}\n`);
    const status = JSON.parse(await ok('fss', ['status', '--json'])) as {
      units: Array<{ name: string; valid: boolean; invalidReason: string | null; persistent: boolean }>;
    };
    expect(status.units[0]).toMatchObject({ name: 'fss0', valid: false, persistent: true });
    expect(status.units[0]?.invalidReason).toMatch(/was modified while fssd was not running/);
    const client = await NbdClient.connect(join(sandbox.runDir, 'fss0.sock'));
    await expect(client.read(0, 4096)).rejects.toMatchObject({ code: expect.stringMatching(/^E/) });
    client.disconnect();
    expect(readFileSync(join(sandbox.runDir, 'fssd.log'), 'utf8')).toMatch(
      /fss0: snapshot invalid: origin .* was modified while fssd was not running/,
    );
  }, 120_000);
});
