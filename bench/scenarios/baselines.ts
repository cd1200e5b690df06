/**
 * Scenario group `baselines` (issue 12, item 1): fio's classic jobs (1 MiB sequential read
 * and write, 4 KiB random write, each at QD1 and QD16) on the device with direct I/O, and the
 * same jobs through nbdkit, qemu-nbd and fss's origin export (no snapshot) with fio's nbd
 * engine. Each round measures all four; the rows show what NBD costs each peer against the
 * device, and fss's origin against the peers:
 *
 *   reads   against the better of nbdkit and qemu-nbd (target 1.0× at QD16: "origin
 *           sequential reads ≥ 1.0× the better of nbdkit and qemu-nbd");
 *   writes  against qemu-nbd (O_DIRECT like fss's origin; nbdkit writes into the page cache),
 *           target 0.8× for 4 KiB random writes at QD16.
 *
 * The jobs are time-based (FSS_BENCH_SECONDS after a 0.5 s ramp) over the whole image.
 */

import { KiB, MiB } from '../lib/config';
import type { Row, RowSpec } from '../lib/measure';
import { type FioDirection, type FioTarget, runFio } from '../lib/workloads';
import type { NbdContext } from './context';

interface Workload {
  name: string;
  rw: FioDirection;
  blockBytes: number;
  queueDepth: number;
  unit: 'MiB/s' | 'IOPS';
  /** The fss row's target, or null. */
  target: number | null;
}

const WORKLOADS: readonly Workload[] = [
  { name: 'seq read 1 MiB QD1', rw: 'read', blockBytes: MiB, queueDepth: 1, unit: 'MiB/s', target: null },
  { name: 'seq read 1 MiB QD16', rw: 'read', blockBytes: MiB, queueDepth: 16, unit: 'MiB/s', target: 1.0 },
  { name: 'seq write 1 MiB QD1', rw: 'write', blockBytes: MiB, queueDepth: 1, unit: 'MiB/s', target: null },
  { name: 'seq write 1 MiB QD16', rw: 'write', blockBytes: MiB, queueDepth: 16, unit: 'MiB/s', target: null },
  {
    name: 'rand write 4 KiB QD1',
    rw: 'randwrite',
    blockBytes: 4 * KiB,
    queueDepth: 1,
    unit: 'IOPS',
    target: null,
  },
  {
    name: 'rand write 4 KiB QD16',
    rw: 'randwrite',
    blockBytes: 4 * KiB,
    queueDepth: 16,
    unit: 'IOPS',
    target: 0.8,
  },
];

export async function runBaselines(ctx: NbdContext): Promise<Row[]> {
  const rows: Row[] = [];
  for (const workload of WORKLOADS) {
    const measure = (target: FioTarget) => async () => {
      const result = await runFio({
        target,
        rw: workload.rw,
        blockBytes: workload.blockBytes,
        queueDepth: workload.queueDepth,
        sizeBytes: ctx.config.imageBytes,
        seconds: ctx.config.fioSeconds,
      });
      return workload.unit === 'IOPS' ? result.iops : result.mibPerSecond;
    };
    const isRead = workload.rw === 'read';
    const fssRow: RowSpec = {
      name: `fss origin, no snapshot: ${workload.name} (fio nbd)`,
      subject: 'fss',
      against: isRead ? ['nbdkit', 'qemu-nbd'] : ['qemu-nbd'],
      target: workload.target,
    };
    rows.push(
      ...(await ctx.compare({
        group: 'baselines',
        unit: workload.unit,
        better: 'higher',
        contenders: [
          { label: 'fio on the device', run: measure({ kind: 'device', path: ctx.images.qemu.path }) },
          { label: 'nbdkit', run: measure({ kind: 'nbd', socketPath: ctx.nbdkit.socketPath }) },
          { label: 'qemu-nbd', run: measure({ kind: 'nbd', socketPath: ctx.qemu.socketPath }) },
          { label: 'fss', run: measure({ kind: 'nbd', socketPath: ctx.origin.socketPath }) },
        ],
        rows: [
          {
            name: `nbdkit file: ${workload.name}`,
            subject: 'nbdkit',
            against: ['fio on the device'],
            target: null,
          },
          {
            name: `qemu-nbd --cache=none: ${workload.name}`,
            subject: 'qemu-nbd',
            against: ['fio on the device'],
            target: null,
          },
          fssRow,
        ],
      })),
    );
  }
  return rows;
}
