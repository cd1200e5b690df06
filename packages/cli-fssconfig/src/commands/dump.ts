/**
 * `fss dump [--format raw|qcow2] [--progress MODE] fssN FILE|-`: the snapshot as an image.
 *
 * raw (the default) into FILE: sparse (all-zero blocks are not written, the file is sized with
 * ftruncate), written under a temporary name and renamed once complete and the unit is still
 * valid; into `-`: every byte on stdout. qcow2: through qemu-img (see copy/qcow2.ts). A failure,
 * an invalid snapshot or a signal leaves no FILE behind (an older FILE is kept).
 */
import type { ConnectOptions } from '@fss/control';
import { copySnapshot } from '../copy/copy-snapshot';
import { dumpQcow2 } from '../copy/qcow2';
import { NewFileTarget, StreamTarget } from '../copy/targets';
import { invalid, parseCopyArgs, progressModeOf, runCopyCommand, usageExit } from './copy-command';
import { FSS_DUMP_USAGE } from './fss';
import type { CommandIo } from './io';

export async function dump(args: readonly string[], io: CommandIo, connect: ConnectOptions): Promise<number> {
  const parsed = parseCopyArgs(args, ['--format', '--progress'], []);
  const progress = progressModeOf(parsed?.values.get('--progress'));
  const format = parsed?.values.get('--format') ?? 'raw';
  if (parsed === undefined || parsed.operands.length !== 2 || progress === undefined) {
    return usageExit(io, FSS_DUMP_USAGE);
  }
  if (format !== 'raw' && format !== 'qcow2') return usageExit(io, FSS_DUMP_USAGE);
  const [unit, file] = parsed.operands as [string, string];
  return runCopyCommand(`dump ${unit}`, unit, io, connect, { op: 'dump', progress }, async (context) => {
    const { source } = context;
    if (format === 'qcow2') {
      if (file === '-') invalid('--format qcow2 needs a FILE: qemu-img cannot write qcow2 to a pipe');
      await dumpQcow2({ source, path: file, progress: context.progress, signal: context.signal });
      return;
    }
    if (file === '-' && io.streams === undefined) invalid('dump to - needs the process streams');
    const target =
      file === '-'
        ? new StreamTarget(io.streams?.stdout as NodeJS.WritableStream)
        : await NewFileTarget.create(file, source.size);
    await copySnapshot({
      source,
      ranges: [{ offset: 0, length: source.size }],
      target,
      progress: context.progress,
      verify: false,
      signal: context.signal,
    });
  });
}
