/**
 * fssck: checks a backing store offline (SPEC §9), the way fsck checks a filesystem.
 *
 *   fssck [--json] STORE
 *
 * STORE is a backing file or a raw device, read only. The checks are @fss/core's checkStore:
 * the header (magic, version, CRC), the geometry fields against each other and the store's
 * size, the indirect table (bounds, no store cluster mapped twice, none in use unmapped,
 * entries a torn commit left past next cluster). Text output, one line each:
 *
 *   fssck: STORE: format 2, commit 7, origin /srv/disk.img (1G), 16384 cluster of 64K, 12 copied, valid, taken …
 *   fssck: STORE: warning: …
 *   fssck: STORE: error: …
 *   fssck: STORE: clean                 (exit 0)
 *   fssck: STORE: damaged (N errors)    (exit 1)
 *
 * `--json` prints one object instead: {store, clean, header, copiedClusters, tornEntries,
 * findings: [{severity, code, message}]}. Exit 2 for bad usage and for a store that cannot be
 * opened or read at all (nothing was checked). Run it on a store no daemon is using.
 */
import { type FileHandle, open, readFile } from 'node:fs/promises';
import { checkStore, type StoreCheck, type StoreSource, strerror, toFssError } from '@fss/core';
import { helpText, usageText } from '@fss/manual';
import { humanizeNumber } from '../cli/humanize';
import { formatLocalTime } from '../cli/list-format';
import { FSSCK_MANUAL } from '../manual/fssck';
import { type CommandIo, Exit } from './io';

export const FSSCK_USAGE = usageText(FSSCK_MANUAL);
const EXIT_DAMAGED = 1;
const EXIT_USAGE = 2;

export async function fssck(argv: readonly string[], io: CommandIo): Promise<number> {
  try {
    if (argv.includes('--help')) {
      io.out(helpText(FSSCK_MANUAL));
      return 0;
    }
    const json = argv[0] === '--json';
    const operands = json ? argv.slice(1) : argv;
    if (operands.length !== 1 || (operands[0] as string).startsWith('-')) {
      io.err(FSSCK_USAGE);
      throw new Exit(EXIT_USAGE);
    }
    const path = operands[0] as string;
    const check = await withStore(path, io, (source) => checkStore(source));
    if (json) io.out(JSON.stringify({ store: path, ...check }, null, 2));
    else for (const line of formatCheck(path, check)) io.out(line);
    return check.clean ? 0 : EXIT_DAMAGED;
  } catch (error) {
    if (error instanceof Exit) return error.status;
    throw error;
  }
}

/** The text report: a summary of the header, then every warning and error, then the verdict. */
export function formatCheck(path: string, check: StoreCheck): string[] {
  const lines: string[] = [];
  const { header } = check;
  if (header !== undefined) {
    const clusterSize = 2 ** header.clusterShift;
    const state = header.state === 'valid' ? 'valid' : 'invalid';
    const taken =
      header.timeMicros > 0 ? `, taken ${formatLocalTime(Math.floor(header.timeMicros / 1e6))}` : '';
    lines.push(
      `fssck: ${path}: format ${header.version}, commit ${header.commitSequence}, origin ` +
        `${header.originIdentity || '?'} (${humanizeNumber(header.deviceBytes)}), ${header.clusterCount} cluster of ` +
        `${humanizeNumber(clusterSize)}, ${check.copiedClusters} copied, ${state}${taken}`,
    );
  }
  for (const finding of check.findings) {
    if (finding.severity !== 'info') lines.push(`fssck: ${path}: ${finding.severity}: ${finding.message}`);
  }
  const errors = check.findings.filter((finding) => finding.severity === 'error').length;
  lines.push(
    `fssck: ${path}: ${check.clean ? 'clean' : `damaged (${errors} error${errors === 1 ? '' : 's'})`}`,
  );
  return lines;
}

/** Opens the store read-only as a StoreSource; exit 2, saying why, when it cannot be opened. */
async function withStore<T>(
  path: string,
  io: CommandIo,
  use: (source: StoreSource) => Promise<T>,
): Promise<T> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (error) {
    io.err(`fssck: ${path}: ${strerror(toFssError(error).code)}`);
    throw new Exit(EXIT_USAGE);
  }
  try {
    const info = await handle.stat();
    if (!info.isFile() && !info.isBlockDevice()) {
      io.err(`fssck: ${path}: not a backing file or a block device`);
      throw new Exit(EXIT_USAGE);
    }
    const sizeBytes = info.isFile() ? info.size : await blockDeviceBytes(info.rdev);
    return await use({
      sizeBytes,
      read: async (offset, length) => {
        const target = new Uint8Array(length);
        const { bytesRead } = await handle.read(target, 0, length, offset);
        return target.subarray(0, bytesRead);
      },
    });
  } finally {
    await handle.close();
  }
}

/** A block device's size from sysfs (in 512-byte sectors there), without an ioctl. */
async function blockDeviceBytes(rdev: number): Promise<number | undefined> {
  const major = Math.floor(rdev / 256) & 0xfff; // glibc's encoding for numbers below 2^20
  const minor = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
  const sectors = await readFile(`/sys/dev/block/${major}:${minor}/size`, 'utf8').catch(() => undefined);
  return sectors === undefined ? undefined : Number(sectors.trim()) * 512;
}
