/**
 * Scenario group `attached` (issue 10, item 4; issue 12, item 6): the kernel block device of
 * an attached origin, `fss origin add DEV --attach`, which is a loop device over a FUSE file
 * fssd serves itself (packages/fssd/src/devices.ts), so every request crosses the kernel twice
 * (loop → FUSE → fssd → O_DIRECT on the origin). fio (libaio, direct=1, time-based over the
 * whole image) on `$FSS_DEVDIR/fss/bench` against the same fio job on a plain loop device
 * (`losetup --direct-io=on`) over a copy of the same image, measured interleaved. The
 * origin is the image file itself, as the issue states the comparison (`fss origin add
 * IMAGE --attach` beside `losetup` of a copy): both paths then end in one write to a file.
 * The same rows with the origin on a loop device over a third copy (`fss origin add
 * /dev/loopN --attach`, whatever FSS_BENCH_MEDIUM says) follow without a target: there fssd's
 * O_DIRECT origin I/O crosses a second loop driver (another worker thread and wake-up per
 * request) that the plain loop does not have, so those rows price that extra hop.
 *
 *   seq read 1 MiB QD16, seq write 1 MiB QD16       target ≥ 0.5 (no snapshot)
 *   rand write 4 KiB QD16 (IOPS)                    target ≥ 0.3 (no snapshot)
 *   seq write 1 MiB QD16 with 1 snapshot unit       target ≥ 0.25: a fresh unit
 *     configured (FSSIOCSET, as fssconfig -c) before each round's run, unconfigured after,
 *     and one pass over the image (firstTouchJob), so every cluster written is a first
 *     touch; the baseline is the same job, one pass over the image, on the plain loop in
 *     the same round (the time-based run of the no-snapshot row is another job: it keeps
 *     the queue full for its whole run, where a pass of 1 GiB also times its start and its
 *     drain, so measured against it a first touch is priced against a different workload)
 *
 * The group has its own images and its own fssd (`--devices auto --devdir DIR`, DIR in the
 * sandbox, so nothing is linked in the real /dev; the FUSE mount points are in its run
 * directory), the built one when `pnpm build` made it after the last source change, as in the
 * scale group, else from sources. fssd detaches its devices when it stops; should it not
 * (killed after the grace time), a clean-up registered before it started detaches the loop
 * devices over its FUSE files and unmounts them lazily. Skipped, with the reason, when the
 * kernel devices cannot be made (not root, no /dev/fuse, no loop driver).
 */
import { existsSync, mkdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { KiB, MiB } from '../lib/config';
import { freshBuiltFssd } from '../lib/fss-bins';
import type { Row } from '../lib/measure';
import { FssdSession, type OursOrigin } from '../lib/ours';
import { runCommand } from '../lib/processes';
import { type FioDirection, type FioJob, runFio } from '../lib/workloads';
import type { BenchContext } from './context';

/** The queue depth of every job (sequential and random): the baselines group's QD16. */
export const ATTACHED_QUEUE_DEPTH = 16;

/** Why kernel devices cannot be made here, or undefined when they can. */
export function attachSkipReason(probe: {
  uid: number | undefined;
  hasFuse: boolean;
  hasLoopControl: boolean;
}): string | undefined {
  if (probe.uid !== 0) return 'not root (attached devices need root)';
  if (!probe.hasFuse) return '/dev/fuse is missing';
  if (!probe.hasLoopControl) return '/dev/loop-control is missing (no loop driver)';
  return undefined;
}

/**
 * The first-touch job: one sequential pass of 1 MiB writes at QD16 over the whole image,
 * size-based, not time-based, so it ends at the image's end and every write it makes is a
 * first touch whatever its speed (a time-based job wrapped round to clusters it had already
 * copied once fss wrote faster than the image's size per run time: 682 MiB/s for 1 GiB).
 */
export function firstTouchJob(path: string, imageBytes: number): FioJob {
  return {
    target: { kind: 'device', path },
    rw: 'write',
    blockBytes: MiB,
    queueDepth: ATTACHED_QUEUE_DEPTH,
    sizeBytes: imageBytes,
  };
}

/** Loop devices whose backing file lies under `dir`, from `losetup -l`. */
export function loopsBackedUnder(losetupOutput: string, dir: string): string[] {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  return losetupOutput
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '')
    .map((line) => {
      const space = line.indexOf(' ');
      return { name: line.slice(0, space), backing: line.slice(space + 1).trim() };
    })
    .filter((loop) => loop.backing.startsWith(prefix))
    .map((loop) => loop.name);
}

/** Mount points under `dir` in /proc/self/mountinfo (field 5, octal escapes undone). */
export function mountsUnder(mountInfo: string, dir: string): string[] {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  return mountInfo
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((field): field is string => field !== undefined)
    .map((field) =>
      field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8))),
    )
    .filter((mountPoint) => mountPoint.startsWith(prefix));
}

/** What a killed fssd leaves under its FUSE directory: loop devices and mounts. */
async function removeLeftovers(fuseDir: string, log: (line: string) => void): Promise<void> {
  const { stdout } = await runCommand('losetup', ['-l', '-n', '--raw', '-O', 'NAME,BACK-FILE']);
  for (const loop of loopsBackedUnder(stdout, fuseDir)) {
    log(`  attached: clean-up: detaching ${loop}, left by fssd`);
    await runCommand('losetup', ['-d', loop]);
  }
  for (const mountPoint of mountsUnder(await readFile('/proc/self/mountinfo', 'utf8'), fuseDir).reverse()) {
    log(`  attached: clean-up: unmounting ${mountPoint}, left by fssd`);
    await runCommand('umount', ['-l', mountPoint]);
  }
}

/** A plain loop device with direct I/O over `file`, detached by the Cleanup. */
async function attachPlainLoop(ctx: BenchContext, file: string): Promise<string> {
  const device = (await runCommand('losetup', ['--show', '-f', '--direct-io=on', file])).stdout.trim();
  ctx.cleanup.defer(`detach ${device}`, () => runCommand('losetup', ['-d', device]).then(() => undefined));
  const dio = await readFile(`/sys/block/${device.replace('/dev/', '')}/loop/dio`, 'utf8').catch(() => '?');
  if (dio.trim() !== '1')
    ctx.log(`  attached: ${device} has no direct I/O (${file}'s filesystem refused it)`);
  return device;
}

export async function runAttached(ctx: BenchContext): Promise<Row[]> {
  const skip = attachSkipReason({
    uid: process.getuid?.(),
    hasFuse: existsSync('/dev/fuse'),
    hasLoopControl: existsSync('/dev/loop-control'),
  });
  if (skip !== undefined) {
    ctx.log(`  attached: skipped: ${skip}`);
    return [];
  }
  const { config, sandbox } = ctx;
  ctx.log('  attached: making images');
  const imageFile = sandbox.makeDataFile('attached-fss.img', config.imageBytes, 1);
  const loopOriginFile = sandbox.makeDataFile('attached-fss-loop.img', config.imageBytes, 1);
  const loopOriginDevice = await attachPlainLoop(ctx, loopOriginFile);
  sandbox.track(imageFile);
  sandbox.track(loopOriginFile);
  const plainFile = sandbox.makeDataFile('attached-plain.img', config.imageBytes, 1);
  const plainLoop = await attachPlainLoop(ctx, plainFile);

  const devDir = sandbox.path('attached-dev');
  mkdirSync(devDir, { mode: 0o755 });
  const name = 'fssd-attached';
  const fuseDir = `${sandbox.path(`${name}-run`)}/fuse`;
  // Registered before fssd starts, so it runs after fssd has stopped (newest first).
  ctx.cleanup.defer(`remove what fssd left under ${fuseDir}`, () => removeLeftovers(fuseDir, ctx.log));
  const builtPath = freshBuiltFssd();
  ctx.log(
    builtPath === undefined
      ? '  attached: fssd from sources (no fresh `pnpm build`)'
      : `  attached: fssd built (${builtPath})`,
  );
  const fss = await FssdSession.start(ctx.cleanup, sandbox, {
    name,
    cpuProfileDir: config.cpuProfileDir,
    builtPath,
    fssdArgs: ['--devices', 'auto', '--devdir', devDir],
  });
  try {
    const image = await fss.addOrigin(imageFile, 'bench', { attach: true });
    const onLoop = await fss.addOrigin(loopOriginDevice, 'bench-loop', { attach: true });
    ctx.log(
      `  attached: ${image.devicePath} over ${imageFile}, ${onLoop.devicePath} over ${loopOriginDevice}; ` +
        `baseline ${plainLoop} over a copy`,
    );
    return await measure(
      ctx,
      fss,
      [
        { origin: image, label: 'attached origin', target: true },
        { origin: onLoop, label: 'attached origin on a loop device', target: false },
      ],
      plainLoop,
    );
  } finally {
    await fss.stop();
  }
}

/** An attached origin the group measures; `target`: its rows carry the issue's targets. */
interface AttachedContender {
  origin: OursOrigin;
  label: string;
  target: boolean;
}

async function measure(
  ctx: BenchContext,
  fss: FssdSession,
  contenders: AttachedContender[],
  plainLoop: string,
): Promise<Row[]> {
  const { config } = ctx;
  const fio = async (path: string, rw: FioDirection, blockBytes: number) =>
    runFio({
      target: { kind: 'device', path },
      rw,
      blockBytes,
      queueDepth: ATTACHED_QUEUE_DEPTH,
      sizeBytes: config.imageBytes,
      seconds: config.fioSeconds,
    });
  ctx.log('  attached: warming up (untimed)');
  for (const path of [...contenders.map((entry) => entry.origin.devicePath!), plainLoop]) {
    await runFio({
      target: { kind: 'device', path },
      rw: 'read',
      blockBytes: MiB,
      queueDepth: ATTACHED_QUEUE_DEPTH,
      sizeBytes: config.imageBytes,
    });
    await runFio({
      target: { kind: 'device', path },
      rw: 'write',
      blockBytes: MiB,
      queueDepth: ATTACHED_QUEUE_DEPTH,
      sizeBytes: config.writeBytes,
    });
  }
  // And the copy-on-write path, which the writes above do not take, over the whole image as
  // a round does: a fresh daemon would otherwise compile that path during the first round's
  // first-touch pass (V8's compiler threads were a tenth of the machine's CPU in such a
  // pass), and that round read half of the later ones (docs/performance.md "fifth pass").
  const firstTouchOnFreshUnit = async (entry: AttachedContender): Promise<number> => {
    const unit = await fss.configure(0, entry.origin);
    try {
      return (await runFio(firstTouchJob(entry.origin.devicePath!, config.imageBytes))).mibPerSecond;
    } finally {
      await fss.unconfigure(unit);
    }
  };
  for (const entry of contenders) await firstTouchOnFreshUnit(entry);
  const plain = 'plain loop (direct I/O)';
  const plainOnePass = 'plain loop (direct I/O), the same pass';
  const qd = `QD${ATTACHED_QUEUE_DEPTH}`;
  const targetOf = (entry: AttachedContender, value: number) => ({ target: entry.target ? value : null });
  const firstTouchLabel = (entry: AttachedContender) => `${entry.label}, 1 fresh unit`;
  const rows: Row[] = [];
  rows.push(
    ...(await ctx.compare({
      group: 'attached',
      unit: 'MiB/s',
      better: 'higher',
      contenders: [
        { label: plain, run: async () => (await fio(plainLoop, 'read', MiB)).mibPerSecond },
        ...contenders.map((entry) => ({
          label: entry.label,
          run: async () => (await fio(entry.origin.devicePath!, 'read', MiB)).mibPerSecond,
        })),
      ],
      rows: contenders.map((entry) => ({
        name: `${entry.label}, no snapshot: seq read 1 MiB ${qd}`,
        subject: entry.label,
        against: [plain],
        ...targetOf(entry, 0.5),
      })),
    })),
  );
  rows.push(
    ...(await ctx.compare({
      group: 'attached',
      unit: 'MiB/s',
      better: 'higher',
      contenders: [
        { label: plain, run: async () => (await fio(plainLoop, 'write', MiB)).mibPerSecond },
        {
          label: plainOnePass,
          run: async () => (await runFio(firstTouchJob(plainLoop, config.imageBytes))).mibPerSecond,
        },
        ...contenders.flatMap((entry) => [
          {
            label: entry.label,
            run: async () => (await fio(entry.origin.devicePath!, 'write', MiB)).mibPerSecond,
          },
          {
            label: firstTouchLabel(entry),
            run: () => firstTouchOnFreshUnit(entry),
          },
        ]),
      ],
      rows: contenders.flatMap((entry) => [
        {
          name: `${entry.label}, no snapshot: seq write 1 MiB ${qd}`,
          subject: entry.label,
          against: [plain],
          ...targetOf(entry, 0.5),
        },
        {
          name: `${entry.label}, 1 snapshot, first touch: seq write 1 MiB ${qd}`,
          subject: firstTouchLabel(entry),
          against: [plainOnePass],
          ...targetOf(entry, 0.25),
        },
      ]),
    })),
  );
  rows.push(
    ...(await ctx.compare({
      group: 'attached',
      unit: 'IOPS',
      better: 'higher',
      contenders: [
        { label: plain, run: async () => (await fio(plainLoop, 'randwrite', 4 * KiB)).iops },
        ...contenders.map((entry) => ({
          label: entry.label,
          run: async () => (await fio(entry.origin.devicePath!, 'randwrite', 4 * KiB)).iops,
        })),
      ],
      rows: contenders.map((entry) => ({
        name: `${entry.label}, no snapshot: rand write 4 KiB ${qd}`,
        subject: entry.label,
        against: [plain],
        ...targetOf(entry, 0.3),
      })),
    })),
  );
  return rows;
}
