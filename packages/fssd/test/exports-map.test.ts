/**
 * What fssd's exports tell stock tools about extents (issue 13 item 2), through the real
 * daemon and the real programs: a sparse image as origin (`fss origin add`), units taken with
 * `fssconfig -c`, writes and discards through the origin's socket with qemu-io, and then
 * `nbdinfo --map` / `qemu-img map --output=json` on the unit and origin sockets compared with
 * a model of what the test did (the clusters written, the holes punched, when).
 *
 *   origin export  base:allocation = the image's holes now
 *                  qemu:dirty-bitmap:fssN = the clusters written since fssN was taken
 *   unit export    base:allocation = the image's holes when the unit was taken, except a
 *                  cluster copied since (it is in the store, in full: data)
 *                  qemu:dirty-bitmap:fssM (fssM older) = the clusters written between them
 */
import { closeSync, ftruncateSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { SeededRandom } from '@fss/core';
import {
  type MapRun,
  modelRuns,
  parseNbdinfoMap,
  parseQemuImgMap,
  runCommand,
  Sandbox,
} from '@fss/test-utils';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const KiB = 1024;
const CLUSTER = 64 * KiB;
const CLUSTERS = 96;
const IMAGE_BYTES = CLUSTER * CLUSTERS;
const DATA = 0;
const HOLE = 3; // base:allocation HOLE | ZERO

let sandbox: Sandbox;
beforeEach(async () => {
  sandbox = await Sandbox.create();
});
afterEach(async () => {
  await sandbox.cleanup();
});

/** Kernel devices off: these tests read the exports, not /dev/fssN. */
const env = (): NodeJS.ProcessEnv => ({ ...sandbox.env, FSS_DEVICES: 'off' });

async function ok(bin: 'fssconfig' | 'fss', args: string[]): Promise<string> {
  const result = await sandbox.run(bin, args, { env: env() });
  expect(result.status, `${bin} ${args.join(' ')}: ${result.stderr}`).toBe(0);
  return result.stdout;
}

const uri = (socket: string): string => `nbd+unix:///?socket=${join(sandbox.runDir, socket)}`;
const ORIGIN = 'origin/image.sock';

/** Runs a program; its stdout, after checking it succeeded. */
async function tool(command: string, args: string[]): Promise<string> {
  const result = await runCommand(command, args);
  expect(result.status, `${command} ${args.join(' ')}: ${result.stderr}`).toBe(0);
  return result.stdout;
}

/** qemu-io commands against the origin export, in one connection. */
async function qemuIo(commands: string[]): Promise<void> {
  if (commands.length === 0) return;
  await tool('qemu-io', ['-f', 'raw', ...commands.flatMap((each) => ['-c', each]), uri(ORIGIN)]);
}

/** Per-cluster state of the image: which clusters hold data (the others are holes). */
class ImageModel {
  readonly data = new Set<number>();
  types(): number[] {
    return Array.from({ length: CLUSTERS }, (_, cluster) => (this.data.has(cluster) ? DATA : HOLE));
  }
  runs(types = this.types()) {
    return modelRuns(types, CLUSTER, IMAGE_BYTES);
  }
}

function someClusters(random: SeededRandom, share: number): number[] {
  return Array.from({ length: CLUSTERS }, (_, cluster) => cluster).filter(() => random.next() < share);
}

/** A sparse image in the sandbox with data in `clusters`. */
function sparseImage(clusters: readonly number[]): void {
  const fd = openSync(sandbox.path('image'), 'w');
  try {
    ftruncateSync(fd, IMAGE_BYTES);
    for (const cluster of clusters) writeSync(fd, Buffer.alloc(CLUSTER, 0xa5), 0, CLUSTER, cluster * CLUSTER);
  } finally {
    closeSync(fd);
  }
}

describe('base:allocation of fssd exports', () => {
  it('nbdinfo --map and qemu-img map on the origin and unit sockets equal the model', async () => {
    const seed = Math.floor(Math.random() * 2 ** 31);
    const random = new SeededRandom(seed);
    const image = new ImageModel();
    for (const cluster of someClusters(random, 0.4)) image.data.add(cluster);
    sparseImage([...image.data]);
    await ok('fss', ['origin', 'add', 'image']);
    expect(parseNbdinfoMap(await tool('nbdinfo', ['--map', uri(ORIGIN)])), `seed ${seed}`).toEqual(
      image.runs(),
    );

    await ok('fssconfig', ['-c', 'fss0', 'image', 'backup0', String(CLUSTER)]);
    const atFss0 = image.types();
    const copied = new Set<number>();
    const writes = someClusters(random, 0.15);
    const punches = someClusters(random, 0.15).filter((cluster) => !writes.includes(cluster));
    await qemuIo([
      ...writes.map((cluster) => `write -P 0x5a ${cluster * CLUSTER} ${CLUSTER}`),
      ...punches.map((cluster) => `discard ${cluster * CLUSTER} ${CLUSTER}`),
    ]);
    for (const cluster of writes) {
      image.data.add(cluster);
      copied.add(cluster);
    }
    for (const cluster of punches) {
      image.data.delete(cluster);
      copied.add(cluster);
    }

    const fss0Model = atFss0.map((type, cluster) => (copied.has(cluster) ? DATA : type));
    const context = `seed ${seed}`;
    expect(parseNbdinfoMap(await tool('nbdinfo', ['--map', uri('fss0.sock')])), context).toEqual(
      image.runs(fss0Model),
    );
    expect(parseNbdinfoMap(await tool('nbdinfo', ['--map', uri(ORIGIN)])), context).toEqual(image.runs());
    const qemuMap = await tool('qemu-img', ['map', '--output=json', '-f', 'raw', uri(ORIGIN)]);
    expect(parseQemuImgMap(qemuMap), context).toEqual(image.runs());
    const unitMap = await tool('qemu-img', ['map', '--output=json', '-f', 'raw', uri('fss0.sock')]);
    expect(parseQemuImgMap(unitMap), context).toEqual(image.runs(fss0Model));

    await ok('fssconfig', ['-u', 'fss0']);
    await ok('fss', ['origin', 'rm', 'image']);
  });
});

/** A write of `sectors` 512-byte sectors at sector `at`, and the clusters it dirties. */
interface Write {
  at: number;
  sectors: number;
}
const SECTORS = IMAGE_BYTES / 512;
const writeArbitrary = fc
  .record({ at: fc.integer({ min: 0, max: SECTORS - 1 }), sectors: fc.integer({ min: 1, max: 300 }) })
  .map(({ at, sectors }) => ({ at, sectors: Math.min(sectors, SECTORS - at) }));

function clustersOf(writes: readonly Write[]): Set<number> {
  const clusters = new Set<number>();
  for (const { at, sectors } of writes) {
    const first = Math.floor((at * 512) / CLUSTER);
    const last = Math.floor(((at + sectors) * 512 - 1) / CLUSTER);
    for (let cluster = first; cluster <= last; cluster++) clusters.add(cluster);
  }
  return clusters;
}

/** Runs with neighbours of the same type merged (after retyping). */
function mergeRuns(runs: readonly MapRun[]): MapRun[] {
  const out: MapRun[] = [];
  for (const run of runs) {
    const last = out.at(-1);
    if (last !== undefined && last.type === run.type) last.length += run.length;
    else out.push({ ...run });
  }
  return out;
}

const dirtyRuns = (dirty: ReadonlySet<number>) =>
  modelRuns(
    Array.from({ length: CLUSTERS }, (_, cluster) => (dirty.has(cluster) ? 1 : 0)),
    CLUSTER,
    IMAGE_BYTES,
  );

describe('qemu:dirty-bitmap contexts of fssd exports', () => {
  it('fss1 offers fss0 (changed between them), the origin fss0 and fss1 (changed since), equal to the model', async () => {
    writeFileSync(sandbox.path('image'), Buffer.alloc(IMAGE_BYTES, 0x11));
    await ok('fss', ['origin', 'add', 'image']);
    const mapOf = async (context: string, socket: string) =>
      parseNbdinfoMap(await tool('nbdinfo', [`--map=qemu:dirty-bitmap:${context}`, uri(socket)]));
    const contextsOf = async (socket: string) =>
      JSON.parse(await tool('nbdinfo', ['--json', uri(socket)])).exports[0].contexts as string[];
    let round = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(writeArbitrary, { maxLength: 12 }),
        fc.array(writeArbitrary, { maxLength: 12 }),
        async (beforeFss1, afterFss1) => {
          round += 1;
          await ok('fssconfig', ['-c', 'fss0', 'image', `backup0-${round}`, String(CLUSTER)]);
          const write = (writes: readonly Write[], pattern: number) =>
            qemuIo(writes.map(({ at, sectors }) => `write -P ${pattern} ${at * 512} ${sectors * 512}`));
          await write(beforeFss1, 0x22);
          await ok('fssconfig', ['-c', 'fss1', 'image', `backup1-${round}`, String(CLUSTER)]);
          await write(afterFss1, 0x33);
          const between = clustersOf(beforeFss1);
          const sinceFss1 = clustersOf(afterFss1);
          const sinceFss0 = new Set([...between, ...sinceFss1]);

          expect(await mapOf('fss0', 'fss1.sock')).toEqual(dirtyRuns(between));
          expect(await mapOf('fss0', ORIGIN)).toEqual(dirtyRuns(sinceFss0));
          expect(await mapOf('fss1', ORIGIN)).toEqual(dirtyRuns(sinceFss1));
          // What each export offers: fss0 has no older unit; nothing names a newer one.
          expect(await contextsOf('fss0.sock')).toEqual(['base:allocation']);
          expect(await contextsOf('fss1.sock')).toEqual(['base:allocation', 'qemu:dirty-bitmap:fss0']);
          expect(await contextsOf(ORIGIN)).toEqual([
            'base:allocation',
            'qemu:dirty-bitmap:fss0',
            'qemu:dirty-bitmap:fss1',
          ]);
          // qemu's own incremental-backup reader: x-dirty-bitmap shows dirty extents as data: false.
          const qemuMap = await tool('qemu-img', [
            'map',
            '--output=json',
            '--image-opts',
            `driver=nbd,server.type=unix,server.path=${join(sandbox.runDir, 'fss1.sock')},x-dirty-bitmap=qemu:dirty-bitmap:fss0`,
          ]);
          const qemuDirty = parseQemuImgMap(qemuMap).map((run) => ({ ...run, type: run.type & 1 }));
          expect(mergeRuns(qemuDirty)).toEqual(dirtyRuns(between));
          // The same answer as `fss changed` (the control op), extent for extent.
          const changed = JSON.parse(await ok('fss', ['changed', 'fss1', '--since', 'fss0', '--json']));
          const dirtyExtents = (await mapOf('fss0', 'fss1.sock'))
            .filter((run) => run.type === 1)
            .map(({ offset, length }) => ({ offset, length }));
          expect(changed.extents).toEqual(dirtyExtents);

          await ok('fssconfig', ['-u', 'fss1']);
          await ok('fssconfig', ['-u', 'fss0']);
        },
      ),
      { numRuns: Number(process.env['FSS_DAEMON_PROPERTY_RUNS'] ?? 4) },
    );
    await ok('fss', ['origin', 'rm', 'image']);
  });
});
