/**
 * Rollback (issue 13 item 4) against models.
 *
 * - Random write sequences (fast-check) through the origin's NBD export of an in-process
 *   daemon, in phases separated by snapshots fss0, fss1, fss2 (different cluster sizes); the
 *   model of each unit is a plain copy of the image at its moment. After `rollback fssT` the
 *   image equals fssT's model, every other unit still reads exactly its own model, and fssT
 *   is unconfigured.
 * - The CLI against a real daemon whose rollbacks are rate-limited (FSS_ROLLBACK_RATE), so
 *   one is seen running: `fss rollback` prints JSON progress lines (not a terminal), EBUSY
 *   while the origin's export has a client, other writers (an NBD write to the origin,
 *   fssconfig -u of the unit, a new unit on the origin) refused while it runs.
 * - (The terminal progress line: cli-fssconfig's test/rollback.test.ts.)
 * - SIGKILL of fssd in the middle of a rollback: the CLI says so; the next start resumes it
 *   from its recorded progress (not from 0) and finishes it: the image equals the model.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FssClient, type RollbackStatus } from '@fss/control';
import { isFssError } from '@fss/core';
import { NbdClient, pattern, Sandbox } from '@fss/test-utils';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Fssd } from '../src/fssd';

const MiB = 1024 * 1024;
let sandbox: Sandbox;

beforeEach(async () => {
  sandbox = await Sandbox.create();
});
afterEach(async () => {
  await sandbox.cleanup();
});

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

async function untilDone(client: FssClient, unit: string): Promise<RollbackStatus> {
  for (;;) {
    const status = await client.rollbackStatus(unit);
    if (status.state !== 'running') return status;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Waits until the origin's export has no client (a disconnect is noticed asynchronously). */
async function untilNoOriginClients(client: FssClient): Promise<void> {
  for (let attempt = 0; attempt < 500; attempt++) {
    const origins = await client.originList();
    if (origins.every((origin) => origin.exportClients === 0)) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error('the origin export kept a client');
}

describe('rollback against models', () => {
  const IMAGE_BYTES = 2 * MiB + 3 * 512; // a partial last cluster for every cluster size
  const CLUSTER_SIZES = [65536, 4096, 16384];
  interface Write {
    offset: number;
    length: number;
  }
  const writeArbitrary: fc.Arbitrary<Write> = fc
    .record({
      offset: fc.integer({ min: 0, max: IMAGE_BYTES - 1 }),
      length: fc.integer({ min: 1, max: 150_000 }),
    })
    .map(({ offset, length }) => ({ offset, length: Math.min(length, IMAGE_BYTES - offset) }));

  it('random writes, rollback of one unit: the image equals its model, every other unit its own', async () => {
    writeFileSync(sandbox.path('image'), pattern(IMAGE_BYTES, 5));
    const daemon = new Fssd({
      runDir: sandbox.runDir,
      stateDir: sandbox.stateDir,
      devices: 'off',
      bypassCheckMs: 0,
      log: () => undefined,
    });
    await daemon.start();
    const client = await FssClient.connect({ runDir: sandbox.runDir, autostart: false });
    await client.originAdd(sandbox.path('image'));
    const originSocket = join(sandbox.runDir, 'origin', 'image.sock');
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.array(writeArbitrary, { maxLength: 10 }), { minLength: 4, maxLength: 4 }),
          fc.integer({ min: 0, max: 2 }),
          async (phases, target) => {
            const image = readFileSync(sandbox.path('image'));
            const models: Buffer[] = [];
            const origin = await NbdClient.connect(originSocket);
            try {
              for (let phase = 0; phase < 4; phase++) {
                if (phase > 0) {
                  const unit = phase - 1;
                  await client.set(`fss${unit}`, {
                    fss_mount: sandbox.path('image'),
                    fss_bstore: sandbox.path(`backup${unit}`),
                    fss_csize: CLUSTER_SIZES[unit] as number,
                    fss_flags: 0,
                  });
                  models.push(Buffer.from(image));
                }
                // One after another: overlapping writes land in order, as in the model.
                for (const [index, { offset, length }] of (phases[phase] as Write[]).entries()) {
                  const data = pattern(length, phase * 100 + index);
                  await origin.write(offset, data);
                  image.set(data, offset);
                }
              }
              await origin.flush();
            } finally {
              origin.disconnect();
            }
            await untilNoOriginClients(client);
            const started = await client.rollback(`fss${target}`);
            expect(started.state).toBe('running');
            const status = await untilDone(client, `fss${target}`);
            expect(status).toMatchObject({ unit: `fss${target}`, state: 'done' });
            expect(status.doneBytes).toBe(status.totalBytes);
            expect(Buffer.compare(readFileSync(sandbox.path('image')), models[target] as Buffer)).toBe(0);
            const units = (await client.status()).units;
            for (let unit = 0; unit < 3; unit++) {
              if (unit === target) {
                expect(units[unit]?.state).toBe('idle');
                continue;
              }
              const seen = await readExport(join(sandbox.runDir, `fss${unit}.sock`));
              expect(Buffer.compare(seen, models[unit] as Buffer), `fss${unit}`).toBe(0);
              await client.clear(`fss${unit}`);
            }
          },
        ),
        { numRuns: 10 },
      );
    } finally {
      client.close();
      await daemon.stop();
    }
  }, 300_000);
});

describe('fss rollback', () => {
  const IMAGE_BYTES = 8 * MiB;
  /** Slow enough to be seen running on any machine: 8 MiB of saved clusters take 8 s. */
  const env = (): NodeJS.ProcessEnv => ({ ...sandbox.env, FSS_ROLLBACK_RATE: String(MiB) });
  const run = (bin: 'fss' | 'fssconfig', args: string[]) => sandbox.run(bin, args, { env: env() });
  const model0 = pattern(IMAGE_BYTES, 7);
  let model1: Uint8Array;

  /** fss0, the whole image rewritten, fss1, its first 2 MiB rewritten again. */
  async function setUp(): Promise<void> {
    writeFileSync(sandbox.path('image'), model0);
    expect(
      (await run('fssconfig', ['-c', 'fss0', sandbox.path('image'), sandbox.path('backup0')])).status,
    ).toBe(0);
    const origin = await NbdClient.connect(join(sandbox.runDir, 'origin', 'image.sock'));
    const image = Buffer.from(model0);
    for (let at = 0; at < IMAGE_BYTES; at += MiB) {
      const data = pattern(MiB, 100 + at / MiB);
      await origin.write(at, data);
      image.set(data, at);
    }
    await origin.flush();
    model1 = Buffer.from(image);
    expect(
      (await run('fssconfig', ['-c', 'fss1', sandbox.path('image'), sandbox.path('backup1')])).status,
    ).toBe(0);
    for (let at = 0; at < 2 * MiB; at += MiB) await origin.write(at, pattern(MiB, 200 + at / MiB));
    await origin.flush();
    // A client on the origin's export: the rollback is refused.
    const refused = await run('fss', ['rollback', 'fss0']);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toBe(
      'fss: rollback fss0: Device or resource busy\n' +
        'fss: rollback fss0: origin image has 1 NBD client connected to its export: disconnect them before rolling it back\n',
    );
    origin.disconnect();
  }

  async function connect(): Promise<FssClient> {
    return FssClient.connect({ runDir: sandbox.runDir, autostart: false });
  }

  it('shows JSON progress, keeps other writers out while it runs, and leaves the origin equal to the snapshot', async () => {
    await setUp();
    const client = await connect();
    await untilNoOriginClients(client);
    const cli = run('fss', ['rollback', 'fss0']);
    for (;;) {
      const status = await client.rollbackStatus('fss0').catch(() => undefined);
      if (status?.state === 'running') break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    // Other writers are kept out while it runs.
    const origin = await NbdClient.connect(join(sandbox.runDir, 'origin', 'image.sock'));
    await expect(origin.write(0, pattern(4096, 1))).rejects.toMatchObject({
      code: expect.stringMatching(/^E/),
    });
    origin.disconnect();
    const clear = await run('fssconfig', ['-u', 'fss0']);
    expect(clear.status).toBe(1);
    expect(clear.stderr).toMatch(/fss0 is being rolled back onto its origin/);
    const another = await run('fssconfig', ['-c', 'fss2', sandbox.path('image'), sandbox.path('backup2')]);
    expect(another.status).toBe(1);
    expect(another.stderr).toMatch(/origin image is being rolled back to fss0/);
    const again = await client.rollback('fss0').catch((error: unknown) => error);
    expect(isFssError(again) && again.code).toBe('EBUSY');
    expect((await client.rollbackStatus('fss0')).state, 'still running after the refusals').toBe('running');
    client.close();

    const result = await cli;
    expect(result.status, result.stderr).toBe(0);
    const lines = result.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as RollbackStatus);
    expect(lines.length).toBeGreaterThan(2);
    expect(lines[0]).toMatchObject({ unit: 'fss0', state: 'running', totalBytes: IMAGE_BYTES });
    expect(lines.at(-1)).toEqual({
      unit: 'fss0',
      state: 'done',
      doneBytes: IMAGE_BYTES,
      totalBytes: IMAGE_BYTES,
    });
    for (let i = 1; i < lines.length; i++) {
      expect(lines[i]?.doneBytes).toBeGreaterThanOrEqual(lines[i - 1]?.doneBytes as number);
    }
    expect(Buffer.compare(readFileSync(sandbox.path('image')), model0)).toBe(0);
    expect(Buffer.compare(await readExport(join(sandbox.runDir, 'fss1.sock')), model1)).toBe(0);
    expect((await run('fssconfig', ['-l', 'fss0'])).stdout).toBe('fss0: not in use\n');
    expect(readFileSync(join(sandbox.runDir, 'fssd.log'), 'utf8')).toMatch(
      /fss0: rolled back onto origin image; unconfigured/,
    );
  }, 120_000);

  it('SIGKILL in the middle: the next start resumes from the recorded progress and finishes', async () => {
    await setUp();
    const client = await connect();
    await untilNoOriginClients(client);
    const cli = run('fss', ['rollback', 'fss0']);
    for (;;) {
      const status = await client.rollbackStatus('fss0').catch(() => undefined);
      if (status !== undefined && status.doneBytes >= 3 * MiB) {
        expect(status.state).toBe('running');
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const record = JSON.parse(readFileSync(join(sandbox.stateDir, 'units', 'fss0.json'), 'utf8')) as {
      rollback?: { nextCluster: number };
    };
    expect(record.rollback?.nextCluster).toBeGreaterThan(0);
    await sandbox.stopDaemon('SIGKILL');
    client.close();
    const lost = await cli;
    expect(lost.status).toBe(1);
    expect(lost.stderr).toMatch(/lost fssd while rolling back: the rollback resumes when fssd starts again/);
    expect(Buffer.compare(readFileSync(sandbox.path('image')), model0)).not.toBe(0); // half done
    // The next start (on demand) resumes it before it answers.
    expect((await run('fss', ['status'])).status).toBe(0);
    const resumed = await connect();
    const status = await untilDone(resumed, 'fss0');
    resumed.close();
    expect(status).toEqual({ unit: 'fss0', state: 'done', doneBytes: IMAGE_BYTES, totalBytes: IMAGE_BYTES });
    expect(readFileSync(join(sandbox.runDir, 'fssd.log'), 'utf8')).toMatch(
      new RegExp(
        `fss0: rollback onto origin image: ${IMAGE_BYTES} bytes of saved clusters, resumed at cluster [1-9]`,
      ),
    );
    expect(Buffer.compare(readFileSync(sandbox.path('image')), model0)).toBe(0);
    expect(Buffer.compare(await readExport(join(sandbox.runDir, 'fss1.sock')), model1)).toBe(0);
    expect((await run('fssconfig', ['-l', 'fss0'])).stdout).toBe('fss0: not in use\n');
  }, 120_000);
});
