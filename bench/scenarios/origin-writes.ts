/**
 * Scenario group `origin writes` (issue 12, item 2): writes through fss's origin export in
 * each copy-on-write state, against qemu-nbd writing its copy of the image (O_DIRECT, as fss's
 * origin writes are; nbdkit would write into the page cache):
 *
 *   no snapshot      the export's plain data path;
 *   first touch      a fresh unit configured just before (untimed), so every cluster the
 *                    write reaches is copied first (target ≥ 0.30×);
 *   overwrite        a fresh unit whose clusters the same write already copied (untimed
 *                    pass first), so only the bitmap is consulted (target ≥ 0.95×);
 *   four snapshots   four fresh units, each copying every cluster independently.
 *
 * Each state is written twice per round: by nbdcopy (the FSS_BENCH_WRITE_SIZE source file
 * onto the start of the export, --flush) and by fio's nbd engine (1 MiB sequential, QD16, the
 * same region, end_fsync). A third comparison runs 4 KiB random writes at QD16 over the same
 * region for a while (FSS_BENCH_SECONDS): without a snapshot, on a fresh unit (mostly first
 * touches), and on a unit whose region is all copied. Units are unconfigured and their stores
 * removed after every measurement.
 */
import { KiB, MiB } from '../lib/config';
import type { Contender, Row } from '../lib/measure';
import type { Unit } from '../lib/ours';
import { nbdcopyWrite, runFio } from '../lib/workloads';
import type { NbdContext } from './context';

type Write = (socketPath: string) => Promise<number>;

/** Runs `write` on the origin with `unitCount` fresh units, after `prepass` (untimed) if given. */
async function withUnits(
  ctx: NbdContext,
  unitCount: number,
  prepass: Write | undefined,
  write: Write,
): Promise<number> {
  const units: Unit[] = [];
  try {
    for (let unit = 0; unit < unitCount; unit++) units.push(await ctx.fss.configure(unit, ctx.origin));
    if (prepass !== undefined) await prepass(ctx.origin.socketPath);
    return await write(ctx.origin.socketPath);
  } finally {
    for (const unit of units) await ctx.fss.unconfigure(unit);
  }
}

/** `copyAll` is the untimed pass that copies every cluster of the region (default: `write`). */
function stateContenders(ctx: NbdContext, write: Write, copyAll: Write = write): Contender[] {
  return [
    { label: 'qemu-nbd', run: () => write(ctx.qemu.socketPath) },
    { label: 'fss, no snapshot', run: () => write(ctx.origin.socketPath) },
    { label: 'fss, first touch', run: () => withUnits(ctx, 1, undefined, write) },
    { label: 'fss, overwrite', run: () => withUnits(ctx, 1, copyAll, write) },
    { label: 'fss, 4 snapshots', run: () => withUnits(ctx, 4, undefined, write) },
  ];
}

function stateRows(
  tool: string,
): { name: string; subject: string; against: string[]; target: number | null }[] {
  return [
    { name: `no snapshot (${tool})`, subject: 'fss, no snapshot', against: ['qemu-nbd'], target: null },
    {
      name: `1 snapshot, first touch (${tool})`,
      subject: 'fss, first touch',
      against: ['qemu-nbd'],
      target: 0.3,
    },
    {
      name: `1 snapshot, overwrite copied (${tool})`,
      subject: 'fss, overwrite',
      against: ['qemu-nbd'],
      target: 0.95,
    },
    {
      name: `4 snapshots, first touch (${tool})`,
      subject: 'fss, 4 snapshots',
      against: ['qemu-nbd'],
      target: null,
    },
  ];
}

export async function runOriginWrites(ctx: NbdContext): Promise<Row[]> {
  const { writeBytes, fioSeconds } = ctx.config;
  const group = 'origin writes';
  const nbdcopy: Write = (socketPath) => nbdcopyWrite(ctx.images.writeSource, writeBytes, socketPath);
  const fio: Write = async (socketPath) =>
    (
      await runFio({
        target: { kind: 'nbd', socketPath },
        rw: 'write',
        blockBytes: MiB,
        queueDepth: 16,
        sizeBytes: writeBytes,
      })
    ).mibPerSecond;
  const random: Write = async (socketPath) =>
    (
      await runFio({
        target: { kind: 'nbd', socketPath },
        rw: 'randwrite',
        blockBytes: 4 * KiB,
        queueDepth: 16,
        sizeBytes: writeBytes,
        seconds: fioSeconds,
      })
    ).iops;
  const rows: Row[] = [];
  const unit = 'MiB/s';
  rows.push(
    ...(await ctx.compare({
      group,
      unit,
      better: 'higher',
      contenders: stateContenders(ctx, nbdcopy),
      rows: stateRows('nbdcopy'),
    })),
  );
  rows.push(
    ...(await ctx.compare({
      group,
      unit,
      better: 'higher',
      contenders: stateContenders(ctx, fio),
      rows: stateRows('fio nbd 1 MiB QD16'),
    })),
  );
  rows.push(
    ...(await ctx.compare({
      group,
      unit: 'IOPS',
      better: 'higher',
      contenders: stateContenders(ctx, random, fio).filter(
        (contender) => contender.label !== 'fss, 4 snapshots',
      ),
      rows: [
        {
          name: 'rand write 4 KiB QD16, no snapshot',
          subject: 'fss, no snapshot',
          against: ['qemu-nbd'],
          target: null,
        },
        {
          name: 'rand write 4 KiB QD16, fresh snapshot',
          subject: 'fss, first touch',
          against: ['qemu-nbd'],
          target: null,
        },
        {
          name: 'rand write 4 KiB QD16, copied clusters',
          subject: 'fss, overwrite',
          against: ['qemu-nbd'],
          target: null,
        },
      ],
    })),
  );
  return rows;
}
