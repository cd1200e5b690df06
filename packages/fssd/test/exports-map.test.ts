/**
 * What fssd's exports tell stock tools about extents (issue 13 item 2), through the real
 * daemon and the real programs: a sparse image as origin (`fss origin add`), units taken with
 * `fssconfig -c`, writes and discards through the origin's socket with qemu-io, and then
 * `nbdinfo --map` / `qemu-img map --output=json` on the unit and origin sockets compared with
 * a model of what the test did (the clusters written, the holes punched, when).
 *
 *   origin export  base:allocation = the image's holes now
 *   unit export    base:allocation = the image's holes when the unit was taken, except a
 *                  cluster copied since (it is in the store, in full: data)
 */
import { closeSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { SeededRandom } from '@fss/core';
import { modelRuns, parseNbdinfoMap, parseQemuImgMap, runCommand, Sandbox } from '@fss/test-utils';
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
