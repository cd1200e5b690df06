/**
 * Scenario group `in-process` (issue 12, items 2 and 3, "in-process through the library
 * too"): the same states as `origin writes` and `snapshot reads`, driven through the library
 * API in the bench's own process (16 loops of 1 MiB requests over the first
 * FSS_BENCH_WRITE_SIZE bytes), against fio with libaio and direct I/O on a copy of the device
 * (same region, 1 MiB, QD16). No NBD and no second process: the gap to fio is the engine's
 * and blockdev-linux's own cost. Rows are informational (the targets are for NBD).
 *
 * Runs after fssd has released the origin (the device is claimed exclusively); one untimed
 * pass of each kind first warms the JIT.
 */

import type { BlockDevice } from '@fss/core';
import type { Durability, Snapshot } from '@fss/engine';
import { MiB } from '../lib/config';
import { InProcessOrigin } from '../lib/in-process';
import type { Row } from '../lib/measure';
import { runFio, transfer } from '../lib/workloads';
import type { BenchContext, Images } from './context';

export async function runInProcess(ctx: BenchContext, images: Images): Promise<Row[]> {
  const lengthBytes = ctx.config.writeBytes;
  const job = { lengthBytes, requestBytes: MiB, queueDepth: 16 };
  const fio = (rw: 'read' | 'write') => async () =>
    (
      await runFio({
        target: { kind: 'device', path: images.qemu.path },
        rw,
        blockBytes: MiB,
        queueDepth: 16,
        sizeBytes: lengthBytes,
      })
    ).mibPerSecond;
  const engine = await InProcessOrigin.open(images.ours.path, ctx.sandbox);
  try {
    ctx.log(`  in-process: origin ${images.ours.path} opened ${engine.ioMode}`);
    const write = (device: BlockDevice) => transfer(device, { ...job, direction: 'write' });
    const read = (device: BlockDevice) => transfer(device, { ...job, direction: 'read' });
    const withSnapshots = async (
      count: number,
      prepass: boolean,
      durability?: Durability,
    ): Promise<number> => {
      const snapshots: Snapshot[] = [];
      try {
        for (let index = 0; index < count; index++) {
          snapshots.push(
            await engine.snapshot(`inproc${index}`, durability === undefined ? {} : { durability }),
          );
        }
        if (prepass) await write(engine.origin);
        return await write(engine.origin);
      } finally {
        for (const [index, snapshot] of snapshots.entries())
          await engine.closeSnapshot(snapshot, `inproc${index}`);
      }
    };
    await withSnapshots(1, false); // warm-up
    const group = 'in-process';
    const against = ['fio on the device'];
    const rows = await ctx.compare({
      group,
      unit: 'MiB/s',
      better: 'higher',
      contenders: [
        { label: 'fio on the device', run: fio('write') },
        { label: 'fss, no snapshot', run: () => write(engine.origin) },
        { label: 'fss, first touch', run: () => withSnapshots(1, false) },
        { label: 'fss, first touch, persistent', run: () => withSnapshots(1, false, 'process') },
        { label: 'fss, first touch, persistent (power)', run: () => withSnapshots(1, false, 'power') },
        { label: 'fss, overwrite', run: () => withSnapshots(1, true) },
        { label: 'fss, 4 snapshots', run: () => withSnapshots(4, false) },
      ],
      rows: [
        { name: 'origin write, no snapshot (library)', subject: 'fss, no snapshot', against, target: null },
        {
          name: 'origin write, 1 snapshot, first touch (library)',
          subject: 'fss, first touch',
          against,
          target: null,
        },
        {
          // Issue 15: the commit protocol keeps first touch at >= 0.25x the raw write rate.
          name: 'origin write, 1 persistent snapshot (durability process), first touch (library)',
          subject: 'fss, first touch, persistent',
          against,
          target: 0.25,
        },
        {
          name: 'origin write, 1 persistent snapshot (durability power), first touch (library)',
          subject: 'fss, first touch, persistent (power)',
          against,
          target: null,
        },
        {
          name: 'origin write, 1 snapshot, overwrite copied (library)',
          subject: 'fss, overwrite',
          against,
          target: null,
        },
        {
          name: 'origin write, 4 snapshots, first touch (library)',
          subject: 'fss, 4 snapshots',
          against,
          target: null,
        },
      ],
    });
    const copied = await engine.snapshot('inproc-copied');
    try {
      await write(engine.origin);
      const untouched = await engine.snapshot('inproc-untouched');
      try {
        await read(untouched); // warm-up
        rows.push(
          ...(await ctx.compare({
            group,
            unit: 'MiB/s',
            better: 'higher',
            contenders: [
              { label: 'fio on the device', run: fio('read') },
              { label: 'fss origin', run: () => read(engine.origin) },
              { label: 'fss untouched', run: () => read(untouched) },
              { label: 'fss copied', run: () => read(copied) },
            ],
            rows: [
              { name: 'origin read (library)', subject: 'fss origin', against, target: null },
              {
                name: 'snapshot read, untouched clusters (library)',
                subject: 'fss untouched',
                against,
                target: null,
              },
              {
                name: 'snapshot read, copied clusters (library)',
                subject: 'fss copied',
                against,
                target: null,
              },
            ],
          })),
        );
      } finally {
        await engine.closeSnapshot(untouched, 'inproc-untouched');
      }
    } finally {
      await engine.closeSnapshot(copied, 'inproc-copied');
    }
    return rows;
  } finally {
    await engine.close();
  }
}
