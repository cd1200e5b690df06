/**
 * `fss backup [--since fssM] [--verify] [--progress MODE] fssN FILE`.
 *
 * Full (no --since): as `fss dump fssN FILE`, raw and sparse, FILE replaced only once the copy
 * is complete. Incremental (--since fssM, an older unit of the same origin): only the extents
 * written between fssM and fssN (fssd's `changed` op) are read and written into FILE in place,
 * which must be the previous backup (a regular file of the snapshot's size). --verify reads
 * back everything that was written and compares it with the snapshot before finishing.
 */
import type { ConnectOptions, FssClient } from '@fss/control';
import { FssError } from '@fss/core';
import type { ByteRange } from '@fss/nbd';
import { COPY_REQUEST_BYTES, copySnapshot } from '../copy/copy-snapshot';
import type { SnapshotSource } from '../copy/snapshot-source';
import { type CopyTarget, ExistingFileTarget, NewFileTarget } from '../copy/targets';
import { invalid, parseCopyArgs, progressModeOf, runCopyCommand, usageExit } from './copy-command';
import { FSS_BACKUP_USAGE } from './fss';
import type { CommandIo } from './io';

export async function backup(
  args: readonly string[],
  io: CommandIo,
  connect: ConnectOptions,
): Promise<number> {
  const parsed = parseCopyArgs(args, ['--since', '--progress'], ['--verify']);
  const progress = progressModeOf(parsed?.values.get('--progress'));
  if (parsed === undefined || parsed.operands.length !== 2 || progress === undefined) {
    return usageExit(io, FSS_BACKUP_USAGE);
  }
  const [unit, file] = parsed.operands as [string, string];
  const since = parsed.values.get('--since');
  const verify = parsed.flags.has('--verify');
  return runCopyCommand(`backup ${unit}`, unit, io, connect, { op: 'backup', progress }, async (context) => {
    const { source } = context;
    if (file === '-') invalid('backup writes a FILE (fss dump writes stdout)');
    let ranges: ByteRange[] = [{ offset: 0, length: source.size }];
    let target: CopyTarget;
    if (since === undefined) target = await NewFileTarget.create(file, source.size);
    else {
      ranges = await changedRanges(context.control, source, since);
      target = await ExistingFileTarget.open(file, source.size, COPY_REQUEST_BYTES);
    }
    try {
      await copySnapshot({
        source,
        ranges,
        target,
        progress: context.progress,
        verify,
        signal: context.signal,
      });
    } catch (error) {
      if (since !== undefined) {
        io.err(`fss: backup ${unit}: ${file} is partly updated: run the same command again to complete it`);
      }
      throw error;
    }
  });
}

/**
 * The extents written between `since` and the source's unit: fssd's `changed` op, which reads
 * no data (fssN's record of what fssM had copied when fssN was taken). fssd refuses a `since`
 * that is not an older unit of the same origin (EINVAL) or was invalid by then (ENXIO).
 */
async function changedRanges(
  control: FssClient,
  source: SnapshotSource,
  since: string,
): Promise<ByteRange[]> {
  const changed = await control.changed(source.unit, { since });
  const ranges = [...changed.extents].sort((a, b) => a.offset - b.offset);
  let previousEnd = 0;
  for (const range of ranges) {
    if (range.offset < previousEnd || range.offset + range.length > source.size) {
      throw new FssError(
        'EPROTO',
        `fssd answered changed extents that overlap or pass the end (${range.offset})`,
      );
    }
    previousEnd = range.offset + range.length;
  }
  return ranges;
}
