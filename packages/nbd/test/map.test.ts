/**
 * Metadata contexts read by stock clients: `nbdinfo --map` and `qemu-img map --output=json`
 * against a sparse image file served through the engine's Origin and a Snapshot of it, and
 * `nbdinfo --map=CONTEXT` against a context the export adds. Every answer is compared with a
 * model built from what the test did: the clusters written before and after the snapshot,
 * the holes punched.
 *
 *   origin    base:allocation = the image's holes now (SEEK_DATA/SEEK_HOLE)
 *   snapshot  base:allocation = the image's holes at snapshot time, except that a cluster
 *             copied since (written or punched on the origin) is data: it is on the store
 */
import { closeSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { openBlockDevice } from '@fss/blockdev-linux';
import { MemoryBackingStore, SeededRandom } from '@fss/core';
import { Origin } from '@fss/engine';
import { modelRuns, parseNbdinfoMap, parseQemuImgMap, tempDir } from '@fss/test-utils';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NbdMetaContext } from '../src/meta-context';
import { run, startServer } from './helpers';

const KiB = 1024;
const CLUSTER = 64 * KiB;
const CLUSTERS = 128;
const IMAGE_BYTES = CLUSTERS * CLUSTER;
const DATA = 0;
const HOLE = 3; // HOLE | ZERO

let dir: ReturnType<typeof tempDir>;
beforeAll(() => {
  dir = tempDir('fss-nbd-map-');
});
afterAll(() => dir.remove());

/** A sparse image with the clusters `written` holding data; the rest are holes. */
function sparseImage(path: string, written: ReadonlySet<number>): void {
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, IMAGE_BYTES);
    for (const cluster of written) writeSync(fd, Buffer.alloc(CLUSTER, 0xa5), 0, CLUSTER, cluster * CLUSTER);
  } finally {
    closeSync(fd);
  }
}

/** A random set of clusters. */
function someClusters(random: SeededRandom, share: number): Set<number> {
  const clusters = new Set<number>();
  for (let cluster = 0; cluster < CLUSTERS; cluster++) if (random.next() < share) clusters.add(cluster);
  return clusters;
}

describe('base:allocation with stock clients', () => {
  it('nbdinfo --map and qemu-img map show the origin holes now and the snapshot holes at snapshot time', async () => {
    const seed = Math.floor(Math.random() * 2 ** 31);
    const random = new SeededRandom(seed);
    const before = someClusters(random, 0.4);
    const imagePath = join(dir.path, `sparse-${seed}.img`);
    sparseImage(imagePath, before);
    const device = await openBlockDevice(imagePath, { exclusive: false });
    const origin = new Origin(device, { name: 'sparse', logger: () => {} });
    const snapshot = await origin.createSnapshot(new MemoryBackingStore(), {
      name: 'fss0',
      clusterSize: CLUSTER,
    });
    const originServer = await startServer(dir.path, [{ name: 'sparse', device: origin }], {
      socketName: `origin-${seed}.sock`,
    });
    const snapshotServer = await startServer(dir.path, [{ name: 'fss0', device: snapshot }], {
      socketName: `fss0-${seed}.sock`,
    });
    try {
      // After the snapshot: write some clusters (holes become data), punch others.
      const writes = someClusters(random, 0.2);
      const punches = [...someClusters(random, 0.2)].filter((cluster) => !writes.has(cluster));
      for (const cluster of writes) await origin.write(Buffer.alloc(CLUSTER, 0x5a), cluster * CLUSTER);
      for (const cluster of punches) await origin.discard!(cluster * CLUSTER, CLUSTER);
      await origin.flush();

      const now = (cluster: number) =>
        writes.has(cluster) || (before.has(cluster) && !punches.includes(cluster)) ? DATA : HOLE;
      const atSnapshot = (cluster: number) =>
        writes.has(cluster) || punches.includes(cluster) || before.has(cluster) ? DATA : HOLE;
      const types = (model: (cluster: number) => number) =>
        Array.from({ length: CLUSTERS }, (_, c) => model(c));

      const originMap = await run('nbdinfo', ['--map', originServer.uri()]);
      expect(originMap.code, originMap.stderr).toBe(0);
      expect(parseNbdinfoMap(originMap.stdout), `seed ${seed}`).toEqual(
        modelRuns(types(now), CLUSTER, IMAGE_BYTES),
      );

      const snapshotMap = await run('nbdinfo', ['--map', snapshotServer.uri()]);
      expect(snapshotMap.code, snapshotMap.stderr).toBe(0);
      expect(parseNbdinfoMap(snapshotMap.stdout), `seed ${seed}`).toEqual(
        modelRuns(types(atSnapshot), CLUSTER, IMAGE_BYTES),
      );

      const qemuMap = await run('qemu-img', ['map', '--output=json', '-f', 'raw', originServer.uri()]);
      expect(qemuMap.code, qemuMap.stderr).toBe(0);
      expect(parseQemuImgMap(qemuMap.stdout), `seed ${seed}`).toEqual(
        modelRuns(types(now), CLUSTER, IMAGE_BYTES),
      );
    } finally {
      await originServer.close();
      await snapshotServer.close();
      await snapshot.close();
      await origin.close();
    }
  });

  it('nbdinfo --map=CONTEXT reads a context the export adds (flag 1 = dirty)', async () => {
    const dirty = new Set([3, 4, 5, 40, 127]);
    const context: NbdMetaContext = {
      name: 'qemu:dirty-bitmap:test',
      extents: async (offset, length) => {
        const first = Math.floor(offset / CLUSTER);
        const end = Math.ceil((offset + length) / CLUSTER);
        return Array.from({ length: end - first }, (_, index) => ({
          length: CLUSTER,
          flags: dirty.has(first + index) ? 1 : 0,
        }));
      },
    };
    const imagePath = join(dir.path, 'plain.img');
    sparseImage(imagePath, new Set());
    const image = await openBlockDevice(imagePath, { exclusive: false });
    const server = await startServer(
      dir.path,
      [{ name: 'plain', device: image, metaContexts: () => [context] }],
      {
        socketName: 'plain.sock',
      },
    );
    try {
      const map = await run('nbdinfo', ['--map=qemu:dirty-bitmap:test', server.uri()]);
      expect(map.code, map.stderr).toBe(0);
      const types = Array.from({ length: CLUSTERS }, (_, cluster) => (dirty.has(cluster) ? 1 : 0));
      expect(parseNbdinfoMap(map.stdout)).toEqual(modelRuns(types, CLUSTER, IMAGE_BYTES));
      const base = await run('nbdinfo', ['--map', server.uri()]);
      expect(parseNbdinfoMap(base.stdout)).toEqual([{ offset: 0, length: IMAGE_BYTES, type: HOLE }]);
      const contexts = await run('nbdinfo', ['--json', server.uri()]);
      expect(JSON.parse(contexts.stdout).exports[0].contexts).toEqual([
        'base:allocation',
        'qemu:dirty-bitmap:test',
      ]);
    } finally {
      await server.close();
      await image.close();
    }
  });
});
