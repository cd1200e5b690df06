/**
 * Scenario group `scale` (issue 12, item 4): a sparse origin of FSS_BENCH_SCALE_SIZE (1 TiB)
 * made with truncate in the scratch directory, served by a fresh fssd of its own (so its
 * memory is not what earlier scenarios left behind).
 *
 *   configure   the FSSIOCSET round trip on the control socket (what fssconfig -c sends),
 *               against a 100 ms budget, and against the same request on a 1 GiB sparse
 *               origin (how configure time grows with the device); the unit is unconfigured,
 *               untimed, after each. The whole `fssconfig -c` command is timed too, against
 *               `fssconfig -l fss0` (the same Node start-up from sources, no configure).
 *   memory      fssd's VmRSS (/proc/PID/status) after configuring fss0 on the 1 TiB origin,
 *               and after fio wrote FSS_BENCH_SCALE_COPY in random cluster-sized, cluster-
 *               aligned writes through the origin export (each one a first touch), against
 *               the budget "64 MiB plus the copied bitmap" (one bit per cluster). The
 *               group runs the built fssd (packages/fssd/dist, after `pnpm build`) when it
 *               is newer than every source file: that is what users run. Otherwise it runs
 *               fssd from sources, which also carries the tsx loader and its transform
 *               caches (25 to 45 MiB on Node 20), and the target rows are an estimate: RSS
 *               less an idle `node --import tsx` less an idle `node`, measured in the same
 *               run (it can be off by 10 MiB or more; the built figure is the real one).
 */
import { MiB } from '../lib/config';
import { freshBuiltFssd, idleNodeRssMiB, runFssCli } from '../lib/fss-bins';
import { fixedRow, type Row } from '../lib/measure';
import { FssdSession } from '../lib/ours';
import { sleepMs } from '../lib/processes';
import { runFio } from '../lib/workloads';
import type { BenchContext } from './context';

const CONFIGURE_BUDGET_MS = 100;
const RSS_BUDGET_MIB = 64;

function sizeLabel(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let index = 0;
  while (bytes >= 1024 && index < units.length - 1 && bytes % 1024 === 0) {
    bytes /= 1024;
    index++;
  }
  return `${bytes} ${units[index]}`;
}

export async function runScale(ctx: BenchContext): Promise<Row[]> {
  const group = 'scale';
  const big = sizeLabel(ctx.config.scaleOriginBytes);
  const small = sizeLabel(ctx.config.imageBytes);
  const builtPath = freshBuiltFssd();
  ctx.log(
    builtPath === undefined
      ? '  scale: fssd from sources (no fresh `pnpm build`): the RSS targets are estimates'
      : `  scale: fssd built (${builtPath}): the RSS rows are what users run`,
  );
  const session = await FssdSession.start(ctx.cleanup, ctx.sandbox, {
    name: 'scale',
    cpuProfileDir: ctx.config.cpuProfileDir,
    builtPath,
    fssdArgs: ['--devices', 'off'], // the daemon's own memory, no per-unit FUSE device
  });
  try {
    await sleepMs(500);
    const idle = session.memoryMiB();
    const bigOrigin = await session.addOriginDirect(
      await ctx.sandbox.makeSparseFile('scale-big.img', ctx.config.scaleOriginBytes),
      'big',
    );
    const smallOrigin = await session.addOriginDirect(
      await ctx.sandbox.makeSparseFile('scale-small.img', ctx.config.imageBytes),
      'small',
    );
    const timeConfigure = (origin: typeof bigOrigin) => async () => {
      const backup = ctx.sandbox.path('scale.backup');
      ctx.sandbox.forget(backup);
      const startMs = performance.now();
      await session.request('FSSIOCSET', {
        unit: 'fss0',
        mode: 'rw',
        arg: { fss_mount: origin.path, fss_bstore: backup, fss_csize: 0, fss_flags: 0 },
      });
      const elapsedMs = performance.now() - startMs;
      await session.request('FSSIOCCLR', { unit: 'fss0', mode: 'rw' });
      ctx.sandbox.forget(backup);
      return elapsedMs;
    };
    // One untimed configure of each first: the first request through a fresh daemon compiles.
    await timeConfigure(smallOrigin)();
    await timeConfigure(bigOrigin)();
    const rows = await ctx.compare({
      group,
      unit: 'ms',
      better: 'lower',
      contenders: [
        { label: `budget ${CONFIGURE_BUDGET_MS} ms`, run: async () => CONFIGURE_BUDGET_MS },
        { label: `${small} origin`, run: timeConfigure(smallOrigin) },
        { label: `${big} origin`, run: timeConfigure(bigOrigin) },
      ],
      rows: [
        {
          name: `configure fss0 on a ${big} sparse origin (FSSIOCSET)`,
          subject: `${big} origin`,
          against: [`budget ${CONFIGURE_BUDGET_MS} ms`],
          target: 1.0,
        },
        {
          name: `configure on ${big} vs on ${small} (FSSIOCSET)`,
          subject: `${big} origin`,
          against: [`${small} origin`],
          target: null,
        },
      ],
    });
    const backup = ctx.sandbox.path('scale-cli.backup');
    rows.push(
      ...(await ctx.compare({
        group,
        unit: 'ms',
        better: 'lower',
        contenders: [
          {
            label: 'fssconfig -l fss0',
            run: async () => {
              const startMs = performance.now();
              await runFssCli('fssconfig', ['-l', 'fss0'], session.runDir);
              return performance.now() - startMs;
            },
          },
          {
            label: 'fssconfig -c',
            run: async () => {
              ctx.sandbox.forget(backup);
              const startMs = performance.now();
              await runFssCli('fssconfig', ['-c', 'fss0', bigOrigin.path, backup], session.runDir);
              const elapsedMs = performance.now() - startMs;
              await session.request('FSSIOCCLR', { unit: 'fss0', mode: 'rw' });
              ctx.sandbox.forget(backup);
              return elapsedMs;
            },
          },
        ],
        rows: [
          {
            name: `fssconfig -c on ${big}, whole command (Node start-up from sources)`,
            subject: 'fssconfig -c',
            against: ['fssconfig -l fss0'],
            target: null,
          },
        ],
      })),
    );
    const unit = await session.configure(0, bigOrigin);
    try {
      const info = await session.info(0);
      const clusterCount = Math.ceil(ctx.config.scaleOriginBytes / info.fsg_csize);
      const budgetMiB = RSS_BUDGET_MIB + clusterCount / 8 / MiB;
      const budgetLabel = `64 MiB + ${(clusterCount / 8 / MiB).toFixed(1)} MiB bitmap`;
      await sleepMs(500);
      const configured = session.memoryMiB();
      ctx.log(
        `  scale: copying ${sizeLabel(ctx.config.scaleCopyBytes)} of random ${info.fsg_csize}-byte clusters`,
      );
      const copy = await runFio({
        target: { kind: 'nbd', socketPath: bigOrigin.socketPath },
        rw: 'randwrite',
        blockBytes: info.fsg_csize,
        queueDepth: 16,
        sizeBytes: ctx.config.scaleOriginBytes,
        ioBytes: ctx.config.scaleCopyBytes,
      });
      ctx.log(`  scale: copy ran at ${copy.iops.toFixed(0)} clusters/s`);
      await sleepMs(500);
      const copiedMemory = session.memoryMiB();
      for (const [when, memory] of [
        ['idle', idle],
        ['configured', configured],
        ['after the copy', copiedMemory],
      ] as const) {
        ctx.log(
          `  scale: fssd ${when}: VmRSS ${memory.rssMiB.toFixed(1)} MiB = RssAnon ${memory.anonMiB.toFixed(1)} + ` +
            `RssFile ${memory.fileMiB.toFixed(1)} (+ shmem), VmHWM ${memory.peakMiB.toFixed(1)}`,
        );
      }
      const memoryRow = (name: string, ours: number, target: number | null) =>
        fixedRow({
          group,
          name,
          ours,
          baseline: budgetMiB,
          baselineLabel: budgetLabel,
          unit: 'MiB',
          better: 'lower',
          target,
        });
      const copiedLabel = `copying ${sizeLabel(ctx.config.scaleCopyBytes)} of random clusters`;
      if (builtPath !== undefined) {
        rows.push(
          memoryRow('fssd RSS, idle (built fssd)', idle.rssMiB, null),
          memoryRow(`fssd RSS after configuring fss0 on ${big} (built fssd)`, configured.rssMiB, 1.0),
          memoryRow(`fssd RSS after ${copiedLabel} (built fssd)`, copiedMemory.rssMiB, 1.0),
          memoryRow('fssd peak RSS (VmHWM) over the scale group (built fssd)', copiedMemory.peakMiB, null),
        );
        return rows;
      }
      const loaderMiB =
        (await idleNodeRssMiB(ctx.cleanup, ctx.sandbox.path('idle.ts'), true)) -
        (await idleNodeRssMiB(ctx.cleanup, ctx.sandbox.path('idle.mjs'), false));
      rows.push(
        memoryRow('fssd RSS, idle, as run from sources (tsx loaded)', idle.rssMiB, null),
        memoryRow('share of that from the tsx loader (idle node --import tsx − idle node)', loaderMiB, null),
        memoryRow(
          `fssd RSS after configuring fss0 on ${big}, estimate: less the loader`,
          configured.rssMiB - loaderMiB,
          1.0,
        ),
        memoryRow(
          `fssd RSS after ${copiedLabel}, estimate: less the loader`,
          copiedMemory.rssMiB - loaderMiB,
          1.0,
        ),
        memoryRow(`fssd RSS after ${copiedLabel}, as measured from sources`, copiedMemory.rssMiB, null),
        memoryRow('fssd peak RSS (VmHWM) over the scale group, from sources', copiedMemory.peakMiB, null),
      );
      return rows;
    } finally {
      await session.unconfigure(unit);
    }
  } finally {
    await session.stop();
  }
}
