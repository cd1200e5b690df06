/**
 * Changed-block tracking (issue 13 item 1) against a model.
 *
 * Method: random write sequences (fast-check) go through the origin's NBD export of an
 * in-process daemon, in phases separated by snapshots fss0, fss1, fss2 (each with its own
 * cluster size); the model is the set of clusters each phase's writes touched. `changed fssN`
 * must be exactly the clusters written after fssN, and `changed fssN --since fssM` those
 * written after fssM and before fssN, as merged byte extents clipped to the device's end.
 * Then the CLI (`fss changed`, text and JSON, and its errors) and a daemon restart (the
 * baselines of persistent units come back from their records).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FssClient } from '@fss/control';
import { NbdClient, pattern, Sandbox } from '@fss/test-utils';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { extentsOf } from '../src/changed-blocks';
import { Fssd } from '../src/fssd';

/** Not a multiple of any cluster size below: the last cluster is partial. */
const IMAGE_BYTES = 3 * 1024 * 1024 + 5 * 4096 + 3 * 512;
const CLUSTER_SIZES = [4096, 65536, 16384] as const;

let sandbox: Sandbox;

beforeEach(async () => {
  sandbox = await Sandbox.create();
  writeFileSync(sandbox.path('image'), pattern(IMAGE_BYTES, 3));
});
afterEach(async () => {
  await sandbox.cleanup();
});

interface Write {
  offset: number;
  length: number;
}

const writeArbitrary: fc.Arbitrary<Write> = fc
  .record({
    offset: fc.integer({ min: 0, max: IMAGE_BYTES - 1 }),
    length: fc.integer({ min: 1, max: 200_000 }),
  })
  .map(({ offset, length }) => ({ offset, length: Math.min(length, IMAGE_BYTES - offset) }));

/** Writes before fss0, between fss0 and fss1, fss1 and fss2, and after fss2. */
const phasesArbitrary = fc.array(fc.array(writeArbitrary, { maxLength: 12 }), { minLength: 4, maxLength: 4 });

/** The model's answer: the clusters of `clusterSize` the writes touched, as merged extents. */
function modelExtents(
  writes: readonly Write[],
  clusterSize: number,
): Array<{ offset: number; length: number }> {
  const clusterCount = Math.ceil(IMAGE_BYTES / clusterSize);
  const words = new Uint32Array(Math.ceil(clusterCount / 32));
  for (const { offset, length } of writes) {
    for (let cluster = Math.floor(offset / clusterSize); cluster * clusterSize < offset + length; cluster++) {
      words[cluster >>> 5] = (words[cluster >>> 5] as number) | (1 << (cluster & 31));
    }
  }
  // extentsOf's merging is itself checked against a plain loop in the unit test below.
  return extentsOf(words, { clusterCount, clusterSize, deviceBytes: IMAGE_BYTES } as never);
}

function startDaemon(): Promise<Fssd> {
  const daemon = new Fssd({
    runDir: sandbox.runDir,
    stateDir: sandbox.stateDir,
    devices: 'off',
    bypassCheckMs: 0,
    log: () => undefined,
  });
  return daemon.start().then(() => daemon);
}

async function configure(client: FssClient, unit: number): Promise<void> {
  await client.set(`fss${unit}`, {
    fss_mount: sandbox.path('image'),
    fss_bstore: sandbox.path(`backup${unit}`),
    fss_csize: CLUSTER_SIZES[unit] as number,
    fss_flags: 0,
  });
}

async function writeAll(origin: NbdClient, writes: readonly Write[], seed: number): Promise<void> {
  await Promise.all(
    writes.map((write, index) => origin.write(write.offset, pattern(write.length, seed + index))),
  );
  await origin.flush();
}

describe('extentsOf', () => {
  it('merges runs of set bits and clips the last cluster to the device', () => {
    fc.assert(
      fc.property(fc.array(fc.boolean(), { minLength: 1, maxLength: 200 }), (bits) => {
        const clusterSize = 512;
        const deviceBytes = bits.length * clusterSize - 100;
        const words = new Uint32Array(Math.ceil(bits.length / 32));
        bits.forEach((bit, index) => {
          if (bit) words[index >>> 5] = (words[index >>> 5] as number) | (1 << (index & 31));
        });
        const expected: Array<{ offset: number; length: number }> = [];
        bits.forEach((bit, index) => {
          if (!bit) return;
          const offset = index * clusterSize;
          const end = Math.min(offset + clusterSize, deviceBytes);
          const last = expected.at(-1);
          if (last !== undefined && last.offset + last.length === offset) last.length = end - last.offset;
          else expected.push({ offset, length: end - offset });
        });
        const geometry = { clusterCount: bits.length, clusterSize, deviceBytes } as never;
        expect(extentsOf(words, geometry)).toEqual(expected);
      }),
    );
  });
});

describe('changed equals the model', () => {
  it('random writes through the origin: changed fssN and --since fssM are the clusters the model touched', async () => {
    const daemon = await startDaemon();
    const client = await FssClient.connect({ runDir: sandbox.runDir, autostart: false });
    try {
      await fc.assert(
        fc.asyncProperty(phasesArbitrary, async (phases) => {
          const origin = await NbdClient.connect(join(sandbox.runDir, 'origin', 'image.sock')).catch(
            async () => {
              await client.originAdd(sandbox.path('image'));
              return NbdClient.connect(join(sandbox.runDir, 'origin', 'image.sock'));
            },
          );
          try {
            await writeAll(origin, phases[0] as Write[], 10);
            for (let unit = 0; unit < 3; unit++) {
              await configure(client, unit);
              await writeAll(origin, phases[unit + 1] as Write[], 100 * (unit + 1));
            }
            for (let unit = 0; unit < 3; unit++) {
              const clusterSize = CLUSTER_SIZES[unit] as number;
              const since = phases.slice(unit + 1).flat();
              expect(await client.changed(`fss${unit}`)).toEqual({
                unit: `fss${unit}`,
                since: null,
                clusterSize,
                extents: modelExtents(since, clusterSize),
              });
              for (let newer = unit + 1; newer < 3; newer++) {
                const between = phases.slice(unit + 1, newer + 1).flat();
                expect(await client.changed(`fss${newer}`, { since: `fss${unit}` })).toEqual({
                  unit: `fss${newer}`,
                  since: `fss${unit}`,
                  clusterSize,
                  extents: modelExtents(between, clusterSize),
                });
              }
            }
          } finally {
            origin.disconnect();
            for (let unit = 0; unit < 3; unit++) await client.clear(`fss${unit}`).catch(() => undefined);
          }
        }),
        { numRuns: 15 },
      );
    } finally {
      client.close();
      await daemon.stop();
    }
  }, 240_000);
});

describe('fss changed', () => {
  async function ok(args: string[]): Promise<string> {
    const result = await sandbox.run('fss', args);
    expect(result.status, `fss ${args.join(' ')}: ${result.stderr}`).toBe(0);
    return result.stdout;
  }

  it('prints extents as text and JSON, refuses what it cannot answer, and keeps --since across a restart', async () => {
    const image = sandbox.path('image');
    expect(
      (await sandbox.run('fssconfig', ['-c', 'fss0', image, sandbox.path('backup0'), '64k'])).status,
    ).toBe(0);
    const origin = await NbdClient.connect(join(sandbox.runDir, 'origin', 'image.sock'));
    await origin.write(65536 + 10, pattern(100, 1)); // cluster 1
    await origin.write(3 * 65536, pattern(65536 * 2, 2)); // clusters 3, 4
    await origin.flush();
    expect(await ok(['changed', 'fss0'])).toBe('65536 65536\n196608 131072\n');
    expect(JSON.parse(await ok(['changed', '--json', 'fss0']))).toEqual({
      unit: 'fss0',
      since: null,
      clusterSize: 65536,
      extents: [
        { offset: 65536, length: 65536 },
        { offset: 196608, length: 131072 },
      ],
    });
    expect(
      (await sandbox.run('fssconfig', ['-c', 'fss1', image, sandbox.path('backup1'), '4k'])).status,
    ).toBe(0);
    await origin.write(IMAGE_BYTES - 1, pattern(1, 3)); // the last, partial cluster
    await origin.flush();
    origin.disconnect();
    expect(await ok(['changed', 'fss1'])).toBe(`${IMAGE_BYTES - 1536} 1536\n`);
    expect(await ok(['changed', 'fss1', '--since', 'fss0'])).toBe('65536 65536\n196608 131072\n');
    // Both units are persistent: their baselines come back with them.
    await sandbox.stopDaemon();
    expect(await ok(['changed', 'fss1', '--since=fss0', '--json'])).toBe(
      `${JSON.stringify({
        unit: 'fss1',
        since: 'fss0',
        clusterSize: 65536,
        extents: [
          { offset: 65536, length: 65536 },
          { offset: 196608, length: 131072 },
        ],
      })}\n`,
    );
    expect(readFileSync(join(sandbox.runDir, 'fssd.log'), 'utf8')).toMatch(/fss1: reattached/);
    const refusals: Array<[string[], RegExp]> = [
      [
        ['changed', 'fss2'],
        /^fss: changed fss2: No such device or address\nfss: changed fss2: fss2 is not configured\n$/,
      ],
      [['changed', 'fss0', '--since', 'fss1'], /Invalid argument\n.*fss1 is not older than fss0/],
      [['changed', 'fss0', '--since', 'fss0'], /Invalid argument\n.*not older than itself/],
      [['changed', 'vnd0'], /Invalid argument\n.*not an fss unit name: "vnd0"/],
      [['changed', 'fss99'], /No such device or address\n.*fss99: no such unit/],
    ];
    for (const [args, message] of refusals) {
      const result = await sandbox.run('fss', args);
      expect(result.status, args.join(' ')).toBe(1);
      expect(result.stderr, args.join(' ')).toMatch(message);
    }
    for (const args of [
      ['changed'],
      ['changed', 'fss0', 'fss1'],
      ['changed', 'fss0', '--since'],
      ['changed', '--bogus', 'fss0'],
    ]) {
      const result = await sandbox.run('fss', args);
      expect(result.status, args.join(' ')).toBe(1);
      expect(result.stderr, args.join(' ')).toMatch(/^usage: fss /);
    }
  }, 120_000);

  it('an invalid unit has no answer: its changes are unknown', async () => {
    const image = sandbox.path('image');
    expect((await sandbox.run('fssconfig', ['-c', 'fss0', image, sandbox.path('backup0')])).status).toBe(0);
    expect((await sandbox.run('fssconfig', ['-c', 'fss1', image, sandbox.path('backup1')])).status).toBe(0);
    // Another writer on the image while fssd holds it: every unit of it becomes invalid.
    await sandbox.stopDaemon('SIGKILL');
    await new Promise((resolve) => setTimeout(resolve, 5500)); // past the write lease
    const bytes = readFileSync(image);
    bytes[0] = (bytes[0] as number) ^ 1;
    writeFileSync(image, bytes);
    const result = await sandbox.run('fss', ['changed', 'fss1', '--since', 'fss0']);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(
      /^fss: changed fss1: No such device or address\nfss: changed fss1: fss1 is invalid \(origin .* was modified while fssd was not running.*\): what changed since it was taken is unknown\n$/,
    );
  }, 60_000);
});
