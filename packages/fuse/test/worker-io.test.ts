/**
 * Goal: when the reader threads serve an origin's READ and WRITE themselves (reader-worker.ts,
 * "Serving I/O"), nothing the copy-on-write rule promises changes: snapshots taken while fio
 * hammers the attached origin at QD16 are exact and stay exact (a worker write that slipped
 * past a snapshot moment would change a snapshot after it was taken), writes issued while a
 * snapshot is active reach the main thread and are copied first, every write lands on the
 * image, and once the last snapshot is gone the readers write again themselves.
 *
 * Method (as root): an Origin over a real image (openBlockDevice) attached as /dev/loopN over
 * our FUSE file; fio and dd in child processes (helpers.ts says why). fast-check picks when
 * the snapshots are taken during the fio load and which blocks are written afterwards. The
 * model is a plain copy of the image's bytes: each snapshot is read in full right after it
 * is taken and again at the end (the two must be equal), its untouched half must equal the
 * model at snapshot time, and a snapshot taken after the load must equal the device as the
 * kernel reads it.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openBlockDevice } from '@fss/blockdev-linux';
import { MemoryBackingStore } from '@fss/core';
import { firstDifference } from '@fss/core/testing';
import { Origin, type Snapshot } from '@fss/engine';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { isRoot, pattern, ROOT_REASON, run, runBytes, tempDir, unreleased, withAttached } from './helpers';

const MiB = 1024 * 1024;
const BLOCK = 4096;
const SIZE = 8 * MiB;
const HALF = SIZE / 2;
const canRun = isRoot && ['/dev/fuse', '/dev/loop-control'].every((path) => existsSync(path));

async function readThroughKernel(path: string): Promise<Buffer> {
  const result = await runBytes('dd', [`if=${path}`, 'bs=1M', 'iflag=direct', 'status=none']);
  if (result.code !== 0) throw new Error(`dd if=${path}: ${result.stderr}`);
  return result.stdout;
}

async function writeThroughKernel(path: string, data: Uint8Array, offset: number, scratch: string) {
  const source = join(scratch, `chunk-${offset}`);
  writeFileSync(source, data);
  const result = await run('dd', [
    `if=${source}`,
    `of=${path}`,
    `bs=${data.length}`, // one write(2): one request
    `seek=${offset}`,
    'oflag=direct,seek_bytes',
    'conv=notrunc',
    'status=none',
  ]);
  expect(result.code, result.stderr).toBe(0);
}

async function readSnapshot(snapshot: Snapshot): Promise<Uint8Array> {
  const bytes = new Uint8Array(snapshot.size);
  expect(await snapshot.read(bytes, 0)).toBe(snapshot.size);
  return bytes;
}

describe.skipIf(!canRun)(`reader threads serve an origin's I/O (${ROOT_REASON}; needs /dev/fuse)`, () => {
  const scratch = tempDir('fss-fuse-io-');
  afterAll(async () => {
    for (const release of [...unreleased]) await release().catch(() => undefined);
    scratch.remove();
  });

  it('snapshots taken under fio QD16 load stay exact; writes under a snapshot are copied; all land', async () => {
    let runIndex = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 0, max: 150 }), { minLength: 1, maxLength: 3 }),
        fc.array(
          fc.record({
            block: fc.nat({ max: HALF / BLOCK - 32 }),
            blocks: fc.integer({ min: 1, max: 32 }),
            seed: fc.nat({ max: 250 }),
          }),
          { minLength: 1, maxLength: 4 },
        ),
        async (delaysMs, laterWrites) => {
          runIndex += 1;
          const image = join(scratch.path, `image-${runIndex}.raw`);
          const model = Buffer.from(pattern(SIZE, runIndex));
          writeFileSync(image, model);
          const origin = new Origin(await openBlockDevice(image), { logger: () => undefined });
          try {
            await withAttached(origin, {}, async ({ loop, file }) => {
              // No snapshot: the readers write themselves.
              const early = pattern(MiB, 200 + runIndex);
              await writeThroughKernel(loop.path, early, HALF + MiB, scratch.path);
              model.set(early, HALF + MiB);
              expect(file.stats.workerWrites).toBeGreaterThan(0);

              // fio over the first half while snapshots are taken at the chosen moments.
              const fio = run('fio', [
                '--name=load',
                `--filename=${loop.path}`,
                '--direct=1',
                '--ioengine=libaio',
                '--rw=randwrite',
                '--bssplit=4k/50:64k/30:256k/20',
                '--iodepth=16',
                '--size=4M',
                '--time_based',
                '--runtime=1',
                '--output-format=terse',
              ]);
              const taken: Array<{ snapshot: Snapshot; first: Uint8Array }> = [];
              for (const delay of delaysMs) {
                await new Promise((resolve) => setTimeout(resolve, delay));
                const snapshot = await origin.createSnapshot(new MemoryBackingStore());
                taken.push({ snapshot, first: await readSnapshot(snapshot) });
              }
              const fioResult = await fio;
              expect(fioResult.code, fioResult.stderr).toBe(0);

              // Writes while snapshots are active go through the main thread (copy first).
              const mainWrites = file.stats.byOpcode.WRITE ?? 0;
              const modelAtSnapshots = Buffer.from(model);
              for (const write of laterWrites) {
                const data = pattern(write.blocks * BLOCK, write.seed);
                const offset = HALF + write.block * BLOCK;
                await writeThroughKernel(loop.path, data, offset, scratch.path);
                model.set(data, offset);
              }
              expect(file.stats.byOpcode.WRITE ?? 0).toBeGreaterThan(mainWrites);

              for (const [index, { snapshot, first }] of taken.entries()) {
                const again = await readSnapshot(snapshot);
                expect(firstDifference(again, first), `snapshot ${index} changed after it was taken`).toBe(
                  -1,
                );
                expect(
                  firstDifference(again.subarray(HALF), modelAtSnapshots.subarray(HALF)),
                  `snapshot ${index}'s untouched half`,
                ).toBe(-1);
              }
              // After the load: a snapshot is the device as the kernel reads it.
              const final = await origin.createSnapshot(new MemoryBackingStore());
              const device = await readThroughKernel(loop.path);
              expect(firstDifference(await readSnapshot(final), device)).toBe(-1);
              expect(firstDifference(device.subarray(HALF), model.subarray(HALF))).toBe(-1);
              model.set(device.subarray(0, HALF), 0); // fio's bytes, now known

              // The last snapshot gone, the readers write themselves again.
              for (const { snapshot } of taken) await snapshot.close();
              await final.close();
              const workerWrites = file.stats.workerWrites;
              const late = pattern(64 * 1024, 99);
              await writeThroughKernel(loop.path, late, HALF, scratch.path);
              model.set(late, HALF);
              expect(file.stats.workerWrites).toBeGreaterThan(workerWrites);
            });
          } finally {
            await origin.close();
          }
          expect(firstDifference(readFileSync(image), model)).toBe(-1); // every write landed
        },
      ),
      { numRuns: 3, seed: 10 },
    );
  }, 240_000);
});
