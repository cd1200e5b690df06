/**
 * `pnpm bench`: fss's benchmark suite (issue 12). Runs every scenario group, prints one
 * Markdown table and writes bench/results/latest.json. Not a test: nothing here runs under
 * `pnpm test`, and the figures are ratios against peers measured in the same run
 * (lib/measure.ts), never absolute numbers to compare across machines.
 *
 * Order: make the images (fss's and the peers' copies) in a scratch directory, start nbdkit,
 * qemu-nbd and fssd once, warm every server up (one untimed read and write each: the first
 * pass through a Node server compiles its hot path), then the NBD groups; stop fssd (it holds
 * the origin exclusively) and run the in-process group on the same device; then the scale
 * group with a fresh fssd; then the attached group (kernel devices, `fss origin add --attach`)
 * with its own images and fssd. Everything started is stopped, detached and removed at the end,
 * on failure and on SIGINT/SIGTERM too (lib/cleanup.ts).
 *
 * FSS_BENCH_ONLY picks groups: baselines, origin-writes, snapshot-reads, cluster-sweep,
 * in-process, scale, attached. Other knobs: lib/config.ts.
 */
import { fileURLToPath } from 'node:url';
import { Cleanup } from './lib/cleanup';
import { MiB, readConfig } from './lib/config';
import type { Row } from './lib/measure';
import { FssdSession } from './lib/ours';
import { startNbdkit, startQemuNbd } from './lib/peers';
import { runCommand } from './lib/processes';
import { describeMachine, formatErrors, formatTable, toDocument, writeDocument } from './lib/report';
import { Sandbox } from './lib/sandbox';
import { nbdcopyRead, runFio } from './lib/workloads';
import { runAttached } from './scenarios/attached';
import { runBaselines } from './scenarios/baselines';
import { runClusterSweep } from './scenarios/cluster-sweep';
import { type Images, makeContext, type NbdContext } from './scenarios/context';
import { runInProcess } from './scenarios/in-process';
import { runOriginWrites } from './scenarios/origin-writes';
import { runScale } from './scenarios/scale';
import { runSnapshotReads } from './scenarios/snapshot-reads';

const REPO_DIR = fileURLToPath(new URL('..', import.meta.url));
const NBD_GROUPS = {
  baselines: runBaselines,
  'origin-writes': runOriginWrites,
  'snapshot-reads': runSnapshotReads,
  'cluster-sweep': runClusterSweep,
} as const;
const GROUPS = [...Object.keys(NBD_GROUPS), 'in-process', 'scale', 'attached'];
/** Groups that make their own images rather than use the shared ones. */
const OWN_IMAGE_GROUPS = ['scale', 'attached'];
const TOOLS = ['fio', 'nbdkit', 'qemu-nbd', 'nbdcopy', 'losetup', 'truncate'];

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

async function checkTools(): Promise<void> {
  for (const tool of TOOLS) {
    try {
      await runCommand('sh', ['-c', `command -v ${tool}`]);
    } catch {
      throw new Error(`${tool} is missing: apt-get install -y fio nbdkit qemu-utils libnbd-bin`);
    }
  }
}

async function warmUp(ctx: NbdContext): Promise<void> {
  for (const socketPath of [ctx.nbdkit.socketPath, ctx.qemu.socketPath, ctx.origin.socketPath]) {
    await nbdcopyRead(socketPath, ctx.config.imageBytes, 4);
    await runFio({
      target: { kind: 'nbd', socketPath },
      rw: 'write',
      blockBytes: MiB,
      queueDepth: 16,
      sizeBytes: ctx.config.writeBytes,
    });
  }
}

async function runNbdGroups(
  base: ReturnType<typeof makeContext>,
  images: Images,
  wanted: (group: string) => boolean,
): Promise<Row[]> {
  const { cleanup, sandbox, config } = base;
  const nbdkit = await startNbdkit(cleanup, images.nbdkit.path, sandbox.dir);
  const qemu = await startQemuNbd(cleanup, images.qemu.path, sandbox.dir);
  const fss = await FssdSession.start(cleanup, sandbox, {
    name: 'fssd',
    cpuProfileDir: config.cpuProfileDir,
    // NBD paths only: no /dev/fssN per unit (a FUSE reader thread and a loop device each,
    // which the attached group measures on its own).
    fssdArgs: ['--devices', 'off'],
  });
  const origin = await fss.addOrigin(images.ours.path, 'bench');
  const ctx: NbdContext = { ...base, images, nbdkit, qemu, fss, origin };
  log('warming up every server (untimed)');
  await warmUp(ctx);
  const rows: Row[] = [];
  for (const [group, run] of Object.entries(NBD_GROUPS)) {
    if (!wanted(group)) continue;
    log(`group ${group}`);
    rows.push(...(await run(ctx)));
  }
  await fss.stop();
  await qemu.server.stop();
  await nbdkit.server.stop();
  return rows;
}

async function main(): Promise<number> {
  const config = readConfig(process.env);
  for (const group of config.only ?? []) {
    if (!GROUPS.includes(group))
      throw new Error(`FSS_BENCH_ONLY: unknown group "${group}" (${GROUPS.join(', ')})`);
  }
  const wanted = (group: string) => config.only === undefined || config.only.includes(group);
  await checkTools();
  const cleanup = new Cleanup();
  const onSignal = (signal: NodeJS.Signals) => {
    log(`bench: ${signal}: cleaning up`);
    void cleanup.runAll().then(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  // A measurement waiting on something that can never answer (a dead daemon's socket) leaves
  // nothing in the event loop, and Node would exit silently, skipping the clean-up.
  let finished = false;
  process.once('beforeExit', () => {
    if (finished) return;
    log('bench: the event loop ran dry with a measurement still waiting: cleaning up');
    void cleanup.runAll().then(() => process.exit(1));
  });
  const startMs = performance.now();
  const date = new Date();
  const rows: Row[] = [];
  let machine: ReturnType<typeof describeMachine>;
  try {
    const sandbox = await Sandbox.create(config, cleanup);
    machine = describeMachine(sandbox.medium, sandbox.dir, REPO_DIR);
    log(
      `bench: ${config.rounds} rounds, images ${config.imageBytes / MiB} MiB, writes ${config.writeBytes / MiB} MiB, ` +
        `medium ${sandbox.medium} in ${sandbox.dir}`,
    );
    const base = makeContext({ config, cleanup, sandbox, log });
    if (GROUPS.filter((group) => !OWN_IMAGE_GROUPS.includes(group)).some(wanted)) {
      log('making images');
      const images: Images = {
        ours: await sandbox.makeImage('fss.img', config.imageBytes, 1),
        nbdkit: await sandbox.makeImage('nbdkit.img', config.imageBytes, 1),
        qemu: await sandbox.makeImage('qemu.img', config.imageBytes, 1),
        writeSource: sandbox.makeDataFile('write-source.img', config.writeBytes, 2),
      };
      if (Object.keys(NBD_GROUPS).some(wanted)) rows.push(...(await runNbdGroups(base, images, wanted)));
      if (wanted('in-process')) {
        log('group in-process');
        rows.push(...(await runInProcess(base, images)));
      }
    }
    if (wanted('scale')) {
      log('group scale');
      rows.push(...(await runScale(base)));
    }
    if (wanted('attached')) {
      log('group attached');
      rows.push(...(await runAttached(base)));
    }
  } finally {
    await cleanup.runAll();
    finished = true;
  }
  const durationSeconds = (performance.now() - startMs) / 1000;
  console.log(formatTable(rows));
  const errors = formatErrors(rows);
  for (const error of errors) log(`bench: failed: ${error}`);
  writeDocument(
    config.resultsPath,
    toDocument({
      machine,
      date,
      durationSeconds,
      config: {
        rounds: config.rounds,
        imageBytes: config.imageBytes,
        writeBytes: config.writeBytes,
        fioSeconds: config.fioSeconds,
        scaleOriginBytes: config.scaleOriginBytes,
        scaleCopyBytes: config.scaleCopyBytes,
        only: config.only ?? null,
        uvThreadPoolSize: process.env['UV_THREADPOOL_SIZE'] ?? null,
      },
      rows,
    }),
  );
  log(`bench: ${rows.length} rows in ${durationSeconds.toFixed(0)} s; wrote ${config.resultsPath}`);
  return errors.length === 0 ? 0 : 1;
}

main().then(
  (status) => {
    process.exitCode = status;
  },
  (error: unknown) => {
    log(`bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    process.exitCode = 1;
  },
);
