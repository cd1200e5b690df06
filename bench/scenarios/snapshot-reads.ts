/**
 * Scenario group `snapshot reads` (issue 12, item 3): whole-export sequential reads with
 * nbdcopy to null:, with 1 and with 4 connections (all exports advertise CAN_MULTI_CONN),
 * against the better of nbdkit and qemu-nbd reading their copies:
 *
 *   origin      fss's origin export, two snapshots configured (reads go to the device)
 *               (target ≥ 1.0×);
 *   untouched   fss1, taken after the last write: every cluster is read from the origin
 *               (target ≥ 1.0×);
 *   copied      fss0, taken before the whole image was rewritten through the origin: every
 *               cluster is read from its store (target ≥ 0.9×).
 *
 * Set-up (untimed, once): configure fss0, rewrite the whole image through the origin export
 * with fio (1 MiB, QD16), configure fss1. Both are unconfigured at the end.
 */
import { MiB } from '../lib/config';
import type { Row } from '../lib/measure';
import type { Unit } from '../lib/ours';
import { sleepMs } from '../lib/processes';
import { nbdcopyRead, runFio } from '../lib/workloads';
import type { NbdContext } from './context';

export async function runSnapshotReads(ctx: NbdContext): Promise<Row[]> {
  const sizeBytes = ctx.config.imageBytes;
  const units: Unit[] = [];
  try {
    const copied = await ctx.fss.configure(0, ctx.origin);
    units.push(copied);
    ctx.log(`  snapshot reads: rewriting the whole origin so that fss0 holds every cluster`);
    await runFio({
      target: { kind: 'nbd', socketPath: ctx.origin.socketPath },
      rw: 'write',
      blockBytes: MiB,
      queueDepth: 16,
      sizeBytes,
    });
    const untouched = await ctx.fss.configure(1, ctx.origin);
    units.push(untouched);
    await sleepMs(1000); // let fss0's last write-back batch land before anything is timed
    const rows: Row[] = [];
    for (const connections of [1, 4]) {
      const read = (socketPath: string) => () => nbdcopyRead(socketPath, sizeBytes, connections);
      const peers = ['nbdkit', 'qemu-nbd'];
      const suffix = `(nbdcopy, ${connections} connection${connections === 1 ? '' : 's'})`;
      rows.push(
        ...(await ctx.compare({
          group: 'snapshot reads',
          unit: 'MiB/s',
          better: 'higher',
          contenders: [
            { label: 'nbdkit', run: read(ctx.nbdkit.socketPath) },
            { label: 'qemu-nbd', run: read(ctx.qemu.socketPath) },
            { label: 'fss origin', run: read(ctx.origin.socketPath) },
            { label: 'fss untouched', run: read(untouched.socketPath) },
            { label: 'fss copied', run: read(copied.socketPath) },
          ],
          rows: [
            { name: `origin read ${suffix}`, subject: 'fss origin', against: peers, target: 1.0 },
            {
              name: `snapshot read, untouched clusters ${suffix}`,
              subject: 'fss untouched',
              against: peers,
              target: 1.0,
            },
            {
              name: `snapshot read, copied clusters ${suffix}`,
              subject: 'fss copied',
              against: peers,
              target: 0.9,
            },
          ],
        })),
      );
    }
    return rows;
  } finally {
    for (const unit of units) await ctx.fss.unconfigure(unit);
  }
}
