/**
 * A/B experiments behind docs/performance.md (not part of `pnpm bench`): each runs fss in two
 * or more configurations side by side, interleaved exactly like every bench figure
 * (lib/measure.ts), so their ratio to each other means something on a noisy machine.
 *
 *   node --conditions=@fss/source --import tsx bench/ab.ts threadpool
 *       fssd daemons on copies of the image with different UV_THREADPOOL_SIZE (FSS_AB_THREADS,
 *       default 4,16: Node's default and nbdkit's thread count, the first is the reference),
 *       plus qemu-nbd: sequential writes, first-touch writes, whole-export reads, 4 KiB
 *       random writes.
 *   node --conditions=@fss/source --import tsx bench/ab.ts slots
 *       in-process first-touch writes with fss's own 8 cache slots for 64 KiB clusters
 *       (SnapshotOptions.cacheBytes 0) against 1, 4 (the default) and 16 MiB of slots, and fio
 *       on the device for scale.
 *   FSS_AB_BASE=DIR [FSS_AB_NEW=DIR] node --conditions=@fss/source --import tsx bench/ab.ts trees
 *       two versions of fss side by side: fssd from the sources of the tree at FSS_AB_BASE
 *       ("base") and at FSS_AB_NEW ("new", default this checkout), each on its own copy of
 *       the image, plus qemu-nbd. bench/export-tree.sh makes such trees (a commit, plus
 *       working-tree paths laid over it). FSS_AB_WORKLOADS picks workloads (default: all of
 *       treeWorkloads). This is how each data-path change was measured before its commit.
 *
 * Sizes and rounds come from the bench's environment (lib/config.ts).
 */
import { Cleanup } from './lib/cleanup';
import { KiB, MiB, readConfig } from './lib/config';
import { InProcessOrigin } from './lib/in-process';
import type { Contender, Row } from './lib/measure';
import { FssdSession, type OursOrigin, type Unit } from './lib/ours';
import { startQemuNbd } from './lib/peers';
import { sleepMs } from './lib/processes';
import { formatTable } from './lib/report';
import { Sandbox } from './lib/sandbox';
import { nbdcopyRead, nbdcopyWrite, runFio, transfer } from './lib/workloads';
import { makeContext } from './scenarios/context';

type Context = ReturnType<typeof makeContext>;

async function threadPool(ctx: Context): Promise<Row[]> {
  const { config, cleanup, sandbox } = ctx;
  const daemons: { label: string; fss: FssdSession; origin: OursOrigin }[] = [];
  // FSS_AB_THREADS: the pool sizes to compare, the first being the reference (default 4,16).
  const sizes = (process.env['FSS_AB_THREADS'] ?? '4,16').split(',').map(Number);
  for (const threads of sizes) {
    const image = await sandbox.makeImage(`uv${threads}.img`, config.imageBytes, 1);
    const fss = await FssdSession.start(cleanup, sandbox, {
      name: `uv${threads}`,
      env: { ...process.env, UV_THREADPOOL_SIZE: String(threads) },
    });
    daemons.push({ label: `UV ${threads}`, fss, origin: await fss.addOrigin(image.path, 'bench') });
  }
  const reference = daemons[0]!.label;
  const qemu = await startQemuNbd(
    cleanup,
    (await sandbox.makeImage('qemu.img', config.imageBytes, 1)).path,
    sandbox.dir,
  );
  const write = async (socketPath: string) =>
    (
      await runFio({
        target: { kind: 'nbd', socketPath },
        rw: 'write',
        blockBytes: MiB,
        queueDepth: 16,
        sizeBytes: config.writeBytes,
      })
    ).mibPerSecond;
  const random = async (socketPath: string) =>
    (
      await runFio({
        target: { kind: 'nbd', socketPath },
        rw: 'randwrite',
        blockBytes: 4 * KiB,
        queueDepth: 16,
        sizeBytes: config.imageBytes,
        seconds: config.fioSeconds,
      })
    ).iops;
  const read = (socketPath: string) => nbdcopyRead(socketPath, config.imageBytes, 4);
  for (const daemon of daemons) {
    await read(daemon.origin.socketPath); // warm-up
    await write(daemon.origin.socketPath);
  }
  const workloads: {
    name: string;
    unit: 'MiB/s' | 'IOPS';
    run: (daemon: (typeof daemons)[number] | undefined) => Promise<number>;
  }[] = [
    {
      name: 'seq write 1 MiB QD16, no snapshot',
      unit: 'MiB/s',
      run: (d) => write(d?.origin.socketPath ?? qemu.socketPath),
    },
    {
      name: 'seq write 1 MiB QD16, first touch',
      unit: 'MiB/s',
      run: async (d) => {
        if (d === undefined) return write(qemu.socketPath);
        const unit = await d.fss.configure(0, d.origin);
        try {
          return await write(d.origin.socketPath);
        } finally {
          await d.fss.unconfigure(unit);
        }
      },
    },
    {
      name: 'nbdcopy read, 4 connections',
      unit: 'MiB/s',
      run: (d) => read(d?.origin.socketPath ?? qemu.socketPath),
    },
    {
      name: 'rand write 4 KiB QD16',
      unit: 'IOPS',
      run: (d) => random(d?.origin.socketPath ?? qemu.socketPath),
    },
  ];
  const rows: Row[] = [];
  for (const workload of workloads) {
    const contenders: Contender[] = [
      { label: 'qemu-nbd', run: () => workload.run(undefined) },
      ...daemons.map((daemon) => ({ label: daemon.label, run: () => workload.run(daemon) })),
    ];
    rows.push(
      ...(await ctx.compare({
        group: 'threadpool',
        unit: workload.unit,
        better: 'higher',
        contenders,
        rows: [
          ...daemons.slice(1).map((daemon) => ({
            name: `${workload.name}: ${daemon.label} vs ${reference}`,
            subject: daemon.label,
            against: [reference],
            target: null,
          })),
          ...daemons.map((daemon) => ({
            name: `${workload.name}: ${daemon.label} vs qemu-nbd`,
            subject: daemon.label,
            against: ['qemu-nbd'],
            target: null,
          })),
        ],
      })),
    );
  }
  return rows;
}

async function cacheSlots(ctx: Context): Promise<Row[]> {
  const { config, sandbox } = ctx;
  const image = await sandbox.makeImage('slots.img', config.imageBytes, 1);
  const reference = await sandbox.makeImage('device.img', config.imageBytes, 1);
  const engine = await InProcessOrigin.open(image.path, sandbox);
  try {
    const job = {
      direction: 'write' as const,
      lengthBytes: config.writeBytes,
      requestBytes: MiB,
      queueDepth: 16,
    };
    /** SnapshotOptions.cacheBytes: 0 is fss's own table (8 slots of 64 KiB). */
    const sizes = [0, MiB, 4 * MiB, 16 * MiB];
    const label = (cacheBytes: number) => (cacheBytes === 0 ? '8 slots (fss)' : `${cacheBytes / MiB} MiB`);
    const firstTouch = (cacheBytes: number) => async () => {
      const snapshot = await engine.snapshot('slots', { cacheBytes });
      try {
        return await transfer(engine.origin, job);
      } finally {
        await engine.closeSnapshot(snapshot, 'slots');
      }
    };
    await firstTouch(0)(); // warm-up
    return await ctx.compare({
      group: 'cache slots',
      unit: 'MiB/s',
      better: 'higher',
      contenders: [
        {
          label: 'fio on the device',
          run: async () =>
            (
              await runFio({
                target: { kind: 'device', path: reference.path },
                rw: 'write',
                blockBytes: MiB,
                queueDepth: 16,
                sizeBytes: config.writeBytes,
              })
            ).mibPerSecond,
        },
        ...sizes.map((cacheBytes) => ({ label: label(cacheBytes), run: firstTouch(cacheBytes) })),
      ],
      rows: sizes.flatMap((cacheBytes) => [
        {
          name: `first touch, cache ${label(cacheBytes)} vs fio`,
          subject: label(cacheBytes),
          against: ['fio on the device'],
          target: null,
        },
        ...(cacheBytes === 0
          ? []
          : [
              {
                name: `first touch, cache ${label(cacheBytes)} vs ${label(0)}`,
                subject: label(cacheBytes),
                against: [label(0)],
                target: null,
              },
            ]),
      ]),
    });
  } finally {
    await engine.close();
  }
}

/** One daemon of a `trees` run: its label, session, origin and a unit with every cluster copied. */
interface TreeDaemon {
  readonly label: string;
  readonly fss: FssdSession;
  readonly origin: OursOrigin;
  copied: Unit | undefined;
}

type TreeWorkload = {
  readonly unit: 'MiB/s' | 'IOPS';
  /** Untimed set-up on each daemon before the first round (e.g. a unit to read). */
  readonly prepare?: (daemon: TreeDaemon) => Promise<void>;
  readonly run: (daemon: TreeDaemon | undefined) => Promise<number>;
};

/** The workloads `trees` can compare, each as the bench measures it. */
function treeWorkloads(ctx: Context, qemuSocket: string): Record<string, TreeWorkload> {
  const { config } = ctx;
  const fio = (rw: 'write' | 'randwrite', socketPath: string) =>
    runFio({
      target: { kind: 'nbd', socketPath },
      rw,
      blockBytes: rw === 'write' ? MiB : 4 * KiB,
      queueDepth: 16,
      sizeBytes: config.writeBytes,
      ...(rw === 'randwrite' ? { seconds: config.fioSeconds } : {}),
    }).then((result) => (rw === 'write' ? result.mibPerSecond : result.iops));
  /** `write` on the origin with `count` fresh units, after an untimed `prepass` if given. */
  const withUnits = async (
    daemon: TreeDaemon,
    count: number,
    prepass: boolean,
    write: (socketPath: string) => Promise<number>,
  ): Promise<number> => {
    const units: Unit[] = [];
    try {
      for (let unit = 1; unit <= count; unit++) units.push(await daemon.fss.configure(unit, daemon.origin));
      if (prepass) await write(daemon.origin.socketPath);
      return await write(daemon.origin.socketPath);
    } finally {
      for (const unit of units) await daemon.fss.unconfigure(unit);
    }
  };
  const seqWrite = (socketPath: string) => fio('write', socketPath);
  const nbdcopy = (socketPath: string) =>
    nbdcopyWrite(ctx.sandbox.path('ab-source.img'), config.writeBytes, socketPath);
  return {
    write: { unit: 'MiB/s', run: (d) => seqWrite(d?.origin.socketPath ?? qemuSocket) },
    'first-touch': {
      unit: 'MiB/s',
      run: (d) => (d === undefined ? seqWrite(qemuSocket) : withUnits(d, 1, false, seqWrite)),
    },
    'first-touch-nbdcopy': {
      unit: 'MiB/s',
      run: (d) => (d === undefined ? nbdcopy(qemuSocket) : withUnits(d, 1, false, nbdcopy)),
    },
    overwrite: {
      unit: 'MiB/s',
      run: (d) => (d === undefined ? seqWrite(qemuSocket) : withUnits(d, 1, true, seqWrite)),
    },
    'four-snapshots': {
      unit: 'MiB/s',
      run: (d) => (d === undefined ? seqWrite(qemuSocket) : withUnits(d, 4, false, seqWrite)),
    },
    randwrite: { unit: 'IOPS', run: (d) => fio('randwrite', d?.origin.socketPath ?? qemuSocket) },
    'read-1': {
      unit: 'MiB/s',
      run: (d) => nbdcopyRead(d?.origin.socketPath ?? qemuSocket, config.imageBytes, 1),
    },
    'read-4': {
      unit: 'MiB/s',
      run: (d) => nbdcopyRead(d?.origin.socketPath ?? qemuSocket, config.imageBytes, 4),
    },
    'copied-read-1': {
      unit: 'MiB/s',
      prepare: (d) => copyEverything(d, config.imageBytes),
      run: (d) => nbdcopyRead(d?.copied?.socketPath ?? qemuSocket, config.imageBytes, 1),
    },
    'copied-read-4': {
      unit: 'MiB/s',
      prepare: (d) => copyEverything(d, config.imageBytes),
      run: (d) => nbdcopyRead(d?.copied?.socketPath ?? qemuSocket, config.imageBytes, 4),
    },
  };
}

/** Configures fss0 and rewrites the whole origin, so that fss0 holds every cluster. */
async function copyEverything(daemon: TreeDaemon, sizeBytes: number): Promise<void> {
  if (daemon.copied !== undefined) return;
  daemon.copied = await daemon.fss.configure(0, daemon.origin);
  await runFio({
    target: { kind: 'nbd', socketPath: daemon.origin.socketPath },
    rw: 'write',
    blockBytes: MiB,
    queueDepth: 16,
    sizeBytes,
  });
  await sleepMs(1000); // the last write-back batch lands before anything is timed
}

async function trees(ctx: Context): Promise<Row[]> {
  const { config, cleanup, sandbox } = ctx;
  const baseTree = process.env['FSS_AB_BASE'];
  if (baseTree === undefined || baseTree === '')
    throw new Error('trees: set FSS_AB_BASE to the base checkout');
  sandbox.makeDataFile('ab-source.img', config.writeBytes, 2);
  const daemons: TreeDaemon[] = [];
  const newTree = process.env['FSS_AB_NEW'] || undefined;
  for (const [label, sourceTree] of [
    ['base', baseTree],
    ['new', newTree],
  ] as const) {
    const image = await sandbox.makeImage(`${label}.img`, config.imageBytes, 1);
    const fss = await FssdSession.start(cleanup, sandbox, { name: label, sourceTree });
    daemons.push({ label, fss, origin: await fss.addOrigin(image.path, 'bench'), copied: undefined });
  }
  const qemu = await startQemuNbd(
    cleanup,
    (await sandbox.makeImage('qemu.img', config.imageBytes, 1)).path,
    sandbox.dir,
  );
  const all = treeWorkloads(ctx, qemu.socketPath);
  const wanted = (process.env['FSS_AB_WORKLOADS'] ?? Object.keys(all).join(',')).split(',');
  for (const daemon of daemons) {
    await nbdcopyRead(daemon.origin.socketPath, config.imageBytes, 4); // warm-up
    await all['write']!.run(daemon);
  }
  const rows: Row[] = [];
  for (const name of wanted) {
    const workload = all[name];
    if (workload === undefined)
      throw new Error(`trees: unknown workload ${name} (${Object.keys(all).join(', ')})`);
    for (const daemon of daemons) await workload.prepare?.(daemon);
    rows.push(
      ...(await ctx.compare({
        group: 'trees',
        unit: workload.unit,
        better: 'higher',
        contenders: [
          { label: 'qemu-nbd', run: () => workload.run(undefined) },
          ...daemons.map((daemon) => ({ label: daemon.label, run: () => workload.run(daemon) })),
        ],
        rows: [
          { name: `${name}: new vs base`, subject: 'new', against: ['base'], target: null },
          { name: `${name}: base vs qemu-nbd`, subject: 'base', against: ['qemu-nbd'], target: null },
          { name: `${name}: new vs qemu-nbd`, subject: 'new', against: ['qemu-nbd'], target: null },
        ],
      })),
    );
  }
  return rows;
}

const EXPERIMENTS: Record<string, (ctx: Context) => Promise<Row[]>> = {
  threadpool: threadPool,
  slots: cacheSlots,
  trees,
};

async function main(): Promise<void> {
  const name = process.argv[2] ?? '';
  const experiment = EXPERIMENTS[name];
  if (experiment === undefined) throw new Error(`usage: bench/ab.ts ${Object.keys(EXPERIMENTS).join('|')}`);
  const config = readConfig(process.env);
  const cleanup = new Cleanup();
  process.once('SIGINT', () => void cleanup.runAll().then(() => process.exit(130)));
  try {
    const sandbox = await Sandbox.create(config, cleanup);
    const ctx = makeContext({ config, cleanup, sandbox, log: (line) => process.stderr.write(`${line}\n`) });
    console.log(formatTable(await experiment(ctx)));
  } finally {
    await cleanup.runAll();
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`ab: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 1;
});
